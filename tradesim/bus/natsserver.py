"""Start and stop a private `nats-server -js` on a free port (tests, benchmarks, local clusters)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final

INSTALL_HINT: Final = (
    "nats-server is not installed: install it with `apt-get install nats-server` "
    "(or download it from https://github.com/nats-io/nats-server/releases) and put it on PATH"
)


class NatsServerNotFoundError(RuntimeError):
    """No nats-server binary on PATH (or at NATS_SERVER_BIN)."""


def find_nats_server() -> str:
    """Path of the nats-server binary: $NATS_SERVER_BIN, PATH, then /usr/sbin and /usr/local/bin."""
    env = os.environ.get("NATS_SERVER_BIN")
    candidates = [env] if env else []
    found = shutil.which("nats-server")
    if found:
        candidates.append(found)
    candidates += ["/usr/sbin/nats-server", "/usr/local/bin/nats-server", "/usr/bin/nats-server"]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise NatsServerNotFoundError(INSTALL_HINT)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalNatsServer:
    """A nats-server child process with JetStream, a temporary store dir and a free port."""

    def __init__(self, port: int | None = None, store_dir: str | None = None) -> None:
        self.binary = find_nats_server()
        self.port = port or free_port()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.store_dir = store_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> LocalNatsServer:
        """Start and wait until the server accepts connections (raises RuntimeError with its log)."""
        if self.store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tradesim-nats-")
            self.store_dir = self._tmp.name
        self.log_path = Path(self.store_dir) / "nats-server.log"
        args = [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", self.store_dir]
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {self._log_tail()}")
            if self._ready():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nats-server did not accept connections within {timeout}s: {self._log_tail()}")

    def _ready(self) -> bool:
        """True once the server greets with INFO (and JetStream has started, per its log)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                if not s.recv(4096).startswith(b"INFO"):
                    return False
        except OSError:
            return False
        assert self.log_path is not None
        return b"Server is ready" in self.log_path.read_bytes()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:] if self.log_path else ""
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalNatsServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
