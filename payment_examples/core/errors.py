"""One small exception tree. Handlers map ``http_status`` to RFC 9457 problem responses."""

from __future__ import annotations

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from pynamodb.exceptions import PynamoDBException

# DynamoDB's error code for a failed condition expression (what every conditional write here may answer).
CONDITIONAL_CHECK_FAILED = "ConditionalCheckFailedException"
THROTTLING_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded", "Throttling"}
)
RETRYABLE_CODES = THROTTLING_CODES | {"InternalServerError", "ServiceUnavailable"}


class PaymentExamplesError(Exception):
    """Base of every error this package raises on purpose."""

    http_status = 500
    title = "Internal error"


class ConfigurationError(PaymentExamplesError):
    """The environment or the arguments configure something impossible."""

    title = "Configuration error"


class ValidationError(PaymentExamplesError, ValueError):
    """Bad input. ``field`` names what was wrong, so an API can say so."""

    http_status = 400
    title = "Invalid request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class MethodNotAllowedError(PaymentExamplesError):
    """The resource exists but not for this method; ``allow`` lists the methods it supports (RFC 9110)."""

    http_status = 405
    title = "Method not allowed"

    def __init__(self, message: str, *, allow: str) -> None:
        super().__init__(message)
        self.allow = allow


class NotFoundError(PaymentExamplesError, LookupError):
    http_status = 404
    title = "Not found"


class PaymentNotFoundError(NotFoundError):
    def __init__(self, payment_id: str) -> None:
        super().__init__(f"payment {payment_id!r} not found")
        self.payment_id = payment_id


class PaymentMovedError(PaymentNotFoundError):
    """The payment is not live in this account: it moved to another account, or is arriving and not yet active
    (transfers.py). Reads as not found; the message never names the other account."""

    def __init__(self, payment_id: str, state: str) -> None:
        NotFoundError.__init__(self, f"payment {payment_id!r} is not live in this account ({state})")
        self.payment_id = payment_id
        self.state = state


class ConflictError(PaymentExamplesError):
    http_status = 409
    title = "Conflict"


class IllegalTransitionError(ConflictError):
    """The state machine does not allow this operation from the payment's current status (or amounts forbid it).

    A 422: the request is understood and final (repeating it changes nothing). ``allowed``, when the refusal knows
    the balances (``plan_transition`` fills it), is what the payment allows instead: ``{"refund": {"max_amount":
    700}}`` (``payments.state_machine.allowed_actions``); its problem body says it, with the payment's status and
    the operation refused."""

    http_status = 422
    title = "Operation not allowed"

    def __init__(
        self, payment_id: str, status: str, operation: str, reason: str = "", *, allowed: dict | None = None
    ) -> None:
        status, operation = str(status), str(operation)  # plain strings, also for StrEnum members
        detail = f"cannot {operation} payment {payment_id!r} in status {status!r}"
        super().__init__(f"{detail}: {reason}" if reason else detail)
        self.payment_id = payment_id
        self.status = status
        self.operation = operation
        self.allowed = allowed

    def problem_extra(self) -> dict:
        # ``payment_status``: a problem's ``status`` is its HTTP status code (RFC 9457)
        extra = {"payment_id": self.payment_id, "payment_status": self.status, "operation": self.operation}
        if self.allowed is not None:
            extra["allowed"] = self.allowed
        return extra


class VersionConflictError(ConflictError):
    """Someone else changed the payment since it was read (optimistic locking). Nothing was written."""

    def __init__(self, payment_id: str, expected_version: int | None) -> None:
        super().__init__(f"payment {payment_id!r} changed since version {expected_version}; re-read and retry")
        self.payment_id = payment_id
        self.expected_version = expected_version


class DuplicatePaymentError(ConflictError):
    """The (merchant, idempotency key) pair already created a payment with different details."""

    http_status = 422
    title = "Idempotency key reused"

    def __init__(self, merchant_id: str, idempotency_key: str, payment_id: str) -> None:
        super().__init__(
            f"idempotency key {idempotency_key!r} of merchant {merchant_id!r} already created payment "
            f"{payment_id!r} with different details"
        )
        self.merchant_id = merchant_id
        self.idempotency_key = idempotency_key
        self.payment_id = payment_id


