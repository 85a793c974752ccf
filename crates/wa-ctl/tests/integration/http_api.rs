//! The HTTP API (issue #11) against the real supervisor and the test
//! worker: every route, every error status, the token, Server-Sent Events
//! and their resumption, and the configuration's security rules.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{TestEnv, alive, closed_port, stderr, wait_until};
use crate::http_client::{Message, Req};

const DEADLINE: Duration = Duration::from_secs(20);

/// A supervisor with `[http]` on a free loopback port, sessions from
/// `sessions` (TOML), running; with its port and token.
struct Api {
    env: TestEnv,
    port: u16,
    token: String,
}

impl Api {
    fn start(steps: &[&str], sessions: &str) -> Api {
        let port = closed_port();
        let env = TestEnv::with_worker(
            steps,
            &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n{sessions}"),
        );
        env.ok(&["start"]);
        let token_file = env.state_dir().join("http.token");
        let token = std::fs::read_to_string(&token_file)
            .expect("the token file is created at start")
            .trim()
            .to_owned();
        Api { env, port, token }
    }

    fn get(&self, path: &str) -> crate::http_client::Reply {
        Req::get(self.port, path).token(&self.token).send()
    }

    fn post(&self, path: &str) -> crate::http_client::Reply {
        Req::post(self.port, path).token(&self.token).send()
    }

    fn session(&self, id: &str) -> Value {
        let reply = self.get(&format!("/v1/sessions/{id}"));
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    }

    fn wait_state(&self, id: &str, state: &str) -> Value {
        wait_until(&format!("{id} to be {state} in the API"), DEADLINE, || {
            let s = self.session(id);
            (s["state"] == state).then_some(s)
        })
    }
}

/// A JSON error with this status and words.
fn assert_error(reply: &crate::http_client::Reply, status: u16, words: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "errors are JSON"
    );
    let v = reply.json();
    assert_eq!(v["status"], status);
    let message = v["error"].as_str().expect("an error message");
    assert!(message.contains(words), "{message:?} should say {words:?}");
}

/// The session fields that do not move with the clock.
fn stable(s: &Value) -> Value {
    let mut s = s.clone();
    let o = s.as_object_mut().unwrap();
    o.remove("uptime_s");
    o.remove("next_retry_s");
    s
}

#[test]
fn sessions_are_the_objects_of_status_json() {
    let api = Api::start(
        &["connect=15551234567@s.whatsapp.net"],
        "[[session]]\nid = \"a\"\n[[session]]\nid = \"b\"\n",
    );
    api.wait_state("a", "connected");
    api.wait_state("b", "connected");
    let reply = api.get("/v1/sessions");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let listed = reply.json();
    let (_, status) = api.env.status();
    let from_cli: Vec<Value> = status["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(stable)
        .collect();
    let from_api: Vec<Value> = listed.as_array().unwrap().iter().map(stable).collect();
    assert_eq!(from_api, from_cli, "the same objects, the same order");
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&listed[0]),
        keys(&status["sessions"][0]),
        "every field"
    );
    assert_eq!(stable(&api.session("b")), from_cli[1]);
    assert_eq!(api.session("a")["jid"], "15551234567@s.whatsapp.net");
    assert_error(&api.get("/v1/sessions/nope"), 404, "no session");
    assert_error(&api.get("/v1/nothing"), 404, "no such route");
    // With the API on and the token readable, status shows the page.
    let text = api.env.ok(&["status"]);
    assert!(
        text.contains(&format!(
            "http://127.0.0.1:{}/#token={}",
            api.port, api.token
        )),
        "{text}"
    );
}

