//! Property tests (issue #5): the parsers never panic, whatever the input,
//! and the policy keeps its promises for any parameters. Issue #8: the
//! lifecycle keeps one worker per session whatever the order of commands,
//! job results and exits. Issue #9: durations at the edges (zero, a
//! nanosecond, `u64::MAX` seconds, the configured maxima) and absurd floats
//! neither panic a deadline nor stretch a backoff past its maximum.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use wa_ctl_core::config::{Config, ConfigSource, DURATION_LIMITS, Environment};
use wa_ctl_core::lifecycle::{
    Context, Effect, ExitKind, Hold, Input, Phase, Session, State, deadline_after,
};
use wa_ctl_core::policy::Policy;
use wa_ctl_core::protocol::{LineSplitter, MAX_LINE, parse_line};

fn env() -> Environment {
    Environment::new(
        false,
        [
            ("HOME".to_owned(), "/h".into()),
            ("XDG_RUNTIME_DIR".to_owned(), "/r".into()),
        ],
    )
}

/// A duration at an edge: zero, a nanosecond, the largest a `Duration`
/// holds, each key's minimum and maximum, or anything at all.
fn extreme_duration() -> impl Strategy<Value = Duration> {
    let mut edges = vec![
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_secs(u64::MAX),
        Duration::MAX,
    ];
    edges.extend(DURATION_LIMITS.iter().flat_map(|l| [l.min, l.max]));
    prop_oneof![
        prop::sample::select(edges),
        any::<u64>().prop_map(Duration::from_nanos),
        any::<u64>().prop_map(Duration::from_secs),
    ]
}

