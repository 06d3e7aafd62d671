"""What the timing scripts share: a SecantusDB of their own for the run, and their report
(printed, and written as JSON)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pollybot_leads.store.embedded import EmbeddedStore, free_port


def run_on_own_store(
    prefix: str, run: Callable[[str, int], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """``run(uri, store_pid)`` against a SecantusDB started for it, in a temporary
    directory, and discarded after it."""
    with tempfile.TemporaryDirectory(prefix=prefix) as data_dir:
        store = EmbeddedStore(Path(data_dir), free_port())
        store.start()
        try:
            assert store.process is not None
            return asyncio.run(run(store.uri, store.process.pid))
        finally:
            store.discard()


def report(result: dict[str, Any], out: str | None = None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
