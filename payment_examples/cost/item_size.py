"""The exact size DynamoDB bills and stores for an item, in bytes.

DynamoDB prices every request by item size (1 KB write units, 4 KB read units) and stores each item with
100 bytes of overhead, so a cost estimate is only as good as its item sizes. The rules (AWS "Item sizes and
formats", refined by measurements against real DynamoDB; sources in tests/unit/cost/test_item_size.py):

* every attribute name counts, as UTF-8 bytes, also the keys inside maps;
* a string is its UTF-8 bytes, a binary its raw bytes (not base64);
* a number is stored in a base-100 form: one byte of exponent plus one byte per pair of significant digits,
  the pairs aligned on the decimal point (so ``1.2`` is ``01|20``: 3 bytes, ``12`` is ``12``: 2 bytes), plus
  one byte for a negative number; zero is 1 byte (see ``number_size``);
* a set is the sum of its members; null and boolean are 1 byte;
* a list or a map is 3 bytes plus 1 byte per element, plus its elements.

``item_size`` accepts an item in DynamoDB JSON (``{"name": {"S": "x"}}``, what the low-level client sends),
a plain boto3-resource-style dict (``{"name": "x", "amount": Decimal("12.5")}``), or a PynamoDB model instance.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from payment_examples.core import PaymentExamplesError

TYPE_TAGS = frozenset({"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"})
MAX_DIGITS = 38  # DynamoDB numbers: up to 38 significant digits
MAX_ITEM_BYTES = 400 * 1024


class ItemSizeError(PaymentExamplesError, ValueError):
    """An item DynamoDB would refuse, or a value this module cannot size (it names the attribute path)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '<item>'}: {message}")
        self.path = path


def item_size(item: Any, *, typed: bool | None = None) -> int:
    """The item's size in bytes. ``typed`` forces DynamoDB JSON (True) or plain values (False); by default an
    item whose values are all dicts, one of them a single type tag like ``{"S": ...}``, is DynamoDB JSON."""
    attributes = as_dynamodb_json(item, typed=typed)
    return sum(_name_size(name, name) + _value_size(value, name) for name, value in attributes.items())


def as_dynamodb_json(item: Any, *, typed: bool | None = None) -> dict[str, Any]:
    """The item as DynamoDB JSON (a PynamoDB model is serialized, a plain dict converted by boto3's
    ``TypeSerializer``); DynamoDB JSON is returned as it is."""
    serialize = getattr(item, "serialize", None)
    if callable(serialize) and not isinstance(item, Mapping):  # a PynamoDB model instance
        return serialize(null_check=False)
    if not isinstance(item, Mapping):
        raise ItemSizeError("", f"an item is a mapping of attribute names, not {type(item).__name__}")
    if typed is None:
        typed = bool(item) and _looks_typed(item)
    if typed:
        return dict(item)
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    converted = {}
    for name, value in item.items():
        try:
            converted[name] = serializer.serialize(value)
        except (TypeError, ValueError) as error:
            raise ItemSizeError(str(name), str(error)) from None
    return converted


def number_size(text: str | int | Decimal, path: str = "") -> int:
    """Bytes of a DynamoDB number: 1 for zero, else 1 + the base-100 digits (pairs aligned on the decimal
    point) + 1 if negative."""
    try:
        number = Decimal(str(text).strip())
    except InvalidOperation:
        raise ItemSizeError(path, f"{text!r} is not a number") from None
    if not number.is_finite():
        raise ItemSizeError(path, f"{text!r} is not a finite number (DynamoDB has no NaN or Infinity)")
    if number.is_zero():
        return 1
    sign, digits, exponent = number.as_tuple()
    significant = "".join(map(str, digits)).lstrip("0")  # not normalize(): it rounds to the context's precision
    stripped = significant.rstrip("0")
    exponent = int(exponent) + len(significant) - len(stripped)
    count = len(stripped)
    if count > MAX_DIGITS:
        raise ItemSizeError(path, f"{text!r} has {count} significant digits; DynamoDB keeps at most {MAX_DIGITS}")
    magnitude = count + int(exponent) - 1  # the power of ten of the leading digit
    if not -130 <= magnitude <= 125:
        raise ItemSizeError(path, f"{text!r} is outside DynamoDB's range (1E-130 to 9.9...E+125)")
    # A digit pair starts at every even power of ten; a leading digit at an even power sits alone in its pair.
    pairs = math.ceil((count + (1 if magnitude % 2 == 0 else 0)) / 2)
    return 1 + pairs + (1 if sign else 0)


def _looks_typed(item: Mapping[str, Any]) -> bool:
    values = list(item.values())
    return all(isinstance(v, Mapping) for v in values) and any(
        len(v) == 1 and next(iter(v)) in TYPE_TAGS for v in values
    )


def _name_size(name: Any, path: str) -> int:
    if not isinstance(name, str):
        raise ItemSizeError(path, f"attribute names are strings, not {type(name).__name__}")
    return len(name.encode("utf-8"))


def _value_size(value: Any, path: str) -> int:
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ItemSizeError(path, f"expected a DynamoDB JSON value like {{'S': 'x'}}, got {value!r:.60}")
    ((tag, content),) = value.items()
    if tag not in TYPE_TAGS:
        raise ItemSizeError(path, f"unknown type tag {tag!r} (expected one of {', '.join(sorted(TYPE_TAGS))})")
    if tag == "S":
        return _string_size(content, path)
    if tag == "N":
        return number_size(content, path)
    if tag == "B":
        return _binary_size(content, path)
    if tag in ("NULL", "BOOL"):
        return 1
    if tag in ("SS", "NS", "BS"):
        return _set_size(tag, content, path)
    if tag == "L":
        if not isinstance(content, list | tuple):
            raise ItemSizeError(path, f"L holds a list, not {type(content).__name__}")
        return 3 + sum(1 + _value_size(v, f"{path}[{i}]") for i, v in enumerate(content))
    if not isinstance(content, Mapping):
        raise ItemSizeError(path, f"M holds a mapping, not {type(content).__name__}")
    return 3 + sum(1 + _name_size(k, f"{path}.{k}") + _value_size(v, f"{path}.{k}") for k, v in content.items())


def _string_size(content: Any, path: str) -> int:
    if not isinstance(content, str):
        raise ItemSizeError(path, f"S holds a string, not {type(content).__name__}")
    return len(content.encode("utf-8"))


def _binary_size(content: Any, path: str) -> int:
    if isinstance(content, bytes | bytearray | memoryview):
        return len(content)
    value = getattr(content, "value", None)  # boto3's Binary wrapper
    if isinstance(value, bytes):
        return len(value)
    if isinstance(content, str):  # DynamoDB JSON on the wire: base64
        try:
            return len(base64.b64decode(content, validate=True))
        except binascii.Error:
            raise ItemSizeError(path, "B holds bytes or base64 text; this is not base64") from None
    raise ItemSizeError(path, f"B holds bytes, not {type(content).__name__}")


def _set_size(tag: str, content: Any, path: str) -> int:
    if isinstance(content, str | bytes) or not hasattr(content, "__iter__"):
        raise ItemSizeError(path, f"{tag} holds a list of members, not {type(content).__name__}")
    members = list(content)
    if not members:
        raise ItemSizeError(path, f"an empty set ({tag}) cannot be stored in DynamoDB")
    if len(set(map(str, members))) != len(members) and tag != "NS":
        raise ItemSizeError(path, f"{tag} has duplicate members")
    member = {"SS": _string_size, "NS": number_size, "BS": _binary_size}[tag]
    return sum(member(m, path) for m in members)
