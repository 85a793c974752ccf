//! `/metrics` (issue #11, sections 2 and 5) against the real supervisor:
//! `promtool check metrics` accepts a scrape, the families the issue names
//! are there with the right values, OpenMetrics comes when the scraper
//! asks for it, and a real Prometheus server scrapes wa-ctl and answers a
//! query about a session through its own HTTP API.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{ChildGuard, TestEnv, closed_port, command, skip, wait_until, which};
use crate::http_client::Req;

const DEADLINE: Duration = Duration::from_secs(20);

/// A scrape of `/metrics` in the default (classic) format.
pub fn scrape(port: u16) -> String {
    let reply = Req::get(port, "/metrics").send();
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.text()
}

/// One sample line of the classic text format: its name, its labels and
/// its value. `None` for comments, blank lines and what does not parse.
fn parse_sample(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, labels)) = series.split_once('{') else {
        return Some((series, BTreeMap::new(), value));
    };
    let labels = labels.strip_suffix('}')?;
    let mut map = BTreeMap::new();
    // The values this test meets hold no `,` nor escaped quotes.
    for pair in labels.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=')?;
        map.insert(key.to_owned(), value.trim_matches('"').to_owned());
    }
    Some((name, map, value))
}

/// The value of the sample `name` whose labels are exactly `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    text.lines()
        .filter_map(parse_sample)
        .find(|(n, l, _)| *n == name && *l == want)
        .map(|(_, _, v)| v)
}

/// Sessions in several states, with closes recorded: `a` connected, `b`
/// pairing, `c` stopped by the operator, `d` in backoff after a 408, `e`
/// stopped by the policy after a 440. The API on `port`, one webhook to a
/// closed port (so that its families are in the scrape).
fn several_states() -> (TestEnv, u16) {
    let port = closed_port();
    let env = TestEnv::with_worker(&["connect=1@s.whatsapp.net"], "");
    let secret = env.path().join("hook.secret");
    std::fs::write(&secret, "metrics-test-secret-0123\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let session = |id: &str, steps: &[&str]| {
        format!(
            "[[session]]\nid = \"{id}\"\ncommand = {}\n",
            env.worker_command(steps)
        )
    };
    let text = format!(
        "{}\n[policy]\ninitial_backoff = \"1h\"\nmax_backoff = \"1h\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n\
         [[webhook]]\nurl = \"http://127.0.0.1:{}/hook\"\nsecret_file = \"hook.secret\"\n\
         [[session]]\nid = \"a\"\n{}{}{}{}",
        std::fs::read_to_string(&env.config).unwrap(),
        closed_port(),
        session("b", &["qr=CODE"]),
        session("c", &["connect"]),
        session("d", &["close=408", "exit=1"]),
        session("e", &["close=440", "exit=0"]),
    );
    std::fs::write(&env.config, text).unwrap();
    env.ok(&["start"]);
    env.wait_state("a", "connected");
    env.wait_state("b", "pairing");
    env.wait_state("c", "connected");
    env.ok(&["stop", "c"]);
    env.wait_state("d", "backoff");
    env.wait_state("e", "stopped");
    (env, port)
}

