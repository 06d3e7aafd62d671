"""A real `pollybot-leads serve` in a subprocess, its stdout read for the banner and its
log (stderr) kept in a file for the tests to read."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from pollybot_leads.store.embedded import free_port, port_open

START_SECONDS = 60.0


class Served:
    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.env = {**env, "PORT": str(self.port)}
        self.args = args
        self.banner = ""
        self.process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Served:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pollybot_leads", "serve", *self.args],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        self.banner = self._read_banner()
        return self

    def _read_banner(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        out = self.process.stdout
        deadline, text = time.monotonic() + START_SECONDS, b""
        while b"Stop with Ctrl-C" not in text:
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise AssertionError(f"no banner: {text!r}\nlog:\n{self.log()[-3000:]}")
            if select.select([out], [], [], min(left, 0.5))[0]:
                chunk = os.read(out.fileno(), 65536)
                if not chunk:
                    continue
                text += chunk
        return text.decode()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        code = self.process.wait(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            if self.process is not None and self.process.stdout is not None:
                self.process.stdout.close()
            return
        self.signal(signal.SIGTERM)
        try:
            self.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.wait(10)

    def listening(self) -> bool:
        return port_open("127.0.0.1", self.port)