/// A float at an edge, or any float at all (NaN and the infinities too).
fn extreme_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::sample::select(vec![
            0.0,
            -1.0,
            1.0,
            1000.0,
            1e308,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ]),
        any::<f64>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// Issue #9, item 2: a backoff of "500000000000y" panicked the
    /// supervisor when it computed the retry deadline. Whatever the
    /// durations and floats, the backoff stays within `max_backoff`, every
    /// deadline lies ahead, and a session goes through a connection, a
    /// reconnect and a stop without a panic.
    #[test]
    fn extreme_durations_neither_panic_nor_pass_the_maximum(
        initial_backoff in extreme_duration(),
        max_backoff in extreme_duration(),
        backoff_multiplier in extreme_float(),
        jitter in extreme_float(),
        reset_after in extreme_duration(),
        restart_window in extreme_duration(),
        stop_timeout in extreme_duration(),
        attempt in any::<u32>(),
        sample in extreme_float(),
    ) {
        let policy = Policy {
            initial_backoff,
            max_backoff,
            backoff_multiplier,
            jitter,
            reset_after,
            restart_window,
            // Issue #9's hang limits, at the same extremes.
            start_timeout: stop_timeout,
            heartbeat_timeout: reset_after,
            ..Policy::default()
        };
        prop_assert!(policy.backoff_delay(attempt, sample) <= max_backoff);
        let now = Instant::now();
        prop_assert!(deadline_after(now, stop_timeout) >= now);
        prop_assert!(deadline_after(now, max_backoff) >= now);

        let cx = Context { policy: &policy, stop_timeout, now, wall: std::time::SystemTime::UNIX_EPOCH, takeover_grace: None };
        let mut session = Session::new();
        let feed = |session: &mut Session, input: Input| {
            let mut queue = vec![input];
            while let Some(input) = queue.pop() {
                for effect in session.handle(input, cx) {
                    match effect {
                        Effect::Prepare => queue.push(Input::Prepared),
                        Effect::Spawn => queue.push(Input::Spawned { pid: 7 }),
                        Effect::Collect => queue.push(Input::Ended { jitter: sample }),
                        _ => {}
                    }
                }
            }
        };
        feed(&mut session, Input::Start);
        feed(&mut session, Input::Event(wa_ctl_core::protocol::WorkerEvent::Connected { jid: None }));
        feed(&mut session, Input::Event(wa_ctl_core::protocol::WorkerEvent::Alive));
        feed(&mut session, Input::Tick);
        feed(&mut session, Input::Event(wa_ctl_core::protocol::WorkerEvent::Closed { code: 408, reason: None, retry_after_s: Some(u64::MAX) }));
        feed(&mut session, Input::Reaped { exit: ExitKind::Code(0) });
        if let Some(retry) = session.next_retry {
            prop_assert!(retry >= now);
            // A worker's retry_after_s is honoured up to its own bound.
            let bound = max_backoff.max(wa_ctl_core::lifecycle::MAX_RETRY_AFTER);
            prop_assert!(retry.saturating_duration_since(now) <= bound);
        }
        feed(&mut session, Input::Tick);
        feed(&mut session, Input::Start);
        feed(&mut session, Input::Stop);
        feed(&mut session, Input::Tick);
    }

    #[test]
    fn config_parser_never_panics(text in "\\PC*") {
        let _ = Config::parse(&text, ConfigSource::Embedded, &env());
    }

    #[test]
    fn config_parser_never_panics_on_config_like_text(
        table in prop::sample::select(vec!["[supervisor]", "[worker]", "[policy]", "[policy.codes]", "[[session]]", ""]),
        key in "[a-z_0-9]{0,16}",
        value in prop::sample::select(vec!["\"1s\"", "\"x\"", "-1", "1e309", "[]", "[\"\"]", "{}", "2.0", "\"../x\"", "\"\\u0000\""]),
    ) {
        let text = format!("{table}\n{key} = {value}\n");
        let _ = Config::parse(&text, ConfigSource::Embedded, &env());
    }

    #[test]
    fn events_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse_line(&bytes);
    }

    #[test]
    fn splitter_bounds_every_line(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..(MAX_LINE / 4)), 0..12)) {
        let mut splitter = LineSplitter::new();
        let mut total_in = 0usize;
        let mut total_out = 0usize;
        for chunk in &chunks {
            total_in += chunk.len();
            splitter.push(chunk, |line| {
                if let Ok(line) = line {
                    assert!(line.len() <= MAX_LINE);
                    assert!(!line.contains(&b'\n'));
                    total_out += line.len();
                }
            });
        }
        splitter.finish(|line| {
            if let Ok(line) = line {
                assert!(line.len() <= MAX_LINE);
                total_out += line.len();
            }
        });
        prop_assert!(total_out <= total_in);
    }

    #[test]
    fn backoff_never_exceeds_max(
        initial_ms in 0u64..100_000,
        extra_ms in 0u64..1_000_000,
        multiplier in 1.0f64..1000.0,
        jitter in 0.0f64..0.999,
        attempt in any::<u32>(),
        sample in -1.0f64..=1.0,
    ) {
        let policy = Policy {
            initial_backoff: Duration::from_millis(initial_ms),
            max_backoff: Duration::from_millis(initial_ms + extra_ms),
            backoff_multiplier: multiplier,
            jitter,
            ..Policy::default()
        };
        prop_assert!(policy.backoff_delay(attempt, sample) <= policy.max_backoff);
    }

    #[test]
    fn breaker_trips_after_max_restarts(
        max_restarts in 0u32..20,
        code in prop::sample::select(vec![None, Some(408u16), Some(500), Some(515), Some(428)]),
        jitters in prop::collection::vec(-1.0f64..=1.0, 40),
    ) {
        // A worker that always fails fast, with the window far longer than
        // the test: the breaker must trip after exactly max_restarts.
        let policy = Policy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            restart_window: Duration::from_secs(3600),
            max_restarts,
            ..Policy::default()
        };
        let mut now = Instant::now();
        let mut session = Session::new();
        let mut spawns = 0u32;
        let step = |session: &mut Session, input: Input, now: Instant, spawns: &mut u32| {
            let cx = Context { policy: &policy, stop_timeout: Duration::from_secs(1), now, wall: std::time::SystemTime::UNIX_EPOCH, takeover_grace: None };
            let mut queue = vec![input];
            while let Some(input) = queue.pop() {
                for effect in session.handle(input, cx) {
                    match effect {
                        Effect::Prepare => queue.push(Input::Prepared),
                        Effect::Spawn => {
                            *spawns += 1;
                            queue.push(Input::Spawned { pid: 100 + *spawns });
                        }
                        _ => {}
                    }
                }
            }
        };
        step(&mut session, Input::Start, now, &mut spawns);
        for jitter in &jitters {
            if let Some(code) = code {
                step(&mut session, Input::Event(wa_ctl_core::protocol::WorkerEvent::Closed { code, reason: None, retry_after_s: None }), now, &mut spawns);
            }
            step(&mut session, Input::Reaped { exit: ExitKind::Signal(9) }, now, &mut spawns);
            step(&mut session, Input::Ended { jitter: *jitter }, now, &mut spawns);
            if session.state == State::Failed {
                break;
            }
            if let Some(retry) = session.next_retry {
                prop_assert!(retry - now <= policy.max_backoff);
                now = retry;
                step(&mut session, Input::Tick, now, &mut spawns);
            }
        }
        prop_assert_eq!(session.state, State::Failed);
        prop_assert_eq!(spawns, max_restarts + 1);
    }

    /// Issue #8: the jobs that prepare a session, start its worker (on the
    /// spawner thread), collect a reaped worker and quarantine credentials
    /// run off the loop, and their results come back in any order with
    /// operator commands and timers. Whatever that order, a session never
    /// has two workers, never spawns outside `Preparing`, and never signals
    /// a reaped worker.
    #[test]
    fn one_worker_whatever_the_order(ops in prop::collection::vec(0u8..24, 1..200), cluster in any::<bool>()) {
        let policy = Policy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            max_restarts: 1000,
            ..Policy::default()
        };
        let mut now = Instant::now();
        let mut session = Session::new();
        // The executor's view: the jobs in flight and the live process.
        let mut prepare_pending = false;
        let mut spawn_pending = false;
        let mut collect_pending = false;
        let mut quarantine_pending = false;
        // The worker process, from the moment the spawner started it.
        let mut alive: Option<u32> = None;
        let mut spawns = 0u32;
        // Issue #10, with `[cluster]`: the acquire job in flight, and
        // whether this node owns the session.
        let mut acquire_pending = false;
        let mut owns = false;
        let takeover_grace = cluster.then_some(Duration::from_millis(10));
        for op in ops {
            let running = matches!(session.phase, Phase::Running(_));
            let input = match op {
                0 => Input::Start,
                1 => Input::Stop,
                2 => Input::Restart,
                3 if prepare_pending => { prepare_pending = false; Input::Prepared }
                4 if prepare_pending => { prepare_pending = false; Input::LockBusy }
                5 if prepare_pending => { prepare_pending = false; Input::PrepareFailed { reason: "x".into(), jitter: 0.0 } }
                6 if running => Input::Event(wa_ctl_core::protocol::WorkerEvent::Connected { jid: None }),
                7 if running => Input::Event(wa_ctl_core::protocol::WorkerEvent::Closed { code: 440, reason: None, retry_after_s: None }),
                // Only a worker the loop knows is reaped (see `full_scan`).
                8 if running && alive.is_some() => { alive = None; Input::Reaped { exit: ExitKind::Code(1) } }
                9 if collect_pending => { collect_pending = false; Input::Ended { jitter: 0.0 } }
                10 if quarantine_pending => { quarantine_pending = false; Input::Quarantined { error: None } }
                11 => { now += Duration::from_millis(25); Input::Tick }
                // Issue #9: a hold found by the prepare, a hung worker's
                // heartbeat, a ban's retry time.
                13 if prepare_pending => {
                    prepare_pending = false;
                    Input::Held(Hold { state: State::Stopped, last_code: None, last_reason: None, last_action: None, at_ms: None })
                }
                14 if running => Input::Event(wa_ctl_core::protocol::WorkerEvent::Alive),
                15 if running => Input::Event(wa_ctl_core::protocol::WorkerEvent::Closed { code: 503, reason: None, retry_after_s: Some(0) }),
                16 => { now += Duration::from_secs(120); Input::Tick }
                // Issue #10: ownership answers and losses.
                17 if acquire_pending => { acquire_pending = false; owns = true; Input::Acquired { epoch: 7 } }
                18 if acquire_pending => { acquire_pending = false; Input::OwnedElsewhere { node: "b".into(), epoch: 8 } }
                19 if acquire_pending => { acquire_pending = false; Input::AcquireFailed { reason: "x".into() } }
                20 if cluster => { owns = false; Input::OwnershipLost { new_owner: Some("b".into()) } }
                21 if cluster => Input::OwnerGone,
                // The watch sees another node's key: ours is gone if we had it.
                22 if cluster => { owns = false; Input::OwnerChanged { node: "b".into(), epoch: 9 } }
                23 if cluster => Input::Recheck,
                12 if spawn_pending => {
                    spawn_pending = false;
                    Input::Spawned { pid: alive.expect("the spawner started it") }
                }
                _ => continue,
            };
            let cx = Context { policy: &policy, stop_timeout: Duration::from_millis(20), now, wall: std::time::SystemTime::UNIX_EPOCH, takeover_grace };
            let mut queue = vec![input];
            while let Some(input) = queue.pop() {
                for effect in session.handle(input, cx) {
                    match effect {
                        Effect::Acquire => {
                            prop_assert!(cluster, "an acquire on a host alone");
                            prop_assert!(!acquire_pending, "a second acquire job");
                            acquire_pending = true;
                        }
                        Effect::Release => {
                            prop_assert!(owns, "a release of a key not ours");
                            owns = false;
                        }
                        Effect::Prepare => {
                            prop_assert!(!cluster || owns, "a prepare without ownership");
                            prop_assert!(!prepare_pending, "a second prepare job");
                            prepare_pending = true;
                        }
                        Effect::Spawn => {
                            prop_assert!(alive.is_none(), "a second worker");
                            prop_assert!(!spawn_pending, "a second spawn in flight");
                            prop_assert!(!collect_pending, "a spawn before the last worker was collected");
                            let preparing = matches!(session.phase, Phase::Preparing { cancelled: false });
                            prop_assert!(preparing, "a spawn outside Preparing");
                            prop_assert!(!cluster || owns, "a spawn without ownership");
                            spawns += 1;
                            alive = Some(spawns);
                            spawn_pending = true;
                        }
                        Effect::Terminate | Effect::KillGroup => {
                            prop_assert!(alive.is_some(), "a signal to a reaped worker");
                        }
                        Effect::Collect => collect_pending = true,
                        Effect::Quarantine => quarantine_pending = true,
                        Effect::ReleaseLock => {}
                        Effect::Hold => prop_assert!(Hold::holds(session.state), "a hold of {}", session.state),
                    }
                }
            }
            // The phase says what the session waits for.
            match &session.phase {
                Phase::Running(w) => prop_assert_eq!(Some(w.pid), alive),
                Phase::Preparing { .. } => prop_assert!(
                    (prepare_pending && alive.is_none()) || spawn_pending,
                    "preparing, but neither a prepare job nor a spawn is in flight"
                ),
                Phase::Ending { .. } => prop_assert!(collect_pending && alive.is_none()),
                Phase::Quarantining { .. } => prop_assert!(quarantine_pending && alive.is_none()),
                Phase::Idle => prop_assert!(alive.is_none() && !prepare_pending && !spawn_pending && !acquire_pending),
                Phase::Acquiring { .. } => prop_assert!(acquire_pending && alive.is_none() && !prepare_pending),
            }
            prop_assert!(session.running().is_none() || session.state != State::Stopped);
        }
    }
}