#[test]
fn promtool_accepts_the_scrape_and_the_families_are_there() {
    let Ok(promtool) = which("promtool") else {
        return skip("promtool (Debian's prometheus package) is not installed");
    };
    let (env, port) = several_states();
    let reply = Req::get(port, "/metrics").send();
    assert_eq!(reply.status, 200);
    let content_type = reply.header("content-type").unwrap_or_default().to_owned();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "the classic format by default: {content_type}"
    );
    let text = reply.text();
    assert!(!text.contains("# EOF"), "{text}");
    // Each line found by its line break, the first one too.
    let lines = format!("\n{text}");

    // promtool reads the scrape on its stdin: a parse error or a lint
    // problem (a counter without `_total`, a missing HELP) fails it.
    let report = env.path().join("promtool.out");
    let out_file = std::fs::File::create(&report).unwrap();
    let mut cmd = command(&promtool);
    cmd.args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(out_file.try_clone().unwrap())
        .stderr(out_file);
    let mut child = ChildGuard::spawn(&mut cmd);
    // Dropped at the end of the statement: promtool reads to the end.
    child
        .child()
        .stdin
        .take()
        .unwrap()
        .write_all(&reply.body)
        .unwrap();
    let status = child.wait("promtool check metrics", DEADLINE);
    let out = std::fs::read_to_string(&report).unwrap();
    assert!(
        status.success(),
        "promtool check metrics: {status}\n{out}\nthe scrape:\n{text}"
    );
    assert!(out.trim().is_empty(), "promtool complains: {out}");

    // Every family the issue names, with HELP and TYPE named after its
    // samples, and the values the sessions' states make.
    for (family, kind) in [
        ("wa_ctl_session_state", "gauge"),
        ("wa_ctl_session_restarts_total", "counter"),
        ("wa_ctl_session_closes_total", "counter"),
        ("wa_ctl_session_connected_seconds", "gauge"),
        ("wa_ctl_workers", "gauge"),
        ("wa_ctl_strays", "gauge"),
        ("wa_ctl_build_info", "gauge"),
        ("wa_ctl_http_events_total", "counter"),
        ("wa_ctl_webhook_delivered_total", "counter"),
        ("wa_ctl_webhook_failed_attempts_total", "counter"),
        ("wa_ctl_webhook_refused_total", "counter"),
        ("wa_ctl_webhook_dropped_total", "counter"),
        ("wa_ctl_webhook_queued", "gauge"),
    ] {
        assert!(
            lines.contains(&format!("\n# TYPE {family} {kind}\n")),
            "# TYPE {family} {kind}:\n{text}"
        );
        assert!(
            lines.contains(&format!("\n# HELP {family} ")),
            "# HELP {family}:\n{text}"
        );
    }
    let state = |session: &str, state: &str| {
        sample(
            &text,
            "wa_ctl_session_state",
            &[("session", session), ("state", state)],
        )
    };
    for (session, current) in [
        ("a", "connected"),
        ("b", "pairing"),
        ("c", "stopped"),
        ("d", "backoff"),
        ("e", "stopped"),
    ] {
        assert_eq!(state(session, current), Some(1.0), "{session} {current}");
        // Every other state is there too, at 0, so an alert can test a
        // state's absence.
        for other in [
            "starting",
            "pairing",
            "connected",
            "backoff",
            "stopped",
            "failed",
        ] {
            if other != current {
                assert_eq!(state(session, other), Some(0.0), "{session} {other}");
            }
        }
    }
    let one = |name: &str, session: &str| sample(&text, name, &[("session", session)]);
    assert_eq!(one("wa_ctl_session_restarts_total", "d"), Some(1.0));
    assert_eq!(one("wa_ctl_session_restarts_total", "a"), Some(0.0));
    let closes = |session: &str, code: &str| {
        sample(
            &text,
            "wa_ctl_session_closes_total",
            &[("session", session), ("code", code)],
        )
    };
    assert_eq!(closes("d", "408"), Some(1.0));
    assert_eq!(closes("e", "440"), Some(1.0));
    assert!(
        text.lines()
            .filter_map(parse_sample)
            .any(|(n, l, _)| n == "wa_ctl_session_closes_total" && l["session"] == "c"),
        "the operator's stop of c is a close too:\n{text}"
    );
    let connected_for = one("wa_ctl_session_connected_seconds", "a").unwrap();
    assert!(connected_for >= 0.0, "{connected_for}");
    for session in ["b", "c", "d", "e"] {
        assert_eq!(one("wa_ctl_session_connected_seconds", session), Some(0.0));
    }
    // a and b run a worker; c, d and e do not.
    assert_eq!(sample(&text, "wa_ctl_workers", &[]), Some(2.0));
    assert_eq!(sample(&text, "wa_ctl_strays", &[]), Some(0.0));
    assert_eq!(
        sample(
            &text,
            "wa_ctl_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // A while later, a's connection is older.
    wait_until("a's connected_seconds to grow", DEADLINE, || {
        let later = sample(
            &scrape(port),
            "wa_ctl_session_connected_seconds",
            &[("session", "a")],
        )?;
        (later > connected_for).then_some(())
    });

    // OpenMetrics when the scraper asks for it.
    let reply = Req::get(port, "/metrics")
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send();
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        reply.header("content-type")
    );
    let om = reply.text();
    assert!(om.ends_with("# EOF\n"), "{om}");
    // In OpenMetrics a counter's family is named without `_total`.
    assert!(
        om.contains("\n# TYPE wa_ctl_session_restarts counter\n"),
        "{om}"
    );
    assert!(om.contains("wa_ctl_session_restarts_total{session=\"d\"} 1\n"));
    drop(env);
}

