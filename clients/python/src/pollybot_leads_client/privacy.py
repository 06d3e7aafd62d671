"""``client.privacy``: erase a person from the workspace, and its suppression list (a key
with the ``privacy:write`` scope and no chatbot restriction)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from ._core import Call, data_of
from ._send import AsyncSender, SyncSender
from .models import Erasure, Suppression

BASE = "/api/v1/privacy"


def _erasure(email: str | None, phone: str | None, suppress: bool) -> Call:
    if (email is None) == (phone is None):
        raise ValueError("give exactly one of email and phone")
    body: dict[str, Any] = {"suppress": suppress, "confirm": True}
    body.update({"email": email} if email is not None else {"phone": phone})
    return Call("POST", BASE + "/erasures", json=body)


def _page(after: str | None) -> Call:
    return Call("GET", BASE + "/suppressions", {"after": after, "limit": 100})


def _lift(suppression_id: str) -> Call:
    return Call("DELETE", f"{BASE}/suppressions/{suppression_id}")


def _suppressions(data: dict[str, Any]) -> tuple[list[Suppression], str | None]:
    found = [Suppression.from_json(s) for s in data["suppressions"]]
    return found, data["pagination"].get("nextAfter")


class Privacy:
    def __init__(self, client: SyncSender) -> None:
        self._c = client

    def erase(
        self, *, email: str | None = None, phone: str | None = None, suppress: bool = False
    ) -> Erasure:
        """Delete every lead of the workspace with this email or phone, in all its
        chatbots, for good (calling this is the confirmation); ``suppress`` also refuses
        the address from then on."""
        return Erasure.from_json(data_of(self._c.send(_erasure(email, phone, suppress))))

    def suppressions(self) -> Iterator[Suppression]:
        """Every suppression of the workspace, oldest first, paging as it goes."""
        after: str | None = None
        while True:
            found, after = _suppressions(data_of(self._c.send(_page(after))))
            yield from found
            if not after:
                return

    def lift_suppression(self, suppression_id: str) -> None:
        data_of(self._c.send(_lift(suppression_id)))


class AsyncPrivacy:
    def __init__(self, client: AsyncSender) -> None:
        self._c = client

    async def erase(
        self, *, email: str | None = None, phone: str | None = None, suppress: bool = False
    ) -> Erasure:
        return Erasure.from_json(data_of(await self._c.send(_erasure(email, phone, suppress))))

    async def suppressions(self) -> AsyncIterator[Suppression]:
        after: str | None = None
        while True:
            found, after = _suppressions(data_of(await self._c.send(_page(after))))
            for each in found:
                yield each
            if not after:
                return

    async def lift_suppression(self, suppression_id: str) -> None:
        data_of(await self._c.send(_lift(suppression_id)))
