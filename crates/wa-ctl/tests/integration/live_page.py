#!/usr/bin/env python3
"""Drives one headless Chromium page through the Chrome DevTools Protocol
over --remote-debugging-pipe (fd 3: commands in, fd 4: answers out, each
message JSON ended by a NUL), for `http_page::the_page_follows_the_session_live`.

    live_page.py CHROMIUM URL DIR ZBARIMG CODE1 NEXT_FILE CODE2 GO_FILE JID

In ONE page load, with no reload: the page must show CODE1 as a QR code
(a screenshot decoded by zbarimg), then, once NEXT_FILE is created (the
test worker then sends CODE2), replace it with CODE2, then, once GO_FILE is
created (the worker connects), show "connected as JID" and no QR code.
Every wait is a poll of the page with a deadline. Chromium runs in its own
process group, killed at the end whatever happens; the whole run has its
own deadline (SIGALRM), shorter than the Rust test's.
"""

import base64
import json
import os
import signal
import subprocess
import sys
import time

DEADLINE_S = 120
STEP_S = 45


class Timeout(Exception):
    pass


def on_alarm(_sig, _frame):
    raise Timeout(f"the whole run took more than {DEADLINE_S}s")


class Cdp:
    def __init__(self, chromium, profile):
        cmd_r, self.cmd_w = os.pipe()
        self.out_r, out_w = os.pipe()
        os.set_inheritable(cmd_r, True)
        os.set_inheritable(out_w, True)
        args = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                "--hide-scrollbars", "--window-size=800,1000", "--no-first-run",
                "--no-default-browser-check", f"--user-data-dir={profile}",
                "--remote-debugging-pipe", "about:blank"]

        def fds():
            os.dup2(cmd_r, 3)
            os.dup2(out_w, 4)

        env = dict(os.environ, HOME=profile)
        self.proc = subprocess.Popen(args, pass_fds=(3, 4), preexec_fn=fds, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(profile, "stderr"), "w"),
                                     env=env)
        os.close(cmd_r)
        os.close(out_w)
        self.buf = b""
        self.next_id = 0
        self.session = None

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def call(self, method, params=None, session=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self.buf:
                chunk = os.read(self.out_r, 65536)
                if not chunk:
                    raise RuntimeError("chromium closed its pipe")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def open(self, url):
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.call("Page.enable")
        self.call("Page.navigate", {"url": url})

    def eval(self, expression):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))


def wait(what, check):
    """Polls `check` until it returns something true, for at most STEP_S."""
    end = time.monotonic() + STEP_S
    last = None
    while time.monotonic() < end:
        last = check()
        if last and last[0]:
            return last
        time.sleep(0.1)  # a poll interval: the condition is checked each turn
    raise Timeout(f"{what}: not within {STEP_S}s (last look: {last!r})")


def main():
    chromium, url, work, zbarimg, code1, next_file, code2, go_file, jid = sys.argv[1:10]
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(DEADLINE_S)
    profile = os.path.join(work, "live-profile")
    os.makedirs(profile, exist_ok=True)
    shot = os.path.join(work, "live.png")
    cdp = Cdp(chromium, profile)
    report = {}
    try:
        cdp.open(url)

        def qr_shows(code):
            def check():
                ready = cdp.eval("(() => { const i = document.getElementById('qr-a');"
                                 " return !!(i && !i.hidden && i.complete && i.naturalWidth > 0); })()")
                if not ready:
                    return (False, "no QR image yet")
                cdp.screenshot(shot)
                out = subprocess.run([zbarimg, "--raw", "-q", shot], capture_output=True, text=True,
                                     timeout=30)
                text = out.stdout.strip()
                return (text == code, text)
            return check

        report["first"] = wait(f"the page shows {code1}", qr_shows(code1))[1]
        open(next_file, "w").close()
        report["second"] = wait(f"the page replaces it with {code2}", qr_shows(code2))[1]
        open(go_file, "w").close()

        def connected():
            text = cdp.eval("document.body.innerText") or ""
            # A QR code still shown: the element may stay, hidden and empty.
            qr = cdp.eval("(() => { const i = document.getElementById('qr-a');"
                          " return !!(i && !i.hidden && i.getAttribute('src')); })()")
            return (f"connected as {jid}" in text and not qr, text[-300:])

        report["connected"] = wait("the page shows connected", connected)[1]
        report["reloads"] = cdp.eval("performance.getEntriesByType('navigation').length")
        print(json.dumps(report))
    except Exception as e:  # noqa: BLE001 - everything goes to the test's message
        print(json.dumps({"error": f"{type(e).__name__}: {e}", "report": report}))
        sys.exit(1)
    finally:
        cdp.kill()


if __name__ == "__main__":
    main()
