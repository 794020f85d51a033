"""Signed webhooks: Stripe's ``t=<unix seconds>,v1=<hex>`` scheme, for our webhooks and the processor's notifications.

The header carries a timestamp and one ``v1`` per active secret: ``v1 = hex(HMAC-SHA256(secret, f"{t}.{body}"))``.

* **Why the timestamp is signed.** A signature over the body alone stays valid forever: anyone who captures one
  request (a proxy log, a debugging paste) can replay it next year. Signing ``t`` with the body binds the moment of
  sending to the message, so ``t`` cannot be refreshed without the secret, and the receiver refuses a ``t`` more
  than ``tolerance`` seconds old ("stale") *or ahead* ("future": else a signature minted for a later time, or by a
  sender whose clock is wrong, would stay valid until long after it was sent). Inside the window a replay is still
  possible, and delivery is at least once anyway: receivers de-duplicate on the event id.
* **Why a constant-time comparison.** ``==`` stops at the first differing character, so its duration tells an
  attacker how much of a guessed signature is right, and a signature can be found one character at a time.
  ``hmac.compare_digest`` takes the same time whatever the contents.
* **How rotation works.** While an endpoint has two active secrets (``WebhookEndpoints.rotate_secret`` keeps the
  previous one for a day) every request carries two ``v1``, newest first, and any one that verifies is enough: a
  merchant still configured with the old secret keeps verifying, one that already deployed the new secret verifies
  too, and no delivery fails at the switch. A merchant may also pass both secrets while they roll their own fleet.
  When the old secret expires the sender drops its ``v1``.
* The signature is checked before the timestamp, so "stale" and "future" only ever describe *authentic* messages
  (a replay, a skewed clock) and "mismatch" a forgery or a wrong secret: the ``reason`` is worth logging.

What a merchant copies (the body must be the raw bytes received, before any JSON parsing)::

    import json, os
    from payment_examples.core.signatures import SignatureVerificationError, verify_signature

    SECRETS = os.environ["WEBHOOK_SECRETS"].split(",")  # "whsec_new,whsec_old" while you rotate

    def on_webhook(raw_body: bytes, headers) -> int:
        try:
            verify_signature(raw_body, headers.get("Payment-Signature"), SECRETS)
        except SignatureVerificationError as error:
            return 400  # log error.reason; never log the header or the secret
        event = json.loads(raw_body)  # parse only what was verified
        return 200 if process_once(event["id"], event) else 500  # at least once: de-duplicate on the id
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import Literal

from payment_examples.core.errors import PaymentExamplesError

SIGNATURE_HEADER = "Payment-Signature"  # on the webhooks we send to merchants
PROCESSOR_SIGNATURE_HEADER = "Processor-Signature"  # on the processor's notifications to us
DEFAULT_TOLERANCE_S = 300

Reason = Literal["missing", "malformed", "no_signature", "stale", "future", "mismatch"]
REASONS: tuple[Reason, ...] = ("missing", "malformed", "no_signature", "stale", "future", "mismatch")


class SignatureVerificationError(PaymentExamplesError):
    """A signed request did not verify. ``reason`` is one of ``REASONS``; the message says what was wrong and never
    contains an expected signature or a secret."""

    http_status = 400
    title = "Invalid signature"

    def __init__(self, reason: Reason, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}; one of {', '.join(REASONS)}")
        super().__init__(message)
        self.reason = reason


def sign(body: bytes | str, secrets: Sequence[str], timestamp: int) -> str:
    """The header value for ``body`` sent at ``timestamp`` (Unix seconds): one ``v1`` per secret, in the order given
    (pass the newest first)."""
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise TypeError(f"timestamp must be whole Unix seconds (an int), got {timestamp!r}")
    if timestamp < 0:
        raise ValueError(f"timestamp must be >= 0, got {timestamp}")
    payload = _payload(str(timestamp), _bytes(body))
    return ",".join([f"t={timestamp}", *(f"v1={_mac(secret, payload)}" for secret in _keys(secrets))])


def verify_signature(
    body: bytes | str,
    header: str | None,
    secrets: Sequence[str],
    tolerance: int = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> int:
    """Check ``header`` (the signature header's value) against ``body`` under any of ``secrets``; return its ``t``.

    Several ``v1`` are accepted (one matching is enough) and other schemes (``v0=``...) are ignored. ``now`` is Unix
    seconds (default: the system clock). Raises ``SignatureVerificationError`` for anything the sender got wrong,
    ``ValueError``/``TypeError`` for a caller's mistake (no secrets, a negative tolerance)."""
    data = _bytes(body)
    keys = _keys(secrets)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 seconds, got {tolerance}")
    t_text, signatures = _parse(header)
    payload = _payload(t_text, data)
    candidates = [s.encode("utf-8", "replace") for s in signatures]
    expected = [_mac(secret, payload).encode("ascii") for secret in keys]
    # Every candidate against every key, each comparison in constant time.
    if not any(hmac.compare_digest(e, c) for e in expected for c in candidates):
        raise SignatureVerificationError(
            "mismatch",
            f"no v1 signature ({len(candidates)} sent) matches the body under the {len(keys)} secret(s) held: "
            "a wrong or rotated-out secret, or a body changed after signing (verify the raw bytes received)",
        )
    t = int(t_text)
    current = time.time() if now is None else now
    if t < current - tolerance:
        raise SignatureVerificationError(
            "stale", f"signed {current - t:.0f} s ago, beyond the tolerance of {tolerance} s (a replay?)"
        )
    if t > current + tolerance:
        raise SignatureVerificationError(
            "future", f"signed {t - current:.0f} s in the future, beyond the tolerance of {tolerance} s (clock skew?)"
        )
    return t


def _parse(header: str | None) -> tuple[str, list[str]]:
    """``t`` as sent (the exact text that was signed) and the ``v1`` values."""
    if header is not None and not isinstance(header, str):
        raise TypeError(f"the signature header must be a str or None, got {type(header).__name__}")
    if header is None or not header.strip():
        raise SignatureVerificationError("missing", "no signature header, or an empty one")
    stamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureVerificationError("malformed", "signature header items must be key=value pairs")
        if key == "t":
            stamps.append(value)
        elif key == "v1":
            signatures.append(value)
    if len(stamps) != 1:
        problem = "has no t= timestamp" if not stamps else f"has {len(stamps)} t= timestamps"
        raise SignatureVerificationError("malformed", f"signature header {problem}")
    # ASCII digits only: int() would also take "+1", " 1", "1_000" and other scripts' digits.
    if not (stamps[0].isascii() and stamps[0].isdigit() and len(stamps[0]) <= 12):
        raise SignatureVerificationError("malformed", "signature header's t= is not whole Unix seconds")
    if not signatures:
        raise SignatureVerificationError("no_signature", "signature header has no v1= signature")
    return stamps[0], signatures


def _payload(t_text: str, body: bytes) -> bytes:
    return t_text.encode("ascii") + b"." + body


def _mac(secret: str, payload: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), payload, hashlib.sha256).hexdigest()


def _bytes(body: bytes | str) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise TypeError(f"body must be the raw bytes (or text) sent, got {type(body).__name__}")


def _keys(secrets: Sequence[str]) -> list[str]:
    if isinstance(secrets, str | bytes):  # a lone secret would be taken one character at a time
        raise TypeError("secrets must be a sequence of secrets, not one secret: pass [secret]")
    keys = list(secrets)
    if not keys:
        raise ValueError("no secrets to sign or verify with")
    for key in keys:
        if not isinstance(key, str) or not key:
            raise ValueError("every secret must be a non-empty string")
    return keys
