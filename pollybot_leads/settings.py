"""Settings: config/default.toml, then config/<env>.toml, then the environment.

Loaded once, by the CLI or the test suite; nothing else reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .ratelimit.resp_url import parse_url as parse_redis_url

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

T = TypeVar("T")

FAILURE_POLICIES = ("allow", "deny")
DRIVERS = ("motor", "pymongo")
LOG_FORMATS = ("text", "json")
_ORIGIN = re.compile(r"^https?://[^/\s?#]+\Z")
# An expiry index holds at most 2**31 - 1 seconds (about 68 years).
RETENTION_DAYS_MAX = 24_855
RETENTION_HOURS_MAX = 24 * 366  # Idempotency-Key results: a year at most


class SettingsError(ValueError):
    """A configuration value is missing or malformed."""


def _redact_uri(uri: str) -> str:
    """Hide the password of a ``scheme://user:password@host`` URI."""
    if "@" not in uri or "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "INFO"
    # "text" for a terminal, "json" (one object per line) for a log pipeline.
    log_format: str = "text"
    max_body_bytes: int = 65536
    # Processes serving the one port (serve --workers overrides).
    workers: int = 1
    # On SIGTERM: stop accepting, give requests in flight this long to finish, exit 0.
    drain_seconds: float = 10.0

    mongodb_uri: str = field(default="", repr=False)
    mongodb_database: str = "pollybot_leads"
    mongodb_driver: str = "pymongo"
    # Write concern of every write and commit: journaled by default, so a 2xx survives
    # a crash of the store. "majority" suits a replica set of several members.
    mongodb_w: int | str = 1
    mongodb_journal: bool = True
    # One budget for all the store calls of a request; past it the request is a 503.
    mongodb_timeout_ms: int = 1500
    # Connections to the store per process (the driver's maxPoolSize), and requests of
    # each lane at work on the store at once (http/admission.py); past the queue
    # wait a request is refused at once with a 503.
    mongodb_max_pool_size: int = 64
    store_read_concurrency: int = 12
    store_write_concurrency: int = 48
    store_max_queue_ms: int = 1000

    embedded_data_dir: Path = Path("var")
    embedded_port: int = 27027
    embedded_cache_size: str = "4G"

    key_cache_seconds: float = 30.0

    redis_url: str = field(default="", repr=False)
    # False: no per-key limiting at all (benchmarks); bad credentials are still limited.
    ratelimit_enabled: bool = True
    ratelimit_capacity: int = 100
    ratelimit_refill_per_second: float = 10.0
    auth_failure_capacity: int = 20
    auth_failure_refill_per_second: float = 0.2
    redis_timeout_ms: int = 100
    ratelimit_failure_policy: str = "allow"
    ratelimit_failure_backoff_seconds: float = 2.0
    ratelimit_failure_log_interval_seconds: float = 30.0
    trusted_proxies: tuple[str, ...] = ()

    list_max_count: int = 0
    cursor_secret: str = field(default="", repr=False)
    # Keys the suppression list's hashes (leads/suppressions.py); unset: one kept in the
    # database. Never change it: suppressions made under another secret stop matching.
    suppression_secret: str = field(default="", repr=False)
    # Browser origins allowed to call the API (CORS); empty: CORS off. "*": any origin.
    cors_origins: tuple[str, ...] = ()

    # Webhooks (see pollybot_leads/webhooks): deliveries run inside `serve` unless
    # webhooks_deliver is off (then run `pollybot-leads worker`).
    webhooks_deliver: bool = True
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = 15.0
    # Delays between attempts; the last one repeats until retry_for_seconds have passed.
    webhook_retry_schedule: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000)
    webhook_retry_for_seconds: float = 3 * 24 * 3600
    webhook_concurrency: int = 16
    webhook_poll_seconds: float = 0.25
    webhook_lease_margin_seconds: float = 30.0
    webhook_max_endpoints: int = 50  # per workspace
    # Inside serve: while requests are in flight, the share of the time delivery may
    # spend in store calls (pollybot_leads/webhooks/pacing.py); 1: no pacing.
    webhook_store_share_under_load: float = 0.02

    # How long each kind of kept record is kept: the store's expiry indexes remove it
    # after this (docs/privacy.md has the table). Leads are kept until deleted.
    retention_events_days: int = 30
    retention_delivery_logs_days: int = 30
    retention_audit_days: int = 365
    retention_idempotency_hours: int = 24
    retention_merge_tombstones_days: int = 30

    def __post_init__(self) -> None:
        if self.mongodb_driver not in DRIVERS:
            raise SettingsError(f"MONGODB_DRIVER (mongodb.driver) must be one of {DRIVERS}")
        if self.mongodb_driver == "motor" and importlib.util.find_spec("motor") is None:
            raise SettingsError(
                "MONGODB_DRIVER=motor needs motor, an extra: pip install 'pollybot-leads[motor]'"
            )
        if not (
            self.mongodb_w == "majority"
            or (isinstance(self.mongodb_w, int) and self.mongodb_w >= 0)
        ):
            raise SettingsError('MONGODB_W (mongodb.w) must be a number of members or "majority"')
        if not 10 <= self.mongodb_timeout_ms <= 600_000:
            raise SettingsError("MONGODB_TIMEOUT_MS (mongodb.timeout_ms) must be 10-600000")
        if not 1 <= self.mongodb_max_pool_size <= 1000:
            raise SettingsError("MONGODB_MAX_POOL_SIZE (mongodb.max_pool_size) must be 1-1000")
        for name in ("store_read_concurrency", "store_write_concurrency"):
            if not 1 <= getattr(self, name) <= self.mongodb_max_pool_size:
                raise SettingsError(
                    f"admission.{name.removeprefix('store_')} must be 1 to mongodb.max_pool_size"
                )
        if not 0 <= self.store_max_queue_ms <= 600_000:
            raise SettingsError("admission.max_queue_ms must be 0-600000")
        if self.redis_url:
            try:
                parse_redis_url(self.redis_url)
            except ValueError as exc:
                raise SettingsError(f"REDIS_URL (ratelimit.redis_url): {exc}") from None
        if self.ratelimit_failure_policy not in FAILURE_POLICIES:
            raise SettingsError(f"ratelimit.failure_policy must be one of {FAILURE_POLICIES}")
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(f"LOG_FORMAT (server.log_format) must be one of {LOG_FORMATS}")
        if not 1 <= self.workers <= 256:
            raise SettingsError("WORKERS (server.workers) must be 1-256")
        if not 0 < self.drain_seconds <= 3600:
            raise SettingsError("DRAIN_SECONDS (server.drain_seconds) must be in (0, 3600]")
        if not 1 <= self.port <= 65535:
            raise SettingsError("PORT (server.port) must be between 1 and 65535")
        if self.max_body_bytes < 1024:
            raise SettingsError("server.max_body_bytes must be at least 1024")
        if self.ratelimit_capacity < 1 or self.auth_failure_capacity < 1:
            raise SettingsError("rate-limit capacities must be at least 1")
        if self.ratelimit_refill_per_second <= 0 or self.auth_failure_refill_per_second <= 0:
            raise SettingsError("rate-limit refill rates must be positive")
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN.match(origin):
                raise SettingsError(
                    f"CORS_ORIGINS (server.cors_origins): {origin!r} is not an origin "
                    "(scheme://host[:port], no path) or *"
                )
        if not 0 < self.webhook_timeout_seconds <= 300:
            raise SettingsError("webhooks.timeout_seconds must be in (0, 300]")
        if not self.webhook_retry_schedule or any(d <= 0 for d in self.webhook_retry_schedule):
            raise SettingsError("webhooks.retry_schedule must list positive delays (seconds)")
        if not 1 <= self.webhook_concurrency <= 1000:
            raise SettingsError("webhooks.concurrency must be 1-1000")
        if not 0 < self.webhook_poll_seconds <= 60:
            raise SettingsError("webhooks.poll_seconds must be in (0, 60]")
        if not 0 < self.webhook_lease_margin_seconds <= 3600:
            raise SettingsError("webhooks.lease_margin_seconds must be in (0, 3600]")
        if not 0 < self.webhook_store_share_under_load <= 1:
            raise SettingsError(
                "WEBHOOK_STORE_SHARE_UNDER_LOAD (webhooks.store_share_under_load) must be in (0, 1]"
            )
        self._check_retention()
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError as exc:
                raise SettingsError(
                    f"ratelimit.trusted_proxies: {proxy!r} is not an address"
                ) from exc

    def _check_retention(self) -> None:
        for name in ("events_days", "delivery_logs_days", "audit_days", "merge_tombstones_days"):
            if not 1 <= getattr(self, f"retention_{name}") <= RETENTION_DAYS_MAX:
                raise SettingsError(f"retention.{name} must be 1-{RETENTION_DAYS_MAX} (days)")
        if not 1 <= self.retention_idempotency_hours <= RETENTION_HOURS_MAX:
            raise SettingsError(f"retention.idempotency_hours must be 1-{RETENTION_HOURS_MAX}")
        # A delivery retried after its event (or its own record) expired could not be sent.
        for name in ("events_days", "delivery_logs_days"):
            if getattr(self, f"retention_{name}") * 86400 < self.webhook_retry_for_seconds:
                raise SettingsError(
                    f"retention.{name} must cover webhooks.retry_for_seconds "
                    f"({self.webhook_retry_for_seconds:g} s): a delivery still retried "
                    "would lose its event or its record"
                )

    @property
    def retention_seconds(self) -> dict[str, int]:
        """Each kind of kept record's retention, in seconds (indexes.py maps them to the
        expiry indexes that enforce them)."""
        day = 24 * 3600
        return {
            "events": self.retention_events_days * day,
            "delivery_logs": self.retention_delivery_logs_days * day,
            "audit": self.retention_audit_days * day,
            "idempotency": self.retention_idempotency_hours * 3600,
            "merge_tombstones": self.retention_merge_tombstones_days * day,
        }

    @property
    def embedded(self) -> bool:
        """True when no MONGODB_URI is configured: serve starts SecantusDB itself."""
        return not self.mongodb_uri

    def __repr__(self) -> str:  # secrets hidden: URIs may carry passwords
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}
        shown["mongodb_uri"] = _redact_uri(self.mongodb_uri)
        shown["redis_url"] = _redact_uri(self.redis_url)
        inner = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"Settings({inner})"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _flag(value: object) -> bool:
    """A TOML boolean, or 1/0/true/false/yes/no/on/off from the environment."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def _origins(value: object) -> tuple[str, ...]:
    """A TOML list, or a comma-separated string from the environment."""
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        raise TypeError(value)
    return tuple(str(item).strip().rstrip("/") for item in items if str(item).strip())


def _delays(value: object) -> tuple[float, ...]:
    """A TOML list of seconds, or a comma-separated string from the environment."""
    items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    return tuple(float(item) for item in items if str(item).strip())


def _whole(value: object) -> int:
    """A whole number: a TOML integer, or digits from the environment (never 1.5 read as 1)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(value)
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        raise ValueError(value)
    return int(value)