#[test]
fn actions_have_the_cli_semantics() {
    let api = Api::start(&["connect"], "[[session]]\nid = \"a\"\n");
    let first = api.wait_state("a", "connected");
    let pid = first["worker_pid"].as_u64().unwrap() as u32;

    let reply = api.post("/v1/sessions/a/stop");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["message"], "session a: stopped");
    assert_eq!(v["session"]["state"], "stopped");
    assert_eq!(v["session"]["worker_pid"], Value::Null);
    assert!(!alive(pid), "answered once the worker is gone");

    let reply = api.post("/v1/sessions/a/start");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        ["starting", "connected"].contains(&reply.json()["session"]["state"].as_str().unwrap())
    );
    let second = api.wait_state("a", "connected");
    let pid2 = second["worker_pid"].as_u64().unwrap() as u32;

    let reply = api.post("/v1/sessions/a/restart");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(!alive(pid2), "the old worker is gone when restart answers");
    let third = api.wait_state("a", "connected");
    assert_ne!(third["worker_pid"], second["worker_pid"]);
    assert_eq!(api.env.worker_processes().len(), 1, "one worker, always");

    for action in ["start", "stop", "restart", "login"] {
        assert_error(
            &api.post(&format!("/v1/sessions/zz/{action}")),
            404,
            "no session",
        );
    }
    // GET on an action, POST on a read: not allowed.
    assert_eq!(api.get("/v1/sessions/a/stop").status, 405);
}

