"""``serve --workers N``: N processes serving one port, started and stopped together.

The parent (this supervisor) serves nothing. It starts N workers, each a fresh Python
process (``python -m pollybot_leads.ops.workers``: no fork of a process that already
holds threads, event loops or driver connections) that builds the app with
``create_app`` and listens on the same host and port with SO_REUSEPORT, so the kernel
spreads connections over them. Why not gunicorn's aiohttp worker: one more dependency
and one more configuration to run the same thing; the parent here also owns what the
workers share (the embedded store, the metrics directory, one cursor secret) and the
shutdown order, all from the one ``pollybot-leads serve`` command.

* Each worker gets its settings through a pipe (they may hold secrets: never argv) and
  ``PROMETHEUS_MULTIPROC_DIR`` (a fresh directory, removed at exit) in its environment.
* A worker reports ready on a pipe it keeps open; that pipe's end of file tells the
  parent the worker has exited. A worker that exits before it is ready fails the start
  (all stop, exit 1); one that dies later is started again (at most
  :data:`MAX_RESTARTS` in :data:`RESTART_WINDOW_SECONDS`, then all stop, exit 1).
* SIGTERM or SIGINT to the parent: SIGTERM to every worker, which stops accepting,
  lets its requests in flight finish within ``drain_seconds`` and exits 0; the parent
  exits 0 when they all did. Workers ignore SIGINT (Ctrl-C reaches the whole process
  group: the parent forwards it once, as SIGTERM) and get SIGTERM if the parent dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from ..settings import Settings

log = logging.getLogger("pollybot_leads.workers")

MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0
# A worker may take 2 x drain_seconds to stop (aiohttp waits for the handlers, then for
# their cancellation) plus its cleanup; past that the parent kills it.
STOP_GRACE_SECONDS = 10.0
READY = b"ready"


@dataclass(frozen=True)
class WorkerSpec:
    settings: Settings
    host: str
    port: int
    metrics_dir: str
    # Builds each worker's application; pickled by reference (a module-level function).
    create_app: Callable[[Settings], web.Application]


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes]
    ready_fd: int
    ready: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid


def start_worker(spec: WorkerSpec, index: int) -> Worker:
    read_fd, write_fd = os.pipe()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": spec.metrics_dir}
    try:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", __name__, str(write_fd), str(os.getpid())],
            stdin=subprocess.PIPE,
            pass_fds=(write_fd,),
            env=env,
        )
    finally:
        os.close(write_fd)
    assert process.stdin is not None
    with process.stdin:
        process.stdin.write(pickle.dumps(spec))
    return Worker(index, process, read_fd)


class Supervisor:
    def __init__(
        self,
        spec: WorkerSpec,
        count: int,
        *,
        drain_seconds: float,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.spec, self.count, self.drain_seconds = spec, count, drain_seconds
        self.on_ready = on_ready
        self.workers: dict[int, Worker] = {}
        self.stopping = False
        self.failed = False
        self._stop_deadline = 0.0
        self._restarts: deque[float] = deque()
        self._selector = selectors.DefaultSelector()

    def run(self) -> int:
        """Start the workers, supervise them until a stop signal, stop them; exit code."""
        signal_r, signal_w = os.pipe()
        os.set_blocking(signal_w, False)

        def on_signal(signum: int, frame: object) -> None:
            with contextlib.suppress(OSError):
                os.write(signal_w, bytes([signum]))

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        self._selector.register(signal_r, selectors.EVENT_READ, None)
        try:
            for index in range(self.count):
                self._start(index)
            announced = False
            while self.workers:
                timeout = None
                if self.stopping:
                    timeout = max(0.0, self._stop_deadline - time.monotonic())
                    if timeout == 0.0:
                        self._kill_all()
                        timeout = 1.0
                for key, _ in self._selector.select(timeout):
                    if key.data is None:
                        signum = os.read(signal_r, 64)[-1]
                        self.stop(f"{signal.Signals(signum).name} received")
                        continue
                    worker: Worker = key.data
                    if os.read(worker.ready_fd, 64):
                        worker.ready = True
                        log.info("worker %d ready (pid %d)", worker.index, worker.pid)
                    else:
                        self._exited(worker)
                if not announced and self._all_ready():
                    announced = True
                    if self.on_ready is not None:
                        self.on_ready()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._selector.close()
            os.close(signal_r)
            os.close(signal_w)
        return 1 if self.failed else 0

    def stop(self, reason: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self._stop_deadline = time.monotonic() + 2 * self.drain_seconds + STOP_GRACE_SECONDS
        log.info(
            "%s: stopping %d workers (drain %g s)", reason, len(self.workers), self.drain_seconds
        )
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)

    def _all_ready(self) -> bool:
        return len(self.workers) == self.count and all(w.ready for w in self.workers.values())

    def _start(self, index: int) -> None:
        worker = start_worker(self.spec, index)
        self.workers[index] = worker
        self._selector.register(worker.ready_fd, selectors.EVENT_READ, worker)

    def _exited(self, worker: Worker) -> None:
        self._selector.unregister(worker.ready_fd)
        os.close(worker.ready_fd)
        code = worker.process.wait()
        del self.workers[worker.index]
        _forget_metrics_of(worker.pid, self.spec.metrics_dir)
        if self.stopping:
            if code != 0:
                self.failed = True
                log.error("worker %d (pid %d) exited with %s", worker.index, worker.pid, code)
            return
        if not worker.ready:
            self.failed = True
            log.error(
                "worker %d (pid %d) failed to start (exit %s)", worker.index, worker.pid, code
            )
            self.stop("a worker failed to start")
            return
        now = time.monotonic()
        self._restarts.append(now)
        while self._restarts and self._restarts[0] < now - RESTART_WINDOW_SECONDS:
            self._restarts.popleft()
        if len(self._restarts) > MAX_RESTARTS:
            self.failed = True
            log.error(
                "worker %d (pid %d) exited with %s; too many restarts",
                worker.index,
                worker.pid,
                code,
            )
            self.stop("workers keep dying")
            return
        log.warning(
            "worker %d (pid %d) exited with %s; starting it again", worker.index, worker.pid, code
        )
        self._start(worker.index)

    def _kill_all(self) -> None:
        for worker in self.workers.values():
            if worker.process.poll() is None:
                log.error(
                    "worker %d (pid %d) still running after the drain: killed",
                    worker.index,
                    worker.pid,
                )
                self.failed = True
                worker.process.kill()


def _forget_metrics_of(pid: int, directory: str) -> None:
    """A dead worker's live gauges (in flight, up) must not count any more."""
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, directory)


