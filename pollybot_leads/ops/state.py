"""The operations endpoints' mutable per-app state, under its key."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web


@dataclass
class OpsState:
    draining: bool = False  # set when the server stops listening (SIGTERM): /readyz is 503


ops_state_key = web.AppKey("ops_state", OpsState)
