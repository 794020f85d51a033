"""The core: what every layer above uses, with no payment knowledge.

Settings (``config``: the only module that reads environment variables), ``secrets`` (Parameter Store / Secrets
Manager), boto3 clients (``aws``), clocks and ids (``clock``), amounts in minor units (``money``), input checks
(``validation``), the error hierarchy (``errors``), the structured logger (``logs``), signed webhooks
(``signatures``) and latency percentiles (``measure``; import the function ``measure`` from ``core.measure``: here
the name is the module's). No notebook is about the core; every notebook uses it. It imports nothing else of the
package (tests/layers.py).
"""

from __future__ import annotations

from payment_examples.core.aws import client, dynamodb
from payment_examples.core.clock import (
    Clock,
    FixedClock,
    IdFactory,
    RandomIds,
    SeededIds,
    SteppingClock,
    SystemClock,
    name_based_id,
)
from payment_examples.core.config import (
    ENGINES,
    Settings,
    get_settings,
    pop_settings,
    push_settings,
    require_api_settings,
    use_settings,
)
from payment_examples.core.errors import (
    ConfigurationError,
    ConflictError,
    DuplicatePaymentError,
    EngineError,
    IdempotencyError,
    IdempotencyInProgressError,
    IdempotencyKeyError,
    IdempotencyKeyReuseError,
    IdempotencyResultError,
    IllegalTransitionError,
    NotFoundError,
    PaymentExamplesError,
    PaymentMovedError,
    PaymentNotFoundError,
    ValidationError,
    VersionConflictError,
    error_code,
)
from payment_examples.core.logs import log_level, logger
from payment_examples.core.measure import Latency, percentile
from payment_examples.core.money import Money, currency_exponent, validate_amount
from payment_examples.core.secrets import ParameterProvider, load_secrets
from payment_examples.core.signatures import (
    PROCESSOR_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    SignatureVerificationError,
    sign,
    verify_signature,
)
from payment_examples.core.validation import identifier, metadata, optional_text

__all__ = [
    "Clock",
    "ConfigurationError",
    "ConflictError",
    "DuplicatePaymentError",
    "ENGINES",
    "EngineError",
    "FixedClock",
    "IdFactory",
    "IdempotencyError",
    "IdempotencyInProgressError",
    "IdempotencyKeyError",
    "IdempotencyKeyReuseError",
    "IdempotencyResultError",
    "IllegalTransitionError",
    "Latency",
    "Money",
    "NotFoundError",
    "ParameterProvider",
    "PaymentExamplesError",
    "PaymentMovedError",
    "PaymentNotFoundError",
    "PROCESSOR_SIGNATURE_HEADER",
    "RandomIds",
    "SeededIds",
    "Settings",
    "SIGNATURE_HEADER",
    "SignatureVerificationError",
    "SteppingClock",
    "SystemClock",
    "ValidationError",
    "VersionConflictError",
    "client",
    "currency_exponent",
    "dynamodb",
    "error_code",
    "get_settings",
    "identifier",
    "load_secrets",
    "log_level",
    "logger",
    "metadata",
    "name_based_id",
    "optional_text",
    "percentile",
    "pop_settings",
    "push_settings",
    "require_api_settings",
    "sign",
    "use_settings",
    "validate_amount",
    "verify_signature",
]