def run_workers(
    create_app: Callable[[Settings], web.Application],
    settings: Settings,
    host: str,
    port: int,
    count: int,
    on_ready: Callable[[], None] | None = None,
) -> int:
    metrics_dir = tempfile.mkdtemp(prefix="pollybot-metrics-")
    try:
        spec = WorkerSpec(settings, host, port, metrics_dir, create_app)
        return Supervisor(
            spec, count, drain_seconds=settings.drain_seconds, on_ready=on_ready
        ).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


# --- in the worker process ----------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """SIGTERM (a drain) when the supervisor dies, however it dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # it died before the line above
        sys.exit(1)


def worker_main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the supervisor sends SIGTERM
    ready_fd, parent_pid = int(argv[0]), int(argv[1])
    _die_with_parent(parent_pid)
    spec: WorkerSpec = pickle.load(sys.stdin.buffer)  # noqa: S301 - from our own parent
    sys.stdin.close()

    from ..telemetry import metrics
    from ..telemetry.logs import setup_logging
    from .server import run, serve_app

    settings = spec.settings
    setup_logging(settings.log_level, settings.log_format)
    metrics.use_multiprocess(spec.metrics_dir)
    app = spec.create_app(settings)
    run(
        serve_app(
            app,
            host=spec.host,
            port=spec.port,
            drain_seconds=settings.drain_seconds,
            reuse_port=True,
            stop_signals=(signal.SIGTERM,),
            on_ready=lambda: os.write(ready_fd, READY),  # the fd stays open until exit
        )
    )


if __name__ == "__main__":
    worker_main(sys.argv[1:])
