"""Redis Cluster for the rate limiter: one :class:`~.resp.RespClient` per node, by slot.

:class:`ClusterClient` asks a seed node for the slot map (``CLUSTER SLOTS``) on first use
and sends each keyed command straight to the master serving the key's slot (CRC16 of the
key, or of its ``{hash tag}``, modulo 16384): one round trip, as on a single server. The
rate limiter's script touches one key, so every bucket lives in one slot.

* ``MOVED slot host:port`` (the slot has a new owner: resharding, a failover): the slot is
  pointed at the new node, the command is sent there once more, and the whole map is
  fetched again in the background.
* ``ASK slot host:port`` (the slot is being migrated and the key already left):
  ``ASKING`` and the command go to that node together, in one write; the map stays.
* A node that cannot be reached fails the command (the caller's failure policy applies)
  and has the map fetched again, from any node that answers, before the next command.

Commands without a key (``SCRIPT LOAD``, ``PING``) go to every master. Each node's client
is a small pool (``pool_size`` connections), as :class:`~.resp.RespClient` describes.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any

from .resp import DEFAULT_POOL_SIZE, RespClient
from .resp_protocol import ClusterError, RespConnectionError, pack_command
from .resp_url import ConnectionParams, parse_url

__all__ = ["SLOTS", "ClusterClient", "client_from_url", "key_slot"]

SLOTS = 16384
log = logging.getLogger("pollybot_leads.ratelimit")
_ASKING = pack_command("ASKING")


def key_slot(key: bytes | str) -> int:
    """Redis Cluster's hash slot of ``key`` (CRC16/XMODEM; only the ``{tag}`` if any)."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % SLOTS


def _redirect(error: ClusterError) -> tuple[str, int, tuple[str, int]] | None:
    """``MOVED 3999 127.0.0.1:6381`` -> ("MOVED", 3999, ("127.0.0.1", 6381)); else None."""
    parts = str(error).split()
    if len(parts) != 3 or parts[0] not in ("MOVED", "ASK"):
        return None
    host, _, port = parts[2].rpartition(":")
    try:
        return parts[0], int(parts[1]), (host.strip("[]"), int(port))
    except ValueError:
        return None


