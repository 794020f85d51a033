"""Exact JSON round trips for stored results, and canonical hashing of request payloads.

Plain JSON would turn ``Decimal("1.50")`` into a float or a string and a tuple into a list, so a replay would not
equal the original. Values are encoded with tags for the types JSON lacks; anything that cannot come back
exactly (sets, tuples, bytes, custom objects, non-string keys) is refused up front with ``TypeError``.
Subclasses of ``str`` and ``int`` (e.g. ``StrEnum``/``IntEnum`` members) are stored as their plain values and
come back equal, as plain ``str``/``int``.

Payload hashes compare requests, not encodings: numbers are hashed by value (``100``, ``100.0``,
``Decimal("1E+2")`` and ``Decimal("100.00")`` are the same amount), key order and whitespace do not matter,
and ``True`` stays distinct from ``1``.
"""

from __future__ import annotations

import hashlib
import json
import math
from decimal import Context, Decimal
from typing import Any

_TAGS = ("$decimal", "$float", "$map")


def encode(value: Any) -> str:
    """Serialise ``value`` so that ``decode(encode(value)) == value`` with the same types; ``TypeError`` if not."""
    return json.dumps({"v": _to_json(value, "result")}, separators=(",", ":"), sort_keys=True, allow_nan=False)


def decode(text: str) -> Any:
    return _from_json(json.loads(text)["v"])


def _to_json(value: Any, path: str) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{path}: {value!r} cannot be stored")
        return {"$float": repr(value)}
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"{path}: {value!r} cannot be stored")
        return {"$decimal": str(value)}
    if type(value) is list:
        return [_to_json(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if type(value) is dict:
        encoded = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: key {key!r} is not a string; it would not come back as it was")
            encoded[key] = _to_json(item, f"{path}.{key}")
        return {"$map": encoded} if len(encoded) == 1 and next(iter(encoded)) in _TAGS else encoded
    raise TypeError(f"{path}: a {type(value).__name__} cannot be stored and replayed exactly")


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    if isinstance(value, dict):
        if len(value) == 1:
            ((tag, inner),) = value.items()
            if tag == "$decimal":
                return Decimal(inner)
            if tag == "$float":
                return float(inner)
            if tag == "$map":
                return {key: _from_json(item) for key, item in inner.items()}
        return {key: _from_json(item) for key, item in value.items()}
    return value


def payload_hash(payload: Any) -> str:
    """SHA-256 of a canonical form of ``payload`` (see the module docstring); ``TypeError`` if not JSON-like."""
    try:
        canonical = encode(_canonical_numbers(payload))
    except TypeError as error:
        raise TypeError(f"the payload cannot be hashed: {error}") from None
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canonical_numbers(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        if not number.is_finite():
            return value  # refused by encode()
        if number.is_zero():
            return {"$number": "0"}  # 0, -0.0, Decimal("0.00")
        exact = Context(prec=len(number.as_tuple().digits))  # never rounds: as many digits as the number has
        return {"$number": str(number.normalize(exact))}
    if isinstance(value, list | tuple):
        return [_canonical_numbers(item) for item in value] if type(value) is list else value
    if type(value) is dict:
        return {key: _canonical_numbers(item) for key, item in value.items()}
    return value
