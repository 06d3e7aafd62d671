"""Which URLs an endpoint may have, and which addresses a delivery may connect to.

A URL is checked when an endpoint is created or changed (its form, its scheme, and the
addresses its host has then) and every address is checked again when a delivery is
sent, after DNS resolution and on the very addresses the connection uses
(:class:`GuardedResolver`), so a name that later resolves to a private address (DNS
rebinding) is refused too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

URL_MAX = 2048
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = "(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# Scheme, a host name or IPv4 address (no user info, no IPv6 literal), an optional port,
# then any path and query of printable ASCII; no fragment.
URL_PATTERN = f'https?://{_LABEL}(?:\\.{_LABEL})*(?::{_PORT})?(?:[/?][!"$-~]*)?'
_URL_RE = re.compile(URL_PATTERN)
RESOLVE_TIMEOUT_SECONDS = 1.0


class TargetRefused(OSError):
    """An address configuration does not allow (an OSError: aiohttp wraps it)."""


def address_refused(address: str) -> str | None:
    """Why ``address`` may not be sent to without allow_private_targets, or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_private or ip.is_reserved or ip.is_multicast or ip.is_unspecified:
        return f"{ip} is a private or reserved address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


def url_problem(url: str, *, allow_http: bool) -> str | None:
    """Why ``url`` cannot be an endpoint's URL (form and scheme), or None."""
    if len(url) > URL_MAX:
        return f"At most {URL_MAX} characters."
    if not _URL_RE.fullmatch(url):
        return "Must be an absolute http(s) URL with a host name, without user info or fragment."
    if url.startswith("http://") and not allow_http:
        return "Must be https:// (http:// is not allowed by this server's configuration)."
    return None


def host_of(url: str) -> str:
    return URL(url).raw_host or ""


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def host_problem(host: str) -> str | None:
    """Why ``host`` may not be sent to without allow_private_targets, or None.

    A name that does not resolve now is accepted (it is checked again at each send).
    """
    if is_ip(host):
        return address_refused(host)
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return f"{host} is a loopback name"
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, 443, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS
        )
    except (OSError, TimeoutError, UnicodeError):
        return None
    for info in infos:
        reason = address_refused(str(info[4][0]))
        if reason:
            return f"{host} resolves to a refused address: {reason}"
    return None


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing names with any address that is not public."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            reason = address_refused(result["host"])
            if reason:
                raise TargetRefused(f"{host} resolves to a refused address: {reason}")
        return results

    async def close(self) -> None:
        await self._inner.close()


def refused_literal(url: str) -> str | None:
    """aiohttp does not resolve IP literals: they are checked here before sending."""
    host = host_of(url)
    return address_refused(host) if is_ip(host) else None


async def target_problem(url: str, *, allow_http: bool, allow_private: bool) -> str | None:
    """Every rule for an endpoint URL at creation: form, scheme, then its host's addresses."""
    problem = url_problem(url, allow_http=allow_http)
    if problem is None and not allow_private:
        problem = await host_problem(host_of(url))
    return problem
