"""The operations endpoints' mutable per-app state (under keys.ops_state_key)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class OpsState:
    draining: bool = False  # set when the server stops listening (SIGTERM): /readyz is 503
