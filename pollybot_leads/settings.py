"""Settings: config/default.toml, then config/<env>.toml, then the environment.

Loaded once, by the CLI or the test suite; nothing else reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

FAILURE_POLICIES = ("allow", "deny")
DRIVERS = ("motor", "pymongo")


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
    max_body_bytes: int = 65536

    mongodb_uri: str = field(default="", repr=False)
    mongodb_database: str = "pollybot_leads"
    mongodb_driver: str = "pymongo"
    # Write concern of every write and commit: journaled by default, so a 2xx survives
    # a crash of the store. "majority" suits a replica set of several members.
    mongodb_w: int | str = 1
    mongodb_journal: bool = True
    # One budget for all the store calls of a request; past it the request is a 503.
    mongodb_timeout_ms: int = 1500

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

    def __post_init__(self) -> None:
        if self.mongodb_driver not in DRIVERS:
            raise SettingsError(f"mongodb.driver must be one of {DRIVERS}")
        if not (
            self.mongodb_w == "majority"
            or (isinstance(self.mongodb_w, int) and self.mongodb_w >= 0)
        ):
            raise SettingsError('mongodb.w must be a number of members or "majority"')
        if not 10 <= self.mongodb_timeout_ms <= 600_000:
            raise SettingsError("MONGODB_TIMEOUT_MS must be between 10 and 600000")
        if self.ratelimit_failure_policy not in FAILURE_POLICIES:
            raise SettingsError(f"ratelimit.failure_policy must be one of {FAILURE_POLICIES}")
        if not 1 <= self.port <= 65535:
            raise SettingsError("PORT must be between 1 and 65535")
        if self.max_body_bytes < 1024:
            raise SettingsError("server.max_body_bytes must be at least 1024")
        if self.ratelimit_capacity < 1 or self.auth_failure_capacity < 1:
            raise SettingsError("rate-limit capacities must be at least 1")
        if self.ratelimit_refill_per_second <= 0 or self.auth_failure_refill_per_second <= 0:
            raise SettingsError("rate-limit refill rates must be positive")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError as exc:
                raise SettingsError(
                    f"ratelimit.trusted_proxies: {proxy!r} is not an address"
                ) from exc

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

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)


def _flag(value: object, name: str) -> bool:
    """A TOML boolean, or 1/0/true/false/yes/no/on/off from the environment."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false (1 or 0), not {value!r}")


def _write_members(value: object) -> int | str:
    """``w``: a number of members, or "majority"."""
    if isinstance(value, str) and not value.strip().isdigit():
        return value.strip()
    return int(value)  # type: ignore[call-overload]


def _read_toml(path: Path) -> dict:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def _merge(base: dict, over: Mapping) -> dict:
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

    server, mongo = raw.get("server", {}), raw.get("mongodb", {})
    embedded, auth = raw.get("embedded", {}), raw.get("auth", {})
    rl, lst = raw.get("ratelimit", {}), raw.get("list", {})

    def pick(name: str, default: object) -> object:
        return env[name] if env.get(name, "") != "" else default

    try:
        return Settings(
            host=str(pick("HOST", server.get("host", "127.0.0.1"))),
            port=int(pick("PORT", server.get("port", 8080))),
            log_level=str(pick("LOG_LEVEL", server.get("log_level", "INFO"))).upper(),
            max_body_bytes=int(server.get("max_body_bytes", 65536)),
            mongodb_uri=str(pick("MONGODB_URI", mongo.get("uri", ""))),
            mongodb_database=str(pick("MONGODB_DATABASE", mongo.get("database", "pollybot_leads"))),
            mongodb_driver=str(pick("MONGODB_DRIVER", mongo.get("driver", "pymongo"))),
            mongodb_w=_write_members(pick("MONGODB_W", mongo.get("w", 1))),
            mongodb_journal=_flag(
                pick("MONGODB_JOURNAL", mongo.get("journal", True)), "mongodb.journal"
            ),
            mongodb_timeout_ms=int(pick("MONGODB_TIMEOUT_MS", mongo.get("timeout_ms", 1500))),
            embedded_data_dir=Path(str(pick("PB_DATA_DIR", embedded.get("data_dir", "var")))),
            embedded_port=int(pick("PB_EMBEDDED_PORT", embedded.get("port", 27027))),
            embedded_cache_size=str(embedded.get("cache_size", "4G")),
            key_cache_seconds=float(auth.get("key_cache_seconds", 30)),
            redis_url=str(pick("REDIS_URL", rl.get("redis_url", ""))),
            ratelimit_enabled=_flag(
                pick("RATELIMIT_ENABLED", rl.get("enabled", True)), "ratelimit.enabled"
            ),
            ratelimit_capacity=int(rl.get("capacity", 100)),
            ratelimit_refill_per_second=float(rl.get("refill_per_second", 10.0)),
            auth_failure_capacity=int(rl.get("auth_failure_capacity", 20)),
            auth_failure_refill_per_second=float(rl.get("auth_failure_refill_per_second", 0.2)),
            redis_timeout_ms=int(rl.get("redis_timeout_ms", 100)),
            ratelimit_failure_policy=str(rl.get("failure_policy", "allow")),
            ratelimit_failure_backoff_seconds=float(rl.get("failure_backoff_seconds", 2.0)),
            ratelimit_failure_log_interval_seconds=float(
                rl.get("failure_log_interval_seconds", 30.0)
            ),
            trusted_proxies=tuple(rl.get("trusted_proxies", ())),
            list_max_count=int(lst.get("max_count", 0)),
            cursor_secret=str(env.get("CURSOR_SECRET", "")),
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, SettingsError):
            raise
        raise SettingsError(f"invalid configuration: {exc}") from exc
