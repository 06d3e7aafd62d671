"""Idempotency keys: the middleware that replays a request's first result, and its
stored records."""
