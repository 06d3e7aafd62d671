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


# IPv6 forms that carry an IPv4 address in their last 32 bits (beside IPv4-mapped, 6to4
# and Teredo, which the ipaddress module unwraps itself): NAT64's well-known prefix
# (RFC 6052), IPv4-translated (RFC 2765) and the deprecated IPv4-compatible form
# (RFC 4291; ``::`` and ``::1`` are themselves).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LAST_32_BITS = (
    (_NAT64, "a NAT64 address"),
    (ipaddress.IPv6Network("::ffff:0:0:0/96"), "an IPv4-translated address"),
    (ipaddress.IPv6Network("::/96"), "an IPv4-compatible address"),
)
# NAT64's local-use prefix (RFC 8215): where it puts the IPv4 address depends on the
# prefix length the network chose, so none is unwrapped; it is never a public address.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, each with the form that carries it:
    a connection to it reaches (through a relay or translator) that IPv4 address."""
    if ip.ipv4_mapped is not None:
        return [("an IPv4-mapped address", ip.ipv4_mapped)]
    if ip.sixtofour is not None:
        return [("a 6to4 address", ip.sixtofour)]
    if ip.teredo is not None:  # (server, client), the client already de-obfuscated
        server, client = ip.teredo
        return [("a Teredo address", client), ("a Teredo address", server)]
    if ip in (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1")):
        return []
    for network, form in _LAST_32_BITS:
        if ip in network:
            return [(form, ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))]
    return []


def _refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What kind of address ``ip`` is, when it is not public (or None)."""
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private or ip.is_reserved or ip.is_multicast or ip.is_unspecified:
        return "a private or reserved address"
    if not ip.is_global:
        return "not a public address"
    return None


def address_refused(address: str) -> str | None:
    """Why ``address`` may not be sent to without allow_private_targets, or None.

    An IPv6 address that carries an IPv4 one (IPv4-mapped, 6to4, Teredo, NAT64,
    IPv4-translated, IPv4-compatible) is refused when that IPv4 address is.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _LOCAL_NAT64:
            return f"{ip} is a local-use NAT64 address"
        for form, inner in _embedded_ipv4(ip):
            kind = _refusal(inner)
            if kind is not None:
                return f"{ip} is {form} of {inner}, {kind}"
        if ip.ipv4_mapped is not None or ip in _NAT64:
            return None  # the address reached is exactly that public IPv4 address
    kind = _refusal(ip)
    return None if kind is None else f"{ip} is {kind}"


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
