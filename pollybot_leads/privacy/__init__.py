"""Erasure on request and the suppression list (``/api/v1/privacy/…``)."""
