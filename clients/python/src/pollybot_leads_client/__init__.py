"""The Python client of the PollyBot Leads API."""

from ._core import __version__
from .client import AsyncClient, Client
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GoneError,
    NotFoundError,
    PermissionDeniedError,
    PollyBotError,
    PreconditionFailedError,
    RateLimitError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    WebhookVerificationError,
)
from .models import (
    Attempt,
    BatchResult,
    DeletedLead,
    Duplicate,
    Event,
    Lead,
    StatusChange,
    Webhook,
)
from .webhooks import verify_webhook

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncClient",
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "BatchResult",
    "Client",
    "ConflictError",
    "DeletedLead",
    "Duplicate",
    "Event",
    "GoneError",
    "Lead",
    "NotFoundError",
    "PermissionDeniedError",
    "PollyBotError",
    "PreconditionFailedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "StatusChange",
    "UnprocessableEntityError",
    "Webhook",
    "WebhookVerificationError",
    "__version__",
    "verify_webhook",
]
