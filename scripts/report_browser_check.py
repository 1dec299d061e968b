"""Open Snakemake's report in headless Chromium, click through to Table 5 and find its numbers.

    python scripts/report_browser_check.py --report report.html --table results/table5.csv [--screenshot t5.png]

What a reader does: the report is opened as a file, the category *Tables* is clicked in the
menu, then the eye button of ``table5.html``; the page shown inside the report (an iframe) is
read as text, and every Table 5 mean of ``--table`` (``{:.4f}``) must be in it. Exit status 0
when all are found, 1 otherwise (the missing ones printed). ``--screenshot`` saves what the
browser shows. Needs Chromium (``apt-get install -y chromium``); it is driven over the DevTools
protocol on a pipe (``--remote-debugging-pipe``), so nothing but the standard library is used.
Too slow for the test suite (a browser start); ``tests/test_workflow_e2e.py`` checks the same
numbers in the report's embedded page without a browser.
"""
from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLICK_THROUGH = r"""
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const byText = (sel, text) => [...document.querySelectorAll(sel)].filter(el => el.textContent.trim() === text);
  for (let i = 0; i < 100 && !byText("a, li, span, div", "Tables").length; i++) await sleep(100);
  const menu = byText("a", "Tables")[0] || byText("li, span, div", "Tables").pop();
  if (!menu) return "no 'Tables' entry in the menu";
  menu.click();
  let row;
  for (let i = 0; i < 100; i++) {
    row = [...document.querySelectorAll("tr")].find(tr => tr.textContent.includes("table5.html"));
    if (row) break;
    await sleep(100);
  }
  if (!row) return "no table5.html among the Tables";
  const eye = row.querySelector("a");
  if (!eye) return "no view button for table5.html";
  eye.click();
  for (let i = 0; i < 100 && !document.querySelector("iframe"); i++) await sleep(100);
  return document.querySelector("iframe") ? "ok" : "the view button showed no page";
})()
"""


class DevTools:
    """A minimal client of Chromium's DevTools protocol over ``--remote-debugging-pipe``."""

    def __init__(self, chromium: str, profile: str):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        args = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1400,1000", "about:blank"]
        # the protocol's pipe: Chromium reads fd 3 and writes fd 4
        cmd = " ".join(map(shlex_quote, args)) + f" 3<&{to_chrome_r} 4>&{from_chrome_w}"
        self.proc = subprocess.Popen(["bash", "-c", "exec " + cmd], pass_fds=(to_chrome_r, from_chrome_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while time.time() < deadline:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        raise TimeoutError(method)

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def shlex_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def expected_numbers(table: str) -> list[str]:
    with open(table, newline="") as f:
        return [f"{float(r['mean']):.4f}" for r in csv.DictReader(f) if r["mean"]]


def check(report: str, table: str, screenshot: str | None = None, chromium: str | None = None) -> list[str]:
    """The Table 5 means of ``table`` missing from the page the report shows (empty: all found)."""
    chromium = chromium or shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chromium:
        raise SystemExit("no Chromium found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as profile:
        browser = DevTools(chromium, profile)
        try:
            target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            browser.call("Page.enable", session=session)
            browser.call("Page.navigate", {"url": Path(report).resolve().as_uri()}, session=session)
            for _ in range(200):
                state = browser.call("Runtime.evaluate", {"expression": "document.readyState", "returnByValue": True},
                                     session=session)["result"].get("value")
                if state == "complete":
                    break
                time.sleep(0.1)
            clicked = browser.call("Runtime.evaluate", {"expression": CLICK_THROUGH, "awaitPromise": True,
                                                        "returnByValue": True}, session=session)["result"].get("value")
            if clicked != "ok":
                raise SystemExit(f"could not open Table 5 in the report: {clicked}")
            text = ""
            for _ in range(100):  # the iframe's page: read in its own frame
                tree = browser.call("Page.getFrameTree", session=session)["frameTree"]
                frames = tree.get("childFrames", [])
                if frames:
                    world = browser.call("Page.createIsolatedWorld", {"frameId": frames[0]["frame"]["id"]},
                                         session=session)["executionContextId"]
                    text = browser.call("Runtime.evaluate", {"expression": "document.body ? document.body.innerText : ''",
                                                             "contextId": world, "returnByValue": True},
                                        session=session)["result"].get("value") or ""
                    if "Table 5" in text:
                        break
                time.sleep(0.1)
            if screenshot:
                shot = browser.call("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
                Path(screenshot).write_bytes(base64.b64decode(shot))
        finally:
            browser.close()
    return [x for x in dict.fromkeys(expected_numbers(table)) if x not in text]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", required=True, help="the report (snakemake --report report.html)")
    ap.add_argument("--table", default="results/table5.csv", help="Table 5's data (default: results/table5.csv)")
    ap.add_argument("--screenshot", help="save what the browser shows (PNG)")
    ap.add_argument("--chromium", help="the browser binary (default: chromium on PATH)")
    args = ap.parse_args()
    missing = check(args.report, args.table, args.screenshot, args.chromium)
    n = len(set(expected_numbers(args.table)))
    if missing:
        print(f"{len(missing)} of {n} Table 5 numbers not on screen: {missing[:10]}")
        sys.exit(1)
    print(f"all {n} Table 5 numbers of {args.table} are on screen in {args.report}")


if __name__ == "__main__":
    main()
