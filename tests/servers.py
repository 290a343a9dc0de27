"""Real ingest servers for end-to-end tests: `streamstats serve` (or `run`) in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

JWT_SECRET = "e2e-secret-" + "k" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`streamstats serve` on a free port of 127.0.0.1, with its output kept in a log file."""

    def __init__(
        self,
        database_url: str,
        log_dir: Path,
        *,
        command: str = "serve",
        port: int | None = None,
        env: dict[str, str] | None = None,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = command
        self.log_path = log_dir / f"server-{self.port}-{time.monotonic_ns()}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("STREAMSTATS_")},
            "DATABASE_URL": database_url,
            "STREAMSTATS_JWT_SECRET": JWT_SECRET,
            "STREAMSTATS_HOST": "127.0.0.1",
            "STREAMSTATS_PORT": str(self.port),
            "STREAMSTATS_REPORTS_DIR": str(log_dir / "reports"),
            **(env or {}),
        }
        self.env.pop("REDIS_URL", None) if "REDIS_URL" not in (env or {}) else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> ServerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamstats.cli", self.command],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            if self.http_status("/healthz") == 200:
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not answer /healthz within {timeout}s:\n{self.log()}")

    def http_status(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 15) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """`kill -9`: no chance to flush or say goodbye."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