/// `text`, percent-encoded for a URL's query.
fn query_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus's answer to an instant query: the result vector.
fn prometheus_query(port: u16, query: &str) -> Vec<Value> {
    let path = format!("/api/v1/query?query={}", query_encode(query));
    let reply = Req::get(port, &path).send();
    assert_eq!(reply.status, 200, "{query}: {}", reply.text());
    let v = reply.json();
    assert_eq!(v["status"], "success", "{v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_real_prometheus_scrapes_wa_ctl() {
    let Ok(prometheus) = which("prometheus") else {
        return skip("prometheus (Debian's prometheus package) is not installed");
    };
    let wa_port = closed_port();
    let env = TestEnv::with_worker(
        &["connect"],
        &format!("[http]\nlisten = \"127.0.0.1:{wa_port}\"\n[[session]]\nid = \"sales\"\n"),
    );
    env.ok(&["start"]);
    env.wait_state("sales", "connected");

    let prom_port = closed_port();
    let config = env.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: wa-ctl\n    static_configs:\n      - targets: ['127.0.0.1:{wa_port}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(env.path().join("prometheus.log")).unwrap();
    let mut cmd = command(&prometheus);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            env.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .current_dir(env.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // Declared after `env`, so dropped (killed and reaped) before the
    // directory it writes into goes.
    let mut server = ChildGuard::spawn(&mut cmd);
    let log = || std::fs::read_to_string(env.path().join("prometheus.log")).unwrap_or_default();

    wait_until("Prometheus to be ready", Duration::from_secs(60), || {
        if let Ok(Some(status)) = server.child().try_wait() {
            panic!("prometheus exited: {status}\n{}", log());
        }
        let up = std::net::TcpStream::connect(("127.0.0.1", prom_port)).is_ok()
            && Req::get(prom_port, "/-/ready").send().status == 200;
        up.then_some(())
    });
    let query = "wa_ctl_session_state{state=\"connected\"}==1";
    let result = wait_until(
        "Prometheus to see the session connected",
        Duration::from_secs(60),
        || {
            let result = prometheus_query(prom_port, query);
            (!result.is_empty()).then_some(result)
        },
    );
    assert_eq!(result.len(), 1, "{result:?}");
    let metric = &result[0]["metric"];
    assert_eq!(metric["session"], "sales", "{result:?}");
    assert_eq!(metric["state"], "connected");
    assert_eq!(metric["job"], "wa-ctl");
    assert_eq!(metric["instance"], format!("127.0.0.1:{wa_port}"));
    assert_eq!(result[0]["value"][1], "1");
    // The target is healthy: every scrape parsed.
    let targets = Req::get(prom_port, "/api/v1/targets").send().json();
    let active = &targets["data"]["activeTargets"][0];
    assert_eq!(active["health"], "up", "{targets}");

    // A change reaches Prometheus too.
    env.ok(&["stop", "sales"]);
    wait_until(
        "Prometheus to see the session stopped",
        Duration::from_secs(60),
        || {
            let stopped = prometheus_query(
                prom_port,
                "wa_ctl_session_state{session=\"sales\",state=\"stopped\"}==1",
            );
            (!stopped.is_empty()).then_some(())
        },
    );
    let counters = prometheus_query(prom_port, "wa_ctl_session_closes_total");
    assert!(
        counters.iter().any(|r| r["metric"]["session"] == "sales"),
        "{counters:?}"
    );
    drop(server);
}