#[test]
fn login_shows_the_qr_code_as_svg_and_png() {
    let api = Api::start(
        &["qr=2@wa-ctl-test-code,abc,def"],
        "[[session]]\nid = \"a\"\n",
    );
    api.wait_state("a", "pairing");
    let svg = api.get("/v1/sessions/a/qr");
    assert_eq!(svg.status, 200, "{}", svg.text());
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert_eq!(svg.header("cache-control"), Some("no-store"));
    assert!(svg.text().contains("<svg"));
    let png = Req::get(api.port, "/v1/sessions/a/qr")
        .token(&api.token)
        .header("Accept", "image/png")
        .send();
    assert_eq!(png.status, 200);
    assert_eq!(png.header("content-type"), Some("image/png"));
    assert_eq!(&png.body[1..4], b"PNG");
    // The PNG says what the worker sent.
    if let Ok(zbarimg) = crate::harness::which("zbarimg") {
        let file = api.env.path().join("qr.png");
        std::fs::write(&file, &png.body).unwrap();
        let mut cmd = crate::harness::command(&zbarimg);
        cmd.args(["--raw", "-q"]).arg(&file);
        let out = crate::harness::run_with_deadline(cmd, DEADLINE);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "2@wa-ctl-test-code,abc,def"
        );
    } else {
        crate::harness::skip("zbarimg (zbar-tools) is not installed");
    }

    // Login: starts pairing a stopped session, and answers 202.
    api.post("/v1/sessions/a/stop");
    assert_error(
        &api.get("/v1/sessions/a/qr"),
        404,
        "not pairing (state stopped)",
    );
    let reply = api.post("/v1/sessions/a/login");
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json()["session"]["id"], "a");
    api.wait_state("a", "pairing");
    let reply = Req::post(api.port, "/v1/sessions/a/login")
        .token(&api.token)
        .header("Content-Type", "application/json")
        .body(r#"{"phone": "+15551234567"}"#)
        .send();
    assert_eq!(reply.status, 202, "{}", reply.text());

    // Bad input.
    let post = |body: Vec<u8>| {
        Req::post(api.port, "/v1/sessions/a/login")
            .token(&api.token)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    assert_error(&post(b"{bad".to_vec()), 400, "bad JSON");
    assert_error(
        &post(br#"{"phone": "12"}"#.to_vec()),
        400,
        "not a phone number",
    );
    assert_error(&post(br#"{"phone": 1, "x": 2}"#.to_vec()), 400, "bad JSON");
    assert_error(&post(vec![b' '; 64 * 1024 + 1]), 413, "larger than 64 KiB");
    // A body over the limit on a route that reads none.
    let big = Req::post(api.port, "/v1/sessions/a/start")
        .token(&api.token)
        .body(vec![b'x'; 100 * 1024])
        .send();
    assert_error(&big, 413, "larger than 64 KiB");
}

#[test]
fn the_token_guards_every_v1_route_and_nothing_leaks_without_it() {
    let api = Api::start(&["qr=SECRET-QR-PAYLOAD"], "[[session]]\nid = \"a\"\n");
    api.wait_state("a", "pairing");
    let routes = [
        ("GET", "/v1/sessions"),
        ("GET", "/v1/sessions/a"),
        ("GET", "/v1/sessions/a/qr"),
        ("GET", "/v1/events"),
        ("GET", "/v1/openapi.json"),
        ("GET", "/v1/sessions/nope"),
        ("POST", "/v1/sessions/a/start"),
        ("POST", "/v1/sessions/a/stop"),
        ("POST", "/v1/sessions/a/restart"),
        ("POST", "/v1/sessions/a/login"),
    ];
    for (method, path) in routes {
        for token in [None, Some("wrong"), Some(&api.token[..api.token.len() - 1])] {
            let mut req = Req::get(api.port, path);
            req.method = method;
            req.token = token;
            let reply = req.send();
            assert_error(&reply, 401, "token");
            assert!(
                reply
                    .header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{method} {path}"
            );
            let text = reply.text();
            assert!(!text.contains("SECRET-QR-PAYLOAD") && !text.contains("pairing"));
        }
    }
    // Only `Bearer` carries the token.
    let reply = Req::get(api.port, "/v1/sessions")
        .header("Authorization", format!("Basic {}", api.token))
        .send();
    assert_eq!(reply.status, 401);
    // Nothing changed for the requests without the token.
    assert_eq!(api.session("a")["state"], "pairing");
    // The open routes: the probes, the metrics and the page, which hold
    // no QR code; the page holds no state either (it asks the API).
    for path in ["/healthz", "/readyz", "/metrics", "/"] {
        let reply = Req::get(api.port, path).send();
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert!(!reply.text().contains("SECRET-QR-PAYLOAD"), "{path}");
    }
    let page = Req::get(api.port, "/").send();
    assert_eq!(
        page.text(),
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../wa-ctl-http/assets/index.html"
        )),
        "the page is the static asset, whatever the sessions"
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    // The token file: created 0600.
    let mode = std::fs::metadata(api.env.state_dir().join("http.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn probes_say_when_the_loop_answers_and_when_sessions_settle() {
    // `b` reports nothing: it stays `starting` until its start_timeout.
    let api = Api::start(
        &["connect"],
        &format!(
            "[policy]\nstart_timeout = \"1h\"\n[[session]]\nid = \"a\"\n[[session]]\nid = \"b\"\ncommand = {}\n",
            TestEnv::new("").worker_command(&["sleep=1h"])
        ),
    );
    api.wait_state("a", "connected");
    let health = Req::get(api.port, "/healthz").send();
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["ok"], true);
    let ready = Req::get(api.port, "/readyz").send();
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["ready"], false);
    assert_eq!(ready.json()["waiting"], serde_json::json!(["b"]));
    api.post("/v1/sessions/b/stop");
    let ready = Req::get(api.port, "/readyz").send();
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(
        ready.json(),
        serde_json::json!({"ready": true, "waiting": []})
    );
}

/// Reads messages until one matches, failing at the deadline.
fn next_matching(
    sse: &mut crate::http_client::Sse,
    what: &str,
    mut check: impl FnMut(&Message) -> bool,
    seen: &mut Vec<Message>,
) -> Message {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no event {what} within {DEADLINE:?}; saw {seen:#?}"));
        let Some(message) = sse.next(left) else {
            panic!("no event {what} within {DEADLINE:?}; saw {seen:#?}");
        };
        seen.push(message.clone());
        if check(&message) {
            return message;
        }
    }
}

fn data(m: &Message) -> Value {
    serde_json::from_str(&m.data).unwrap_or_else(|e| panic!("not JSON ({e}): {m:?}"))
}

#[test]
fn events_stream_each_change_once_and_resume_from_last_event_id() {
    let api = Api::start(
        &[
            "qr=CODE-1",
            "sleep=300ms",
            "qr=CODE-2",
            "sleep=300ms",
            "connect=1@s.whatsapp.net",
        ],
        "[[session]]\nid = \"a\"\n",
    );
    let open = |last: Option<&str>| {
        let mut req = Req::get(api.port, "/v1/events").token(&api.token);
        if let Some(last) = last {
            req = req.header("Last-Event-ID", last);
        }
        let (status, headers, sse) = req.stream();
        assert_eq!(status, 200);
        assert!(
            headers
                .iter()
                .any(|(n, v)| n == "content-type" && v.starts_with("text/event-stream"))
        );
        sse
    };
    let is_connected =
        |m: &Message| data(m)["event"] == "state" && data(m)["session"]["state"] == "connected";

    // From the beginning: every change since the start, once, in order.
    let mut sse = open(Some("0"));
    let mut seen = Vec::new();
    next_matching(&mut sse, "connected", is_connected, &mut seen);
    let summary: Vec<(String, String, String)> = seen
        .iter()
        .map(|m| {
            let d = data(m);
            (
                d["event"].as_str().unwrap().to_owned(),
                d["previous_state"].as_str().unwrap().to_owned(),
                d["session"]["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("state", "stopped", "starting"),
        ("state", "starting", "pairing"),
        ("qr", "pairing", "pairing"),
        ("qr", "pairing", "pairing"),
        ("state", "pairing", "connected"),
    ];
    assert_eq!(
        summary,
        expected
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect::<Vec<_>>()
    );
    for (i, m) in seen.iter().enumerate() {
        let d = data(m);
        assert_eq!(d["id"], i as u64 + 1, "ids count from 1 without a hole");
        assert_eq!(
            m.id.as_deref(),
            Some(d["id"].to_string().as_str()),
            "SSE id = event id"
        );
        assert_eq!(m.event, None, "unnamed messages: onmessage gets them");
        let mut keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = vec!["at", "event", "id", "previous_state", "session"];
        if d["event"] == "qr" {
            want.push("qr");
            want.sort_unstable();
        }
        assert_eq!(keys, want);
        assert!(humantime::parse_rfc3339(d["at"].as_str().unwrap()).is_ok());
        assert_eq!(d["session"]["id"], "a");
    }
    assert_eq!(data(&seen[2])["qr"], "CODE-1");
    assert_eq!(data(&seen[3])["qr"], "CODE-2");
    assert_eq!(data(&seen[4])["session"]["jid"], "1@s.whatsapp.net");
    let connected_id = seen[4].id.clone().unwrap();

    // A restart, seen live.
    api.post("/v1/sessions/a/restart");
    let mut live = Vec::new();
    next_matching(&mut sse, "connected again", is_connected, &mut live);
    let states: Vec<String> = live
        .iter()
        .map(data)
        .filter(|d| d["event"] == "state")
        .map(|d| d["session"]["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(states, ["stopping", "starting", "pairing", "connected"]);

    // Resuming after the first `connected` replays exactly what followed.
    let mut resumed = open(Some(&connected_id));
    let mut replayed = Vec::new();
    next_matching(
        &mut resumed,
        "the replay's end",
        is_connected,
        &mut replayed,
    );
    assert_eq!(replayed, live, "the same events, ids and data");

    // Without Last-Event-ID: only what happens from now on.
    let mut fresh = open(None);
    api.post("/v1/sessions/a/stop");
    let first = fresh.next(DEADLINE).expect("an event after the stop");
    assert_eq!(data(&first)["previous_state"], "connected");
    assert_eq!(data(&first)["session"]["state"], "stopping");

    // An id this run never gave (another supervisor's): a gap first, then
    // everything still held.
    let mut other_run = open(Some("999999"));
    let gap = other_run.next(DEADLINE).expect("a gap message");
    assert_eq!(gap.event.as_deref(), Some("gap"));
    assert_eq!(
        serde_json::from_str::<Value>(&gap.data).unwrap()["from"],
        999999
    );
    let first = other_run.next(DEADLINE).expect("the oldest event held");
    assert_eq!(data(&first)["id"], 1);

    let (status, _, _) = Req::get(api.port, "/v1/events")
        .token(&api.token)
        .header("Last-Event-ID", "abc")
        .stream();
    assert_eq!(status, 400);
}

#[test]
fn a_client_that_does_not_read_slows_nothing() {
    // A session that flaps as fast as the policy lets it, and an event
    // stream nobody reads: the kernel's buffers fill, the stream falls
    // behind, and everything else goes on.
    let api = Api::start(
        &["connect", "exit=1"],
        "[policy]\ninitial_backoff = \"10ms\"\nmax_backoff = \"10ms\"\nmax_restarts = 100000\n[[session]]\nid = \"a\"\n[[session]]\nid = \"b\"\n",
    );
    let (status, _, stalled) = Req::get(api.port, "/v1/events")
        .token(&api.token)
        .header("Last-Event-ID", "0")
        .stream();
    assert_eq!(status, 200);
    let before = api.session("a")["restarts"].as_u64().unwrap();
    wait_until("a hundred restarts", DEADLINE, || {
        (api.session("a")["restarts"].as_u64().unwrap() >= before + 100).then_some(())
    });
    for _ in 0..5 {
        let t = Instant::now();
        let out = api.env.wa_ctl(&["status", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "status took {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        assert_eq!(Req::get(api.port, "/healthz").send().status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "healthz took {:?}",
            t.elapsed()
        );
    }
    drop(stalled);
}

#[test]
fn openapi_document_is_served_and_committed() {
    let api = Api::start(&["connect"], "[[session]]\nid = \"a\"\n");
    let reply = api.get("/v1/openapi.json");
    assert_eq!(reply.status, 200);
    let served = reply.json();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        served, committed,
        "docs/openapi.json is what the server serves"
    );
    assert!(served["openapi"].as_str().unwrap().starts_with("3."));
    // The schema names every field a real session has, and no other.
    let session = api.session("a");
    let mut sent: Vec<&String> = session.as_object().unwrap().keys().collect();
    let schema = &served["components"]["schemas"]["SessionReport"]["properties"];
    let mut named: Vec<&String> = schema.as_object().unwrap().keys().collect();
    sent.sort();
    named.sort();
    assert_eq!(sent, named);
}

#[test]
fn security_rules_of_the_configuration() {
    // A remote address must be said explicitly.
    let env = TestEnv::new(&format!("[http]\nlisten = \"0.0.0.0:{}\"\n", closed_port()));
    for args in [&["check"][..], &["start"][..]] {
        let out = env.wa_ctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("allow_remote = true"),
            "{}",
            stderr(&out)
        );
    }
    // A token file others can read is refused; nothing runs.
    let port = closed_port();
    let env = TestEnv::with_worker(
        &["connect"],
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"token\"\n"),
    );
    let token = env.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123456789\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.wa_ctl(&["start"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    assert!(env.supervisors().is_empty() && env.worker_processes().is_empty());
    // Once private, it is the token.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.ok(&["start"]);
    let reply = Req::get(port, "/v1/sessions")
        .token("0123456789abcdef0123456789")
        .send();
    assert_eq!(reply.status, 200, "{}", reply.text());
    // A port in use: the supervisor says so and does not start.
    let env2 = TestEnv::with_worker(
        &["connect"],
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let out = env2.wa_ctl(&["start"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
    assert!(env2.supervisors().is_empty());
}

#[test]
fn login_in_the_browser_prints_the_page_and_waits_for_the_connection() {
    let port = closed_port();
    let env = TestEnv::with_worker(
        &[
            "qr=CODE",
            "sleep=300ms",
            "connect=15551234567@s.whatsapp.net",
        ],
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    // No supervisor yet: login starts it, which makes the token.
    let out = env.wa_ctl(&["login", "--browser"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let token = std::fs::read_to_string(env.state_dir().join("http.token")).unwrap();
    assert!(
        text.contains(&format!("http://127.0.0.1:{port}/#token={}", token.trim())),
        "{text}"
    );
    assert!(
        !text.contains('\u{2580}') && !text.contains('\u{2588}'),
        "no QR art in the terminal: {text}"
    );
    assert!(
        text.contains("connected as 15551234567@s.whatsapp.net"),
        "{text}"
    );

    let env = TestEnv::with_worker(&["connect"], "");
    let out = env.wa_ctl(&["login", "--browser"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("[http]"), "{}", stderr(&out));
}

#[test]
fn the_api_listens_on_a_unix_socket_too() {
    use std::io::{Read, Write};
    let env = TestEnv::with_worker(&["connect"], "[http]\nlisten = \"unix:run/http.sock\"\n");
    env.ok(&["start"]);
    env.wait_state("default", "connected");
    let socket = env.runtime_dir().join("http.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o660,
        "the group (a reverse proxy) may connect"
    );
    let token = std::fs::read_to_string(env.state_dir().join("http.token")).unwrap();
    let ask = |request: String| {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let answer = ask(format!(
        "GET /v1/sessions/default HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\r\n",
        token.trim()
    ));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"state\":\"connected\""), "{answer}");
    let answer = ask("GET /v1/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into());
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // No page address to print for a socket, and status says nothing of it.
    assert!(!env.ok(&["status"]).contains("#token="));
}