class AuthenticationError(PaymentExamplesError):
    """The caller's merchant identity could not be established (no or bad credentials). Never says which secret."""

    http_status = 401
    title = "Unauthorized"


class IdempotencyError(PaymentExamplesError):
    """Base of the idempotency middleware's errors."""


class IdempotencyKeyError(ValidationError):
    """The idempotency key is empty, too long or not printable."""


class IdempotencyInProgressError(IdempotencyError, ConflictError):
    """Another request with this key is being processed right now; retry after ``retry_after`` seconds."""

    title = "Request in progress"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"a request with this idempotency key is in progress; retry in {retry_after} s")
        self.retry_after = retry_after


class IdempotencyKeyReuseError(IdempotencyError):
    """The key was already used with a different payload."""

    http_status = 422
    title = "Idempotency key reused"

    def __init__(self) -> None:
        super().__init__("this idempotency key was already used with a different request payload")


class IdempotencyResultError(IdempotencyError):
    """The operation ran but its result cannot be stored for replay (not serialisable, or too large).

    The key is then marked as completed with this error, so a retry reports it instead of silently running the
    side effect again."""

    title = "Result cannot be stored"


class UnknownAccountError(NotFoundError):
    """No account of that name is in the registry (accounts.py); the message lists the names it knows."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown account {name!r}; known accounts: {', '.join(known)}")
        self.name = name
        self.known = known


class AccountAccessError(PaymentExamplesError):
    """STS would not give credentials for an account (e.g. AccessDenied). Names the account and the STS error code,
    never a credential."""

    title = "Account access error"

    def __init__(self, name: str, role_arn: str, code: str) -> None:
        super().__init__(f"cannot assume role {role_arn} for account {name!r}: {code}")
        self.name = name
        self.role_arn = role_arn
        self.code = code


class UnavailableError(PaymentExamplesError):
    """A dependency did not answer in time or asked us to slow down; the request may be retried with the same
    idempotency key after ``retry_after`` seconds (503 + ``Retry-After``). Nothing half-written is left that a
    retry or ``recover`` does not finish."""

    http_status = 503
    title = "Service unavailable"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineUnavailableError(UnavailableError):
    """DynamoDB throttled us or could not be reached, and the client's retries (with backoff) ran out."""


class ProcessorUnavailableError(UnavailableError):
    """The card processor throttled every attempt: it charged nothing."""


class ProcessorTimeoutError(UnavailableError):
    """The card processor did not answer in time: the charge may or may not have happened. A retry with the same
    idempotency key asks the processor (``find``) before it sends anything again."""


class EngineError(PaymentExamplesError):
    """The embedded engine (local moto server process) could not start or answer."""

    title = "Engine error"


# -- what AWS answers ------------------------------------------------------------------------------------------------


def error_code(error: BaseException) -> str | None:
    """DynamoDB's error code, through PynamoDB's wrapper (``cause_response_code``) or from a botocore ClientError."""
    if isinstance(error, PynamoDBException):
        # Not ``cause_response_code``: it raises AttributeError when the cause has no parsed response (a read
        # timeout: the answer was lost), which is exactly when the caller must see a retryable error.
        response = getattr(error.cause, "response", None)
        return response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code")
    return None


def is_retryable(error: BaseException) -> bool:
    """Throttling, a server-side error or a lost connection: the same request may succeed later."""
    cause = error.cause if isinstance(error, PynamoDBException) and error.cause is not None else error
    if isinstance(cause, BotocoreConnectionError | HTTPClientError):
        return True
    if error_code(error) in RETRYABLE_CODES:
        return True
    if isinstance(cause, ClientError):  # PynamoDB keeps only the code; a plain ClientError has the status too
        return cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500
    return False
