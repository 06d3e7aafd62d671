"""Webhooks: events fanned out to endpoints, signed, delivered and retried.

- :mod:`.signing`: secrets and the two signature schemes sent on every delivery.
- :mod:`.payload`: the one rendering of an event (the feed and deliveries share it).
- :mod:`.targets`: which URLs and addresses may be sent to.
- :mod:`.retry`: when the next attempt is due.
- :mod:`.delivery`: the dispatcher and the sender, run by :class:`.delivery.WebhookWorker`.

The store side is ``webhooks/repository.py``; the HTTP API is ``webhooks/routes.py`` and
``webhooks/feed_routes.py``.
"""
