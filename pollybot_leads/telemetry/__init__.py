"""Metrics and logs: what every layer reports through, so it sits below them all."""
