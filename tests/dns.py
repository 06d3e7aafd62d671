"""Host names that resolve to chosen addresses, for the webhook target checks.

The checks run on what name resolution answers (``loop.getaddrinfo``, which both the
creation check and aiohttp's threaded resolver call), and no test controls a real DNS
zone: ``resolve_names(monkeypatch, {"host.test": "2002:7f00:1::1"})`` makes the running
loop answer those names with those addresses, and every other name as before.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import pytest

# The IPv6 forms that carry an IPv4 address, each around a refused IPv4 one:
# (host name, address it resolves to, the IPv4 address it carries).
EMBEDDING_FORMS = [
    ("sixtofour-loopback.test", "2002:7f00:1::1", "127.0.0.1"),
    ("sixtofour-private.test", "2002:a00:1::1", "10.0.0.1"),
    ("sixtofour-metadata.test", "2002:a9fe:a9fe::1", "169.254.169.254"),
    ("nat64-loopback.test", "64:ff9b::7f00:1", "127.0.0.1"),
    ("nat64-metadata.test", "64:ff9b::a9fe:a9fe", "169.254.169.254"),
    # Teredo: server 65.54.227.120, client 127.0.0.1 / 10.0.0.1 (stored XOR 0xffffffff).
    ("teredo-loopback.test", "2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),
    ("teredo-private.test", "2001:0:4136:e378:8000:63bf:f5ff:fffe", "10.0.0.1"),
    ("mapped-private.test", "::ffff:10.0.0.1", "10.0.0.1"),
    ("compatible-loopback.test", "::127.0.0.1", "127.0.0.1"),
    ("translated-metadata.test", "::ffff:0:169.254.169.254", "169.254.169.254"),
]


def resolve_names(monkeypatch: pytest.MonkeyPatch, names: dict[str, str]) -> None:
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in names:
            return await real(host, port, *args, **kwargs)
        address = ipaddress.ip_address(names[name])
        number = int(port or 0)
        if address.version == 6:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (str(address), number, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (str(address), number))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