def _write_members(value: object) -> int | str:
    """``w``: a number of members, or "majority" (checked by Settings)."""
    if isinstance(value, str) and not value.strip().isdigit():
        return value.strip()
    if not isinstance(value, int | float | str):
        raise TypeError(value)
    return int(value)


_KINDS: dict[Callable[[Any], Any], str] = {
    int: "an integer",
    _whole: "a whole number",
    float: "a number",
    _flag: "true or false (1 or 0)",
    _write_members: 'a number of members or "majority"',
    tuple: "a list",
    _origins: "a list of origins",
    _delays: "a list of seconds",
}


def _read_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(env: Mapping[str, str] | None = None, *, profile: str | None = None) -> Settings:
    """Build Settings from config/default.toml, an optional profile file and ``env``.

    ``profile`` (or ``PB_CONFIG`` in ``env``) names ``config/<profile>.toml``.
    """
    env = os.environ if env is None else env
    directory = Path(env["PB_CONFIG_DIR"]) if env.get("PB_CONFIG_DIR") else CONFIG_DIR
    raw = _read_toml(directory / "default.toml")
    profile = profile or env.get("PB_CONFIG") or None
    if profile:
        path = directory / f"{profile}.toml"
        if not path.is_file():
            raise SettingsError(f"no config profile {path}")
        raw = _merge(raw, _read_toml(path))

    def get(
        convert: Callable[[Any], T], key: str, default: object, env_name: str | None = None
    ) -> T:
        """``key`` ("section.name") from the config, or ``env_name`` from the environment.

        A value that does not convert is an error naming where it came from.
        """
        if env_name and env.get(env_name, "") != "":
            value, source = env[env_name], env_name
        else:
            section, name = key.split(".")
            value, source = raw.get(section, {}).get(name, default), f"{key} (config)"
        try:
            return convert(value)
        except SettingsError as exc:
            raise SettingsError(f"{source}: {exc}") from None
        except (TypeError, ValueError):
            kind = _KINDS.get(convert, "valid")
            raise SettingsError(f"{source} must be {kind}, not {value!r}") from None

    return Settings(
        host=get(str, "server.host", "127.0.0.1", "HOST"),
        port=get(int, "server.port", 8080, "PORT"),
        log_level=get(str, "server.log_level", "INFO", "LOG_LEVEL").upper(),
        log_format=get(str, "server.log_format", "text", "LOG_FORMAT").strip().lower(),
        workers=get(int, "server.workers", 1, "WORKERS"),
        drain_seconds=get(float, "server.drain_seconds", 10.0, "DRAIN_SECONDS"),
        max_body_bytes=get(int, "server.max_body_bytes", 65536),
        mongodb_uri=get(str, "mongodb.uri", "", "MONGODB_URI"),
        mongodb_database=get(str, "mongodb.database", "pollybot_leads", "MONGODB_DATABASE"),
        mongodb_driver=get(str, "mongodb.driver", "pymongo", "MONGODB_DRIVER"),
        mongodb_w=get(_write_members, "mongodb.w", 1, "MONGODB_W"),
        mongodb_journal=get(_flag, "mongodb.journal", True, "MONGODB_JOURNAL"),
        mongodb_timeout_ms=get(int, "mongodb.timeout_ms", 1500, "MONGODB_TIMEOUT_MS"),
        mongodb_max_pool_size=get(int, "mongodb.max_pool_size", 64, "MONGODB_MAX_POOL_SIZE"),
        store_read_concurrency=get(int, "admission.read_concurrency", 12),
        store_write_concurrency=get(int, "admission.write_concurrency", 48),
        store_max_queue_ms=get(int, "admission.max_queue_ms", 1000),
        embedded_data_dir=Path(get(str, "embedded.data_dir", "var", "PB_DATA_DIR")),
        embedded_port=get(int, "embedded.port", 27027, "PB_EMBEDDED_PORT"),
        embedded_cache_size=get(str, "embedded.cache_size", "4G"),
        key_cache_seconds=get(float, "auth.key_cache_seconds", 30),
        redis_url=get(str, "ratelimit.redis_url", "", "REDIS_URL"),
        ratelimit_enabled=get(_flag, "ratelimit.enabled", True, "RATELIMIT_ENABLED"),
        ratelimit_capacity=get(int, "ratelimit.capacity", 100),
        ratelimit_refill_per_second=get(float, "ratelimit.refill_per_second", 10.0),
        auth_failure_capacity=get(int, "ratelimit.auth_failure_capacity", 20),
        auth_failure_refill_per_second=get(float, "ratelimit.auth_failure_refill_per_second", 0.2),
        redis_timeout_ms=get(int, "ratelimit.redis_timeout_ms", 100),
        ratelimit_failure_policy=get(str, "ratelimit.failure_policy", "allow"),
        ratelimit_failure_backoff_seconds=get(float, "ratelimit.failure_backoff_seconds", 2.0),
        ratelimit_failure_log_interval_seconds=get(
            float, "ratelimit.failure_log_interval_seconds", 30.0
        ),
        trusted_proxies=get(tuple, "ratelimit.trusted_proxies", ()),
        list_max_count=get(int, "list.max_count", 0),
        cursor_secret=str(env.get("CURSOR_SECRET", "")),
        suppression_secret=str(env.get("SUPPRESSION_SECRET", "")),
        cors_origins=get(_origins, "server.cors_origins", (), "CORS_ORIGINS"),
        webhooks_deliver=get(_flag, "webhooks.deliver", True, "WEBHOOKS_DELIVER"),
        webhook_allow_http=get(_flag, "webhooks.allow_http", False, "WEBHOOK_ALLOW_HTTP"),
        webhook_allow_private=get(
            _flag, "webhooks.allow_private_targets", False, "WEBHOOK_ALLOW_PRIVATE"
        ),
        webhook_timeout_seconds=get(float, "webhooks.timeout_seconds", 15.0),
        webhook_retry_schedule=get(
            _delays, "webhooks.retry_schedule", (5, 300, 1800, 7200, 18000, 36000)
        ),
        webhook_retry_for_seconds=get(float, "webhooks.retry_for_seconds", 3 * 24 * 3600),
        webhook_concurrency=get(int, "webhooks.concurrency", 16),
        webhook_poll_seconds=get(float, "webhooks.poll_seconds", 0.25),
        webhook_lease_margin_seconds=get(float, "webhooks.lease_margin_seconds", 30.0),
        webhook_max_endpoints=get(int, "webhooks.max_endpoints", 50),
        webhook_store_share_under_load=get(
            float,
            "webhooks.store_share_under_load",
            0.02,
            "WEBHOOK_STORE_SHARE_UNDER_LOAD",
        ),
        retention_events_days=get(_whole, "retention.events_days", 30),
        retention_delivery_logs_days=get(_whole, "retention.delivery_logs_days", 30),
        retention_audit_days=get(_whole, "retention.audit_days", 365),
        retention_idempotency_hours=get(_whole, "retention.idempotency_hours", 24),
        retention_merge_tombstones_days=get(_whole, "retention.merge_tombstones_days", 30),
    )
