"""Redis URLs: what ``redis://``, ``rediss://``, ``unix://`` and the cluster schemes name.

:func:`parse_url` turns a URL into :class:`ConnectionParams` (with :class:`TLSOptions` for
``rediss``), or raises ``ValueError`` for one the rate limiter's clients cannot take:
:class:`~.resp.RespClient` for one server, :class:`~.resp_cluster.ClusterClient` for
``redis+cluster://`` and ``rediss+cluster://``. The query options are redis-py's names.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from .resp_protocol import DEFAULT_PORT

__all__ = ["SCHEMES", "ConnectionParams", "TLSOptions", "parse_url"]

SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
_TLS_OPTIONS = (
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)
_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class TLSOptions:
    """What a ``rediss://`` URL says about TLS (redis-py's query option names)."""

    ca_certs: str | None = None  # PEM file of the CAs to trust; default: the system's
    certfile: str | None = None  # a client certificate (Redis' --tls-auth-clients yes)
    keyfile: str | None = None
    cert_reqs: str = "required"  # none | optional | required
    check_hostname: bool = True

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_certs)
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        if self.cert_reqs == "none":
            context.check_hostname = False
        else:
            context.check_hostname = self.check_hostname
        context.verify_mode = _CERT_REQS[self.cert_reqs]
        return context


@dataclass(frozen=True)
class ConnectionParams:
    host: str = "localhost"
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = None
    path: str | None = None  # unix://: the socket's path (host and port unused)
    tls: TLSOptions | None = None  # rediss://
    cluster: bool = False  # redis+cluster:// or rediss+cluster://
    seeds: tuple[tuple[str, int], ...] = field(default=())  # cluster: host:port to ask first


def _flag(name: str, text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(f"invalid {name} in the Redis URL: {text!r} (true or false)")


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid addr in the Redis URL: {text!r} (host:port)")
    return host.strip("[]"), int(port)


def parse_url(url: str) -> ConnectionParams:
    """A Redis URL -> ConnectionParams; ``ValueError`` when it is not one this client takes.

    * ``redis://[[username]:password@]host[:port][/db][?db=N]``
    * ``rediss://...`` the same over TLS; options ``ssl_ca_certs`` (a PEM file),
      ``ssl_certfile`` and ``ssl_keyfile`` (a client certificate), ``ssl_cert_reqs``
      (``none``, ``optional``, ``required``: the default) and ``ssl_check_hostname``
      (``true``: the default, or ``false``)
    * ``unix://[[username]:password@]/path/to/redis.sock[?db=N]``
    * ``redis+cluster://[[username]:password@]host[:port][?addr=host:port...]`` and
      ``rediss+cluster://`` (with the TLS options): Redis Cluster; the host and each
      ``addr`` are seed nodes, asked in turn for the slot map; the database is 0.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"a Redis URL starts with {', '.join(s + '://' for s in SCHEMES)}, "
            f"not {parts.scheme or '(no scheme)'}:"
        )
    cluster = scheme.endswith("+cluster")
    tls = scheme.startswith("rediss")
    query = parse_qs(parts.query, keep_blank_values=True)
    allowed = {"db"} | (set(_TLS_OPTIONS) if tls else set()) | ({"addr"} if cluster else set())
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ValueError(f"unsupported Redis URL options for {scheme}://: {', '.join(unknown)}")
    single = {name: values[-1] for name, values in query.items()}
    try:
        port = parts.port  # ValueError when it is not a number in range
    except ValueError as exc:
        raise ValueError(f"invalid port in the Redis URL: {exc}") from None
    path = None
    if scheme == "unix":
        path = unquote(parts.path)
        if not path:
            raise ValueError("a unix:// Redis URL needs the socket's path: unix:///path/redis.sock")
        db_text = single.get("db", "")
    else:
        db_text = single["db"] if "db" in single else unquote(parts.path).strip("/")
    try:
        db = int(db_text) if db_text else 0
    except ValueError:
        raise ValueError(f"invalid database number in the Redis URL: {db_text!r}") from None
    if db < 0:
        raise ValueError(f"invalid database number in the Redis URL: {db}")
    if cluster and db:
        raise ValueError("Redis Cluster has database 0 only: no /db in a cluster URL")
    options = None
    if tls:
        reqs = single.get("ssl_cert_reqs", "required").lower()
        if reqs not in _CERT_REQS:
            raise ValueError(f"invalid ssl_cert_reqs in the Redis URL: {reqs!r}")
        options = TLSOptions(
            ca_certs=single.get("ssl_ca_certs") or None,
            certfile=single.get("ssl_certfile") or None,
            keyfile=single.get("ssl_keyfile") or None,
            cert_reqs=reqs,
            check_hostname=_flag("ssl_check_hostname", single.get("ssl_check_hostname", "true")),
        )
    host = unquote(parts.hostname) if parts.hostname else "localhost"
    port = port or DEFAULT_PORT
    seeds: tuple[tuple[str, int], ...] = ()
    if cluster:
        seeds = ((host, port), *(_address(a) for a in query.get("addr", [])))
    return ConnectionParams(
        host=host,
        port=port,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        path=path,
        tls=options,
        cluster=cluster,
        seeds=seeds,
    )
