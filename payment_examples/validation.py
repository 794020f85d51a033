"""Small input validators shared by the domain operations and the handlers."""

from __future__ import annotations

from payment_examples.errors import ValidationError

MAX_IDENTIFIER_LENGTH = 255


def identifier(field: str, value: object, *, max_length: int = MAX_IDENTIFIER_LENGTH) -> str:
    """A non-empty printable string of at most ``max_length`` characters (ids, idempotency keys, actors)."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if not value:
        raise ValidationError(field, "must not be empty")
    if len(value) > max_length:
        raise ValidationError(field, f"must be at most {max_length} characters, got {len(value)}")
    if not value.isprintable():
        raise ValidationError(field, "must contain printable characters only")
    return value


def optional_text(field: str, value: object, *, max_length: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if len(value) > max_length:
        raise ValidationError(field, f"must be at most {max_length} characters, got {len(value)}")
    return value
