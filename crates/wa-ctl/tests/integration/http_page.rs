//! The pairing page (issue #11) in a real browser: headless Chromium loads
//! `GET /#token=...` from the real supervisor, whose test worker reports a
//! known QR text; a screenshot of the page must decode (zbarimg) to exactly
//! that text. Then the worker connects and the page must say
//! `connected as <jid>`.
//!
//! Chromium runs once per look, with `--screenshot` or `--dump-dom`, and
//! `--virtual-time-budget`: the page's requests (the list, the QR code)
//! complete inside the budget, and the open event stream does not hold it
//! up, so each run ends on its own in a few seconds. Each run is bounded by
//! a deadline, in its own process group (the `chromium` launcher is a shell
//! script, and the browser forks helpers): on a timeout, and after every
//! run, the whole group is killed.
//!
//! A run happens after the state it looks for is visible in the API, and a
//! look that does not find it yet is repeated until a deadline: nothing
//! here waits a fixed time.
//!
//! Those runs load the page afresh each time. `the_page_follows_the_session_live`
//! keeps one page open instead, driven over the DevTools protocol by
//! `live_page.py`, and sees the code replaced and the connection arrive
//! through the event stream.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{TestEnv, closed_port, command, run_with_deadline, skip, wait_until, which};

/// The QR text the worker reports: the shape of WhatsApp's
/// (`ref,noise key,identity key,adv secret`), with nothing secret in it.
const QR_TEXT: &str = "2@wa-ctl-page-test-Yk3Jx0s1,bm9pc2Uta2V5LWZvci10ZXN0cw==,aWRlbnRpdHk=";

/// The account the worker connects as.
const JID: &str = "15551234567@s.whatsapp.net";

/// How long one Chromium run may take (its first start with a fresh
/// profile is the slow one).
const BROWSER_RUN: Duration = Duration::from_secs(60);

/// How long the page may take to show what the API already shows.
const PAGE_DEADLINE: Duration = Duration::from_secs(90);

/// Virtual time the page gets per run: far more than its few requests on
/// loopback need; virtual time runs ahead of the clock when the page is
/// idle, so this costs little real time.
const VIRTUAL_TIME_BUDGET_MS: u32 = 10_000;

/// The browser on this machine: Debian's `chromium`, or another name for it.
fn find_chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find_map(|name| which(name).ok())
}

/// One headless Chromium run, its output in files, bounded by
/// [`BROWSER_RUN`], its process group killed afterwards whatever happens.
struct Browser {
    program: PathBuf,
    /// The test's directory: the profile, HOME and the outputs live here.
    dir: PathBuf,
    runs: u32,
}

