"""Idempotency (notebook 01): ``IdempotencyMiddleware`` runs an operation once per key (a conditional put of an
IN_PROGRESS record, the result stored under the key, replays answered from it), and ``codec`` stores results
compactly with the payload hash that detects a key reused with another request.
"""

from __future__ import annotations

from payment_examples.idempotency.codec import decode, encode, payload_hash
from payment_examples.idempotency.middleware import COMPLETED, DEFAULT_SCOPE, FinalError, IdempotencyMiddleware, Outcome

__all__ = [
    "COMPLETED",
    "DEFAULT_SCOPE",
    "FinalError",
    "IdempotencyMiddleware",
    "Outcome",
    "decode",
    "encode",
    "payload_hash",
]
