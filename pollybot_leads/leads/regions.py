"""Each chatbot's ``defaultRegion``: the numbering plan that reads its phone numbers
written without ``+`` (leads/phones.py). Read from the chatbot's document and kept for
``ttl`` seconds (the key cache time: a region changed by the admin API reaches every
process within it, and the process that changed it at once, ``forget``)."""

from __future__ import annotations

import time
from typing import Any

# A region read this long ago is read again.
DEFAULT_TTL = 30.0
_MAX_KEPT = 10_000


class ChatbotRegions:
    def __init__(self, chatbots: Any, ttl: float = DEFAULT_TTL) -> None:
        self._chatbots = chatbots
        self._ttl = ttl
        self._kept: dict[str, tuple[float, str | None]] = {}

    async def of(self, chatbot_id: str) -> str | None:
        kept = self._kept.get(chatbot_id)
        now = time.monotonic()
        if kept is not None and kept[0] > now:
            return kept[1]
        doc = await self._chatbots.find_one({"_id": chatbot_id}, {"defaultRegion": 1})
        region = doc.get("defaultRegion") if doc else None
        if len(self._kept) >= _MAX_KEPT:
            self._kept.clear()
        self._kept[chatbot_id] = (now + self._ttl, region)
        return region

    def forget(self, chatbot_id: str) -> None:
        self._kept.pop(chatbot_id, None)
