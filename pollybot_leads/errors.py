"""One error hierarchy; the error middleware maps each to the JSON envelope."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status = 500
    code = "INTERNAL_ERROR"
    message = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details
        self.headers = headers or {}


class ValidationFailed(AppError):
    status, code, message = 400, "VALIDATION_ERROR", "Invalid data"


class InvalidJson(AppError):
    status, code, message = 400, "INVALID_JSON", "Request body must be a JSON object"


class ConfirmationRequired(AppError):
    status, code = 400, "CONFIRMATION_REQUIRED"
    message = "Deletion is permanent: confirm with ?confirm=true or X-Confirm-Delete: true"


class Unauthorized(AppError):
    status, code, message = 401, "UNAUTHORIZED", "Invalid or missing API key"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("WWW-Authenticate", 'Bearer realm="pollybot-leads"')


class InsufficientScope(AppError):
    status, code = 403, "INSUFFICIENT_SCOPE"
    message = "This API key may not do this: it lacks the scope the route needs"


class NotFound(AppError):
    status, code, message = 404, "NOT_FOUND", "Resource not found"


class ChatbotNotFound(NotFound):
    code, message = "CHATBOT_NOT_FOUND", "Chatbot not found"


class LeadNotFound(NotFound):
    code, message = "LEAD_NOT_FOUND", "Lead not found"


class LeadMerged(LeadNotFound):
    """A lead merged into another (details.mergedInto), for as long as its tombstone is
    kept (30 days by default)."""

    code, message = "LEAD_MERGED", "This lead was merged into another"


class WebhookNotFound(NotFound):
    code, message = "WEBHOOK_NOT_FOUND", "Webhook endpoint not found"


class WorkspaceNotFound(NotFound):
    code, message = "WORKSPACE_NOT_FOUND", "Workspace not found"


class ApiKeyNotFound(NotFound):
    code, message = "API_KEY_NOT_FOUND", "API key not found"


class AuditRecordNotFound(NotFound):
    code, message = "AUDIT_RECORD_NOT_FOUND", "Audit record not found"


class MethodNotAllowed(AppError):
    status, code, message = 405, "METHOD_NOT_ALLOWED", "Method not allowed"


class PayloadTooLarge(AppError):
    status, code, message = 413, "PAYLOAD_TOO_LARGE", "Request body is too large"


class UnsupportedMediaType(AppError):
    status, code, message = 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json"


class RateLimited(AppError):
    status, code, message = 429, "RATE_LIMITED", "Too many requests"


class ServiceUnavailable(AppError):
    status, code, message = 503, "SERVICE_UNAVAILABLE", "A backing store is unavailable"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("Retry-After", "5")


class Overloaded(ServiceUnavailable):
    """Refused before it was started (nothing was read or written): the service has more
    work than it can do within the request's budget."""

    message = "The service is busy; retry shortly"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {}).setdefault("Retry-After", "1")
        super().__init__(message, **kwargs)


class IdempotencyInProgress(AppError):
    status, code = 409, "IDEMPOTENCY_IN_PROGRESS"
    message = "A request with this Idempotency-Key is still running; retry shortly"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("Retry-After", "1")


class PreconditionFailed(AppError):
    status, code = 412, "PRECONDITION_FAILED"
    message = "The lead has changed: If-Match does not match its current ETag"


class LeadDeleted(AppError):
    status, code = 410, "LEAD_DELETED"
    message = (
        "The result kept for this Idempotency-Key held a lead since deleted: it is not "
        "replayed and nothing was done (a new write needs a new key)"
    )


class DuplicateExternalId(AppError):
    status, code = 409, "DUPLICATE_EXTERNAL_ID"
    message = "Another lead of this chatbot has this externalId: nothing was written"


class Suppressed(AppError):
    status, code = 422, "SUPPRESSED"
    message = (
        "This email or phone was erased and is suppressed in this workspace: nothing was "
        "stored (lift the suppression to capture it again)"
    )


class SuppressionNotFound(NotFound):
    code, message = "SUPPRESSION_NOT_FOUND", "Suppression not found"


class IdempotencyKeyReused(AppError):
    status, code = 422, "IDEMPOTENCY_KEY_REUSED"
    message = "This Idempotency-Key was used with a different method, path or body"
