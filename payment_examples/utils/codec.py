"""Exact JSON round trips for stored results, and canonical hashing of request payloads.

Plain JSON would turn ``Decimal("1.50")`` into a float or a string and a tuple into a list, so a replay would not
equal the original. Values are encoded with tags for the types JSON lacks; anything that cannot come back
exactly (sets, tuples, bytes, custom objects, non-string keys) is refused up front with ``TypeError``.
"""

from __future__ import annotations

import hashlib
import json
import math
from decimal import Decimal
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
    """SHA-256 of a canonical JSON form: key order and whitespace do not matter, types and values do."""
    try:
        canonical = encode(payload)
    except TypeError as error:
        raise TypeError(f"the payload cannot be hashed: {error}") from None
    return hashlib.sha256(canonical.encode()).hexdigest()