class ClusterClient:
    """A Redis Cluster client; the same command methods as :class:`~.resp.RespClient`."""

    def __init__(
        self,
        seeds: list[tuple[str, int]] | tuple[tuple[str, int], ...],
        *,
        params: ConnectionParams | None = None,
        connect_timeout: float | None = None,
        command_timeout: float | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        if not seeds:
            raise ValueError("a Redis Cluster client needs at least one seed node")
        self.seeds = list(seeds)
        self._params = params or ConnectionParams(cluster=True)
        self._ssl = self._params.tls.context() if self._params.tls is not None else None
        self._connect_timeout, self._command_timeout = connect_timeout, command_timeout
        self._pool_size = pool_size
        self._nodes: dict[tuple[str, int], RespClient] = {}
        self._slots: list[RespClient | None] = [None] * SLOTS
        self._masters: list[RespClient] = []
        self._refreshing: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()  # clients of nodes no longer masters
        self._stale = True  # fetch the map before the next command
        self._closed = False
        self.refreshes = 0  # slot maps fetched so far

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ClusterClient:
        params = parse_url(url)
        if not params.cluster:
            raise ValueError("a cluster URL starts with redis+cluster:// or rediss+cluster://")
        return cls(params.seeds, params=params, **options)

    def __repr__(self) -> str:  # never the password
        scheme = "rediss+cluster" if self._ssl is not None else "redis+cluster"
        return f"<ClusterClient {scheme}://{','.join(f'{h}:{p}' for h, p in self.seeds)}>"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def nodes(self) -> dict[tuple[str, int], RespClient]:
        """The node clients made so far, by address."""
        return dict(self._nodes)

    def node_for(self, key: bytes | str) -> RespClient | None:
        """The client the map sends ``key`` to now (None before the map is known)."""
        return self._slots[key_slot(key)]

    # commands

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Awaitable[Any]:
        """``EVALSHA`` sent to the master of its first key's slot."""
        if numkeys < 1:
            raise ValueError("EVALSHA on Redis Cluster needs a key to route by")
        key = keys_and_args[0]
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        node = self._slots[slot]
        if node is not None and not self._stale:
            data = node.pack_evalsha(sha, numkeys, keys_and_args)
        else:
            data = pack_command("EVALSHA", sha, numkeys, *keys_and_args)
        return self._send_keyed(slot, data)

    def execute_keyed(self, key: bytes | str, *args: Any) -> Awaitable[Any]:
        """Any command, sent to the master of ``key``'s slot."""
        return self._send_keyed(key_slot(key), pack_command(*args))

    async def _send_keyed(self, slot: int, data: bytes) -> Any:
        node = self._slots[slot]
        if node is None or self._stale:
            await self._refresh()
            node = self._slots[slot]
            if node is None:
                raise ClusterError(f"CLUSTERDOWN no node serves slot {slot}")
        try:
            return await node.send_packed(data)
        except ClusterError as exc:
            redirect = _redirect(exc)
            if redirect is None:
                raise
            kind, moved_slot, address = redirect
            target = self._node(address)
            if kind == "MOVED":
                self._slots[moved_slot] = target
                self._refresh_soon()
                return await target.send_packed(data)
            asking, reply = await target.send_many([_ASKING, data])
            del asking
            if isinstance(reply, BaseException):
                raise reply from None
            return reply
        except OSError:  # refused, reset, a connect timeout: RespConnectionError included
            self._stale = True  # a node is gone: maybe a failover; ask again next time
            raise

    async def _each_master(self, *args: Any) -> list[Any]:
        if self._stale or not self._masters:
            await self._refresh()
        return list(await asyncio.gather(*(node.execute_command(*args) for node in self._masters)))

    async def script_load(self, script: str) -> str:
        """Load ``script`` on every master; its SHA1 as text."""
        shas = {bytes(sha).decode() for sha in await self._each_master("SCRIPT", "LOAD", script)}
        if len(shas) != 1:
            raise ClusterError(f"the masters disagree on the script's SHA1: {sorted(shas)}")
        return shas.pop()

    async def ping(self) -> bool:
        """True when every master answers PING."""
        return all(reply == b"PONG" for reply in await self._each_master("PING"))

    # the slot map

    def _node(self, address: tuple[str, int]) -> RespClient:
        node = self._nodes.get(address)
        if node is None:
            host, port = address
            node = RespClient(
                host,
                port,
                ssl=self._ssl,
                username=self._params.username,
                password=self._params.password,
                connect_timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
                pool_size=self._pool_size,
            )
            self._nodes[address] = node
        return node

    def _refresh_soon(self) -> None:
        if self._refreshing is None and not self._closed:
            task = asyncio.get_running_loop().create_task(self._fetch_map())
            task.add_done_callback(self._refresh_done)
            self._refreshing = task

    def _refresh_done(self, task: asyncio.Task[None]) -> None:
        if self._refreshing is task:
            self._refreshing = None
        if not task.cancelled() and task.exception() is not None:
            log.debug("Redis Cluster: fetching the slot map failed: %s", task.exception())

    async def _refresh(self) -> None:
        """Fetch the map now (one fetch shared by every caller waiting for it)."""
        if self._closed:
            raise RespConnectionError("the Redis client is closed")
        self._refresh_soon()
        task = self._refreshing
        if task is not None:
            await asyncio.shield(task)

    async def _fetch_map(self) -> None:
        known = [address for address, node in self._nodes.items() if node in self._masters]
        candidates = list(dict.fromkeys([*known, *self.seeds, *self._nodes]))
        errors: list[str] = []
        for address in candidates:
            try:
                reply = await self._node(address).execute_command("CLUSTER", "SLOTS")
            except (OSError, ClusterError) as exc:
                errors.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            self._apply_map(reply, address[0])
            return
        raise RespConnectionError(
            "no Redis Cluster node answered CLUSTER SLOTS: " + "; ".join(errors)
        )

    def _apply_map(self, reply: list[Any], asked_host: str) -> None:
        slots: list[RespClient | None] = [None] * SLOTS
        masters: dict[tuple[str, int], RespClient] = {}
        for entry in reply:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            host = bytes(master[0]).decode() or asked_host  # "" : the node asked
            address = (host, int(master[1]))
            node = masters.get(address) or self._node(address)
            masters[address] = node
            for slot in range(start, end + 1):
                slots[slot] = node
        self._slots = slots
        self._masters = list(masters.values())
        self._stale = False
        self.refreshes += 1
        for address in [a for a, node in self._nodes.items() if a not in masters]:
            closing = asyncio.get_running_loop().create_task(self._nodes.pop(address).aclose())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    def disconnect(self) -> None:
        for node in self._nodes.values():
            node.disconnect()

    async def aclose(self) -> None:
        """Close every node's connections; idempotent."""
        self._closed = True
        task, self._refreshing = self._refreshing, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        nodes, self._nodes = list(self._nodes.values()), {}
        await asyncio.gather(*(node.aclose() for node in nodes))


def client_from_url(
    url: str,
    *,
    connect_timeout: float | None = None,
    command_timeout: float | None = None,
    pool_size: int = DEFAULT_POOL_SIZE,
) -> RespClient | ClusterClient:
    """The client a Redis URL asks for: :class:`ClusterClient` for ``redis+cluster://`` and
    ``rediss+cluster://``, else :class:`~.resp.RespClient`. ``ValueError`` on a bad URL."""
    params = parse_url(url)
    options: dict[str, Any] = {
        "connect_timeout": connect_timeout,
        "command_timeout": command_timeout,
        "pool_size": pool_size,
    }
    if params.cluster:
        return ClusterClient(params.seeds, params=params, **options)
    return RespClient.from_params(params, **options)