/// What a run left.
struct Run {
    status: ExitStatus,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Run {
    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// Kills the process group of a run when dropped: the launcher script, the
/// browser and its helpers.
struct GroupGuard {
    child: std::process::Child,
}

impl GroupGuard {
    fn kill_group(&self) {
        // The group is the one this test made for the run (process_group(0)
        // makes the child its leader, so its pid is the group id).
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill_group();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn new(program: PathBuf, dir: &Path) -> Browser {
        let dir = dir.join("chromium");
        std::fs::create_dir_all(dir.join("home")).unwrap();
        Browser {
            program,
            dir,
            runs: 0,
        }
    }

    /// Runs Chromium on `url` with `what` (`--screenshot=...` or
    /// `--dump-dom`) and waits for it, at most [`BROWSER_RUN`].
    fn run(&mut self, what: &str, url: &str) -> Run {
        self.runs += 1;
        let stdout = self.dir.join(format!("run-{}.stdout", self.runs));
        let stderr = self.dir.join(format!("run-{}.stderr", self.runs));
        let mut cmd = command(&self.program);
        cmd.args([
            "--headless=new",
            // Needed as root, and where user namespaces are off; the page
            // comes from this test's own supervisor on loopback.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=800,1000",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--run-all-compositor-stages-before-draw",
        ])
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"))
        .arg(format!(
            "--user-data-dir={}",
            self.dir.join("profile").display()
        ))
        .arg(what)
        .arg(url)
        .env("HOME", self.dir.join("home"))
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).unwrap())
        .stderr(File::create(&stderr).unwrap())
        .process_group(0);
        let mut guard = GroupGuard {
            child: cmd.spawn().expect("spawn chromium"),
        };
        let start = Instant::now();
        let status = loop {
            if let Some(status) = guard.child.try_wait().expect("try_wait") {
                break status;
            }
            if start.elapsed() > BROWSER_RUN {
                drop(guard);
                panic!(
                    "chromium {what} did not finish within {BROWSER_RUN:?}; its stderr:\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Helpers that outlive the browser go with the group.
        drop(guard);
        Run {
            status,
            stdout,
            stderr,
        }
    }

    /// A screenshot of `url`, as a PNG file.
    fn screenshot(&mut self, url: &str) -> (PathBuf, Run) {
        let png = self.dir.join(format!("page-{}.png", self.runs + 1));
        let run = self.run(&format!("--screenshot={}", png.display()), url);
        (png, run)
    }

    /// The DOM of `url` once the page has run, as HTML.
    fn dom(&mut self, url: &str) -> (String, Run) {
        let run = self.run("--dump-dom", url);
        let html = std::fs::read_to_string(&run.stdout).unwrap_or_default();
        (html, run)
    }
}

/// The text of the QR codes `zbarimg` finds in `png`, if any.
fn decode_qr(zbarimg: &Path, png: &Path) -> Option<String> {
    if !png.exists() {
        return None;
    }
    let mut cmd = command(zbarimg);
    cmd.args(["--raw", "-q"]).arg(png);
    let out = run_with_deadline(cmd, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// A supervisor with `[http]` on a free port and one session `a` whose test
/// worker runs `steps`, started and pairing; with the page's address.
fn pairing_session(steps: &[String]) -> (TestEnv, String, String) {
    let port = closed_port();
    let env = TestEnv::new("");
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    std::fs::write(
        &env.config,
        format!(
            "[supervisor]\nruntime_dir = \"run\"\nstate_dir = \"state\"\nstop_timeout = \"2s\"\n\
             {}\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[[session]]\nid = \"a\"\n",
            env.worker(&steps)
        ),
    )
    .unwrap();
    env.ok(&["start"]);
    env.wait_state("a", "pairing");
    let token = std::fs::read_to_string(env.state_dir().join("http.token"))
        .expect("the token file is created at start")
        .trim()
        .to_owned();
    let url = format!("http://127.0.0.1:{port}/#token={token}");
    (env, token, url)
}

#[test]
fn the_pairing_page_shows_the_workers_qr_code_then_connected_as_the_account() {
    let Some(chromium) = find_chromium() else {
        return skip("chromium is not installed (Debian's `chromium` package)");
    };
    let Ok(zbarimg) = which("zbarimg") else {
        return skip("zbarimg is not installed (Debian's `zbar-tools` package)");
    };

    // The worker shows its code, then connects only once the test says so.
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("scanned");
    let (env, token, url) = pairing_session(&[
        format!("qr={QR_TEXT}"),
        format!("await={}", go.display()),
        format!("connect={JID}"),
    ]);
    let mut browser = Browser::new(chromium, env.path());

    // The code in a real browser's screenshot is the code the worker sent.
    let start = Instant::now();
    let decoded = loop {
        let (png, run) = browser.screenshot(&url);
        if let Some(text) = decode_qr(&zbarimg, &png) {
            break text;
        }
        assert!(
            start.elapsed() < PAGE_DEADLINE,
            "no QR code in the page's screenshot after {} runs ({:?}); the last is {}, \
             chromium exited {:?}, its stderr:\n{}",
            browser.runs,
            PAGE_DEADLINE,
            png.display(),
            run.status,
            run.stderr_text()
        );
    };
    assert_eq!(decoded, QR_TEXT, "the decoded code is the worker's");

    // The phone scans it: the worker connects.
    let tmp = dir.path().join(".scanned.tmp");
    std::fs::write(&tmp, "").unwrap();
    std::fs::rename(&tmp, &go).unwrap();
    let connected = env.wait_state("a", "connected");
    assert_eq!(connected["jid"], JID);

    let expected = format!("connected as {JID}");
    let html = wait_until(
        "the page to show the connected account",
        PAGE_DEADLINE,
        || {
            let (html, run) = browser.dom(&url);
            assert!(
                run.status.success(),
                "chromium --dump-dom failed ({:?}): {}",
                run.status,
                run.stderr_text()
            );
            html.contains(&expected).then_some(html)
        },
    );
    assert!(
        !html.contains(&token),
        "the token never lands in the document"
    );
    assert!(
        !html.contains("id=\"qr-a\""),
        "a connected session shows no QR code"
    );
}

/// The same page, followed live in ONE load: it shows the first code,
/// replaces it with the next one the worker sends (from the event stream),
/// then shows `connected as <jid>` when the worker connects, with no
/// reload. Chromium is driven over the DevTools protocol by
/// `live_page.py` (python3, as the control-socket fault test uses), which
/// screenshots the page and decodes it with zbarimg at each look.
#[test]
fn the_page_follows_the_session_live() {
    let Some(chromium) = find_chromium() else {
        return skip("chromium is not installed (Debian's `chromium` package)");
    };
    let Ok(zbarimg) = which("zbarimg") else {
        return skip("zbarimg is not installed (Debian's `zbar-tools` package)");
    };
    let Ok(python) = which("python3") else {
        return skip("python3 is not installed");
    };
    let dir = tempfile::tempdir().unwrap();
    let next = dir.path().join("next");
    let go = dir.path().join("go");
    let second = format!("{QR_TEXT}-second");
    let (env, _token, url) = pairing_session(&[
        format!("qr={QR_TEXT}"),
        format!("await={}", next.display()),
        format!("qr={second}"),
        format!("await={}", go.display()),
        format!("connect={JID}"),
    ]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/live_page.py");
    let mut cmd = command(&python);
    cmd.arg(&script)
        .arg(&chromium)
        .arg(&url)
        .arg(env.path())
        .arg(&zbarimg)
        .arg(QR_TEXT)
        .arg(&next)
        .arg(&second)
        .arg(&go)
        .arg(JID);
    // The script has its own deadline (120 s) and kills Chromium's group
    // at its end; this one is the backstop.
    let out = run_with_deadline(cmd, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the live page run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["first"], QR_TEXT);
    assert_eq!(
        report["second"],
        second.as_str(),
        "the new code replaced the old one"
    );
    assert!(
        report["connected"]
            .as_str()
            .unwrap()
            .contains(&format!("connected as {JID}"))
    );
    assert_eq!(report["reloads"], 1, "one navigation: everything came live");
    assert_eq!(env.session("a")["state"], "connected");
}
