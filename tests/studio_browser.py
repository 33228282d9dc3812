"""Drive Debian's headless Chromium over the DevTools protocol on a pipe (`--remote-debugging-pipe`).

Why this and not Playwright or Selenium: the protocol on a pipe needs nothing but the standard
library and the `chromium` package, so nothing is downloaded at run time and no driver binary
has to match the browser's version. Messages are JSON, each ended by a NUL byte; Chromium reads
commands on its fd 3 and writes answers and events on its fd 4.

Also a script, for the README's screenshot of a studio already running:

    python tests/studio_browser.py http://127.0.0.1:7860 docs/studio.png
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
MISSING = "headless Chromium not found: install Debian's `chromium` package (`make test` does it where apt works)"


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(AssertionError):
    pass


class Browser:
    """One headless Chromium with one page; `requests` lists every URL the page asked for."""

    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 1000):
        executable = executable or find_chromium()
        if executable is None:
            raise BrowserError(MISSING)
        self._profile = tempfile.TemporaryDirectory(prefix="midillm-chromium-")
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def onto_fds_3_and_4():  # where --remote-debugging-pipe expects them
            os.dup2(to_browser_read, 3)
            os.dup2(from_browser_write, 4)

        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--remote-debugging-pipe", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--mute-audio", f"--user-data-dir={self._profile.name}", f"--window-size={width},{height}",
             "about:blank"],
            pass_fds=(3, 4), preexec_fn=onto_fds_3_and_4,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.requests: list[str] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    # ------------------------------------------------------------------ protocol

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise BrowserError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise BrowserError("Chromium closed its DevTools pipe (did it crash?)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if method.split(".")[0] not in ("Target", "Browser"):
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error'].get('message')}")
                return answer.get("result", {})
            self.events.append(answer)
            if answer.get("method") == "Network.requestWillBeSent":
                self.requests.append(answer["params"]["request"]["url"])

    # ------------------------------------------------------------------ the page

    def evaluate(self, expression: str, timeout: float = 30.0):
        """The value of a JS expression (awaited if it is a promise)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"JS error: {details.get('exception', {}).get('description') or details.get('text')}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete'")

    def wait_for(self, expression: str, timeout: float = 60.0, what: str | None = None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise BrowserError(f"timed out waiting for {what or expression}")

    def set_files(self, selector: str, paths: list[str]) -> None:
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        self.call("DOM.setFileInputFiles", {"nodeId": node, "files": [str(path) for path in paths]})

    def screenshot(self, path: str | Path) -> Path:
        """The whole page, however tall, as a PNG."""
        metrics = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1}
        data = self.call("Page.captureScreenshot", {"format": "png", "clip": clip,
                                                    "captureBeyondViewport": True})["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (BrowserError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


# JS predicates on the page, shared by the test and the screenshot script.
RESULT_SHOWN = """(() => {
  const result = document.querySelector('.result');
  if (!result) return false;
  const roll = result.querySelector('img.piano-roll'), sheet = result.querySelector('.sheet img');
  const audio = result.querySelector('audio.player');
  return roll.complete && roll.naturalWidth > 0 && sheet.complete && sheet.naturalWidth > 0
         && audio.readyState >= 1 && audio.duration > 0;
})()"""
PAGE_READY = "!document.querySelector('#generate').disabled"


def generate_and_screenshot(url: str, out: str | Path, timeout: float = 600.0) -> Path:
    with Browser(width=1400, height=1000) as browser:
        browser.goto(url)
        browser.wait_for(PAGE_READY, timeout=timeout, what="the model to load")
        browser.evaluate("document.querySelector('#generate').click()")
        browser.wait_for(RESULT_SHOWN, timeout=timeout, what="a result")
        return browser.screenshot(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/studio_browser.py STUDIO_URL OUT.png")
    print(generate_and_screenshot(sys.argv[1], sys.argv[2]))
