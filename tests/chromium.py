"""Headless Chromium driven over the DevTools protocol, with websockets.

Debian's chromium package (installed by scripts/services.sh); nothing is
downloaded at run time. One browser per user, each with a profile of its own.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from waiting import units, wait_for
from websockets.sync.client import connect

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
]


def executable() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("Chromium is not installed: run scripts/services.sh")


class Chromium:
    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="wsserver-chromium-")
        self.process = subprocess.Popen(
            [executable(), *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        wait_for(
            lambda: port_file.exists() and port_file.read_text().strip(),
            30,
            "Chromium's DevTools port",
            self.process,
        )
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
            [page] = [t for t in json.load(response) if t["type"] == "page"]
        self.exit_stack = contextlib.ExitStack()
        self.connection = self.exit_stack.enter_context(
            connect(page["webSocketDebuggerUrl"], max_size=None)
        )
        self.ids = itertools.count(1)

    def command(self, method: str, **params) -> dict:
        command_id = next(self.ids)
        self.connection.send(
            json.dumps({"id": command_id, "method": method, "params": params})
        )
        while True:
            message = json.loads(self.connection.recv(timeout=units(30)))
            if message.get("id") == command_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def set_cookie(self, url: str, name: str, value: str) -> None:
        self.command("Network.setCookie", url=url, name=name, value=value)

    def open(self, url: str) -> None:
        self.command("Page.enable")
        self.command("Page.navigate", url=url)

    def evaluate(self, expression: str):
        result = self.command(
            "Runtime.evaluate", expression=expression, returnByValue=True
        )
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15):
        """Poll a JavaScript expression until it is truthy; return its value.

        ``timeout`` is in time units (waiting.py).
        """
        return wait_for(
            lambda: self.evaluate(expression), timeout, expression, interval=0.1
        )

    def close(self) -> None:
        try:
            self.exit_stack.close()
        finally:
            self.process.terminate()
            self.process.wait(units(10))
            shutil.rmtree(self.profile, ignore_errors=True)
