"""Small input validators shared by the domain operations and the handlers."""

from __future__ import annotations

from payment_examples.core.errors import ValidationError

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


MAX_METADATA_KEYS = 20
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500


def metadata(field: str, value: object) -> dict[str, str] | None:
    """Merchant metadata: at most 20 pairs of a printable key (1-40 characters) and a string value (<= 500)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError(field, f"must be an object of string values, got {type(value).__name__}")
    if len(value) > MAX_METADATA_KEYS:
        raise ValidationError(field, f"must have at most {MAX_METADATA_KEYS} keys, got {len(value)}")
    for key, item in value.items():
        identifier(f"{field}.<key>", key, max_length=MAX_METADATA_KEY_LENGTH)
        if item is None:
            raise ValidationError(f"{field}.{key}", "must be a string, got NoneType")
        optional_text(f"{field}.{key}", item, max_length=MAX_METADATA_VALUE_LENGTH)
    return dict(value)
