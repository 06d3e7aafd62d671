"""Throw-away ``redis-server`` processes for tests: own ports, own temp dirs, no persistence.

    with RedisServer() as server:          # redis://, started on a free port
        url = server.url
        server.stop()                      # Redis gone: connections refused
        server.start()                     # back, same port, empty
        server.pause(); server.resume()    # SIGSTOP/SIGCONT: Redis hangs, then answers
    with RedisServer(tls=True) as server:  # rediss:// only, certificates made by openssl
        server.url                         # rediss://...?ssl_ca_certs=<the test CA>
    with RedisServer(unix=True) as server: # a unix socket only: unix:///.../redis.sock
        ...
    with RedisCluster() as cluster:        # 3 masters, slots spread, cluster_state:ok
        cluster.url                        # redis+cluster://127.0.0.1:<first node's port>

Plain module (no pytest); the binary is ``$REDIS_SERVER_BIN`` or ``redis-server`` on PATH,
``redis-cli`` (cluster creation) and ``openssl`` (certificates) are looked up beside it
and on PATH.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self
from urllib.parse import quote

__all__ = [
    "RedisCluster",
    "RedisServer",
    "RedisServerError",
    "find_redis_server",
    "free_port",
    "make_certificates",
]


class RedisServerError(RuntimeError):
    """redis-server is missing, would not start, or would not answer."""


def find_redis_server() -> str | None:
    """The redis-server binary to use, or None when there is none."""
    explicit = os.environ.get("REDIS_SERVER_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("redis-server")


def _find_tool(name: str, binary: str) -> str:
    beside = Path(binary).with_name(name)
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which(name)
    if not found:
        raise RedisServerError(f"{name} not found (beside {binary} or on PATH)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _ask(sock: socket.socket, command: bytes, timeout: float) -> bytes:
    sock.settimeout(timeout)
    sock.sendall(command)
    return sock.recv(4096)


def ping(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when a Redis server at host:port answers PING with PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            return _ask(sock, b"PING\r\n", timeout).startswith(b"+PONG")
    except OSError:
        return False


def make_certificates(directory: Path, openssl: str | None = None) -> dict[str, Path]:
    """A test CA and a server certificate it signed, for ``localhost`` and ``127.0.0.1``.

    Returns the paths ``ca``, ``cert`` and ``key`` (PEM). EC keys: quick to make.
    """
    openssl = openssl or shutil.which("openssl")
    if not openssl:
        raise RedisServerError("openssl not found on PATH (needed for the TLS test server)")
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    ext.write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\n"
        "basicConstraints=critical,CA:FALSE\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=pollybot test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
         "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext],
    ]  # fmt: skip
    for command in commands:
        done = subprocess.run(
            [str(part) for part in command], capture_output=True, stdin=subprocess.DEVNULL
        )
        if done.returncode != 0:
            raise RedisServerError(f"openssl failed: {done.stderr.decode(errors='replace')}")
    return {"ca": ca, "cert": cert, "key": key}


class RedisServer:
    """One redis-server subprocess that can be stopped and started again on its port.

    ``tls``: TLS only (no plain port), with certificates made in its directory;
    ``unix``: a unix socket only; ``cluster``: a cluster-enabled node (see RedisCluster).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
        start_timeout: float = 10.0,
        tls: bool = False,
        unix: bool = False,
        cluster: bool = False,
    ) -> None:
        binary = binary or find_redis_server()
        if not binary:
            raise RedisServerError("redis-server not found (set REDIS_SERVER_BIN or PATH)")
        if tls and unix:
            raise ValueError("tls or unix, not both")
        self.binary = binary
        self.host = host
        self.port = 0 if unix else (port or free_port(host))
        self.start_timeout = start_timeout
        self.tls = tls
        self.unix = unix
        self.cluster = cluster
        self.cluster_port = free_port(host) if cluster else 0
        self.certificates: dict[str, Path] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        if self.unix:
            return f"unix://{self.socket_path}?db=0"
        if self.tls:
            ca = quote(str(self.certificates["ca"]), safe="/")
            return f"rediss://localhost:{self.port}/0?ssl_ca_certs={ca}"
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def directory(self) -> Path:
        if self._tmp is None:
            # Short: a unix socket's path must stay under about 100 bytes.
            self._tmp = tempfile.TemporaryDirectory(prefix="pb-redis-")
        return Path(self._tmp.name)

    def client_context(self) -> ssl.SSLContext:
        """An SSL context trusting the test CA (TLS servers only)."""
        return ssl.create_default_context(cafile=str(self.certificates["ca"]))

    def ping(self, timeout: float = 0.2) -> bool:
        """True when the server answers PING, over whatever it listens on."""
        try:
            if self.unix:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(timeout)
                    sock.connect(str(self.socket_path))
                    return _ask(sock, b"PING\r\n", timeout).startswith(b"+PONG")
            if self.tls:
                with (
                    socket.create_connection((self.host, self.port), timeout=timeout) as raw,
                    self.client_context().wrap_socket(raw, server_hostname="localhost") as sock,
                ):
                    return _ask(sock, b"PING\r\n", timeout).startswith(b"+PONG")
        except (OSError, ssl.SSLError):
            return False
        return ping(self.host, self.port, timeout)

    def command(self, *args: str, timeout: float = 2.0) -> bytes:
        """One inline command over a plain TCP connection; the raw reply."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            return _ask(sock, " ".join(args).encode() + b"\r\n", timeout)

    def _args(self, directory: Path, log_path: Path) -> list[str]:
        args = [
            self.binary,
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--logfile", str(log_path),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.unix:
            args += ["--port", "0", "--unixsocket", str(self.socket_path)]
            args += ["--unixsocketperm", "700"]
        elif self.tls:
            if not self.certificates:
                self.certificates = make_certificates(directory / "tls")
            args += ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", str(self.certificates["cert"])]
            args += ["--tls-key-file", str(self.certificates["key"])]
            args += ["--tls-ca-cert-file", str(self.certificates["ca"])]
            args += ["--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-port", str(self.cluster_port)]
            args += ["--cluster-config-file", str(directory / "nodes.conf")]
            args += ["--cluster-node-timeout", "2000"]
        return args

    def start(self) -> Self:
        """Start the server (no-op if running) and wait until it answers PING."""
        if self.running:
            return self
        directory = self.directory
        log_path = directory / "redis.log"
        self._proc = subprocess.Popen(
            self._args(directory, log_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._paused = False
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
                self._proc = None
                raise RedisServerError(f"redis-server exited ({self.url}):\n{tail}")
            if self.ping():
                return self
            time.sleep(0.01)
        self.stop()
        raise RedisServerError(f"redis-server did not answer PING ({self.url})")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (no-op if stopped); its port is free for :meth:`start` again."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            if self._paused:
                proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers."""
        if not self.running:
            raise RedisServerError("redis-server is not running")
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self._proc is not None and self._paused:
            self._proc.send_signal(signal.SIGCONT)
            self._paused = False

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RedisCluster:
    """A local Redis Cluster of ``size`` masters (no replicas), all slots assigned.

    Started with ``redis-cli --cluster create``; ready when every node reports
    ``cluster_state:ok``. :attr:`url` is the ``redis+cluster://`` URL of the first node.
    """

    def __init__(self, size: int = 3, *, binary: str | None = None, timeout: float = 20.0):
        binary = binary or find_redis_server()
        if not binary:
            raise RedisServerError("redis-server not found (set REDIS_SERVER_BIN or PATH)")
        if size < 3:
            raise ValueError("redis-cli --cluster create wants at least 3 masters")
        self.redis_cli = _find_tool("redis-cli", binary)
        self.nodes = [RedisServer(binary=binary, cluster=True) for _ in range(size)]
        self.timeout = timeout

    @property
    def url(self) -> str:
        first = self.nodes[0]
        return f"redis+cluster://{first.host}:{first.port}"

    def start(self) -> Self:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"{node.host}:{node.port}" for node in self.nodes]
            done = subprocess.run(
                [self.redis_cli, "--cluster", "create", *addresses,
                 "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, stdin=subprocess.DEVNULL, timeout=self.timeout,
            )  # fmt: skip
            if done.returncode != 0:
                raise RedisServerError(
                    f"redis-cli --cluster create failed:\n{done.stdout.decode(errors='replace')}"
                    f"{done.stderr.decode(errors='replace')}"
                )
            self.wait_ok()
        except BaseException:
            self.close()
            raise
        return self

    def wait_ok(self) -> None:
        """Until every node says ``cluster_state:ok`` (and knows every other node)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                infos = [node.command("CLUSTER", "INFO") for node in self.nodes]
                if all(b"cluster_state:ok" in info for info in infos) and all(
                    f"cluster_known_nodes:{len(self.nodes)}".encode() in info for info in infos
                ):
                    return
            time.sleep(0.05)
        raise RedisServerError("the Redis Cluster did not reach cluster_state:ok")

    def node_for_slot(self, slot: int) -> RedisServer:
        """The node serving ``slot`` now (from CLUSTER SHARDS/NODES of the first node)."""
        reply = self.nodes[0].command("CLUSTER", "NODES").decode()
        for line in reply.splitlines()[1:]:  # the first line is the bulk length
            fields = line.split()
            if len(fields) < 9:
                continue
            port = int(fields[1].split("@", 1)[0].rsplit(":", 1)[1])
            for span in fields[8:]:
                if span.startswith("["):
                    continue  # a slot being migrated
                low, _, high = span.partition("-")
                if int(low) <= slot <= int(high or low):
                    return next(node for node in self.nodes if node.port == port)
        raise RedisServerError(f"no node serves slot {slot}")

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
