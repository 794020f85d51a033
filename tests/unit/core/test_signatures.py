"""Signed webhooks (core/signatures.py): Stripe's ``t=...,v1=...`` header, several secrets during a rotation, the
tolerance window both ways, malformed headers refused with a reason, and the comparison made in constant time."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from payment_examples.core.errors import PaymentExamplesError
from payment_examples.core.signatures import (
    REASONS,
    SignatureVerificationError,
    sign,
    verify_signature,
)

OLD = "whsec_old_0123456789abcdef0123456789abcdef"
NEW = "whsec_new_fedcba9876543210fedcba9876543210"
T = 1_767_225_600  # 2026-01-01T00:00:00Z
BODY = b'{"id":"evt_1","type":"payment.captured"}'


def reason_of(body: bytes | str, header: str | None, secrets: list[str], **options: object) -> str:
    with pytest.raises(SignatureVerificationError) as caught:
        verify_signature(body, header, secrets, now=T, **options)
    return caught.value.reason


def test_header_is_stripes_format_with_one_v1_per_secret_newest_first() -> None:
    header = sign(BODY, [NEW, OLD], T)
    expected_new = hmac.new(NEW.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    expected_old = hmac.new(OLD.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={T},v1={expected_new},v1={expected_old}"


def test_round_trip_returns_the_timestamp() -> None:
    assert verify_signature(BODY, sign(BODY, [NEW], T), [NEW], now=T) == T


@pytest.mark.parametrize("held", [[NEW], [OLD], [NEW, OLD], [OLD, NEW]])
def test_during_a_rotation_either_secret_verifies(held: list[str]) -> None:
    assert verify_signature(BODY, sign(BODY, [NEW, OLD], T), held, now=T) == T


def test_a_merchant_with_the_old_secret_alone_keeps_verifying_while_both_are_sent_and_fails_after() -> None:
    assert verify_signature(BODY, sign(BODY, [NEW, OLD], T), [OLD], now=T) == T
    assert reason_of(BODY, sign(BODY, [NEW], T), [OLD]) == "mismatch"  # the sender dropped the old secret


def test_a_merchant_holding_both_verifies_before_and_after_the_switch() -> None:
    assert verify_signature(BODY, sign(BODY, [OLD], T), [NEW, OLD], now=T) == T
    assert verify_signature(BODY, sign(BODY, [NEW], T), [NEW, OLD], now=T) == T


def test_tampered_body_wrong_secret_and_changed_timestamp_are_mismatches() -> None:
    header = sign(BODY, [NEW], T)
    assert reason_of(BODY.replace(b"captured", b"refunded"), header, [NEW]) == "mismatch"
    assert reason_of(BODY + b" ", header, [NEW]) == "mismatch"
    assert reason_of(BODY, header, [OLD]) == "mismatch"
    refreshed = header.replace(f"t={T}", f"t={T + 1}")  # a replayer cannot move t without the secret
    assert reason_of(BODY, refreshed, [NEW]) == "mismatch"


def test_the_mismatch_message_says_what_was_wrong_without_the_expected_signature() -> None:
    header = sign(BODY, [NEW], T)
    with pytest.raises(SignatureVerificationError) as caught:
        verify_signature(b"{}", header, [NEW, OLD], now=T)
    message = str(caught.value)
    assert "no v1 signature" in message and "2 secret(s)" in message
    for secret in (NEW, OLD):
        assert secret not in message
        assert hmac.new(secret.encode(), f"{T}.{{}}".encode(), hashlib.sha256).hexdigest() not in message
    assert header.split("v1=")[1] not in message  # nor the one sent


def test_the_error_is_a_400_problem_of_the_package() -> None:
    error = SignatureVerificationError("stale", "old")
    assert isinstance(error, PaymentExamplesError)
    assert (error.http_status, error.title, error.reason) == (400, "Invalid signature", "stale")
    with pytest.raises(ValueError, match="unknown reason"):
        SignatureVerificationError("bogus", "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("now", "reason"),
    [(T + 301, "stale"), (T - 301, "future"), (T + 10**6, "stale"), (T - 10**6, "future")],
)
def test_outside_the_tolerance_either_way_is_refused(now: int, reason: str) -> None:
    with pytest.raises(SignatureVerificationError) as caught:
        verify_signature(BODY, sign(BODY, [NEW], T), [NEW], now=now)
    assert caught.value.reason == reason
    assert "tolerance of 300 s" in str(caught.value)


@pytest.mark.parametrize("now", [T - 300, T - 0.5, T, T + 299.9, T + 300])
def test_inside_the_tolerance_is_accepted_at_both_edges(now: float) -> None:
    assert verify_signature(BODY, sign(BODY, [NEW], T), [NEW], now=now) == T


def test_the_tolerance_is_configurable() -> None:
    header = sign(BODY, [NEW], T)
    assert verify_signature(BODY, header, [NEW], 5, now=T + 5) == T
    assert verify_signature(BODY, header, [NEW], 0, now=T) == T  # 0: the very second only
    with pytest.raises(SignatureVerificationError) as caught:
        verify_signature(BODY, header, [NEW], 5, now=T + 6)
    assert caught.value.reason == "stale"


def test_the_system_clock_by_default() -> None:
    import time

    now = int(time.time())
    assert verify_signature(BODY, sign(BODY, [NEW], now), [NEW]) == now
    with pytest.raises(SignatureVerificationError) as caught:
        verify_signature(BODY, sign(BODY, [NEW], now - 3600), [NEW])
    assert caught.value.reason == "stale"


def test_a_forgery_is_a_mismatch_even_when_it_is_also_stale() -> None:
    """The signature is checked first: stale/future only ever describe authentic messages."""
    assert reason_of(BODY, sign(BODY, [OLD], T - 3600), [NEW]) == "mismatch"


def test_several_v1_and_unknown_schemes_in_any_order() -> None:
    good = sign(BODY, [NEW], T).split(",")[1]
    header = f"v0=abc,v1={'0' * 64},t={T},scheme=x,{good}"
    assert verify_signature(BODY, header, [NEW], now=T) == T
    assert verify_signature(BODY, f" t={T} , {good} ", [NEW], now=T) == T  # spaces around items


@pytest.mark.parametrize("header", [None, "", "   "])
def test_no_header_is_missing(header: str | None) -> None:
    assert reason_of(BODY, header, [NEW]) == "missing"


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("v1=abc", "no t= timestamp"),
        (f"t={T},t={T},v1=abc", "2 t= timestamps"),
        ("t=,v1=abc", "not whole Unix seconds"),
        ("t=abc,v1=abc", "not whole Unix seconds"),
        ("t=1.5,v1=abc", "not whole Unix seconds"),
        ("t=-1,v1=abc", "not whole Unix seconds"),
        ("t=+1767225600,v1=abc", "not whole Unix seconds"),
        ("t=1_767_225_600,v1=abc", "not whole Unix seconds"),
        ("t=١٧٦٧٢٢٥٦٠٠,v1=abc", "not whole Unix seconds"),  # digits int() would take
        ("t=1767225600000,v1=abc", "not whole Unix seconds"),  # milliseconds
        ("t=" + "9" * 5000 + ",v1=abc", "not whole Unix seconds"),
        (f"t={T};v1=abc", "not whole Unix seconds"),
        (f"t={T},v1abc", "key=value"),
        (f"t={T},,v1=abc", "key=value"),
        ("garbage", "key=value"),
        (f"T={T},v1=abc", "no t= timestamp"),
    ],
)
def test_malformed_headers_say_what_is_wrong(header: str, words: str) -> None:
    with pytest.raises(SignatureVerificationError) as caught:
        verify_signature(BODY, header, [NEW], now=T)
    assert caught.value.reason == "malformed"
    assert words in str(caught.value)


@pytest.mark.parametrize("header", [f"t={T}", f"t={T},v0=abc", f"t={T},V1=abc"])
def test_a_timestamp_without_v1_is_no_signature(header: str) -> None:
    assert reason_of(BODY, header, [NEW]) == "no_signature"


@pytest.mark.parametrize("v1", ["", "zz", "é" * 64, "\udcff", "0" * 64, "A" * 1000])
def test_garbage_v1_values_are_mismatches_never_crashes(v1: str) -> None:
    assert reason_of(BODY, f"t={T},v1={v1}", [NEW]) == "mismatch"


def test_unicode_body_str_is_utf8_and_bytes_are_used_exactly() -> None:
    text = '{"name":"Zoë ☕","amount":100}'
    header = sign(text, [NEW], T)
    assert verify_signature(text.encode("utf-8"), header, [NEW], now=T) == T
    assert verify_signature(bytearray(text.encode("utf-8")), header, [NEW], now=T) == T
    assert verify_signature(memoryview(text.encode("utf-8")), header, [NEW], now=T) == T
    assert reason_of(text.encode("utf-16"), header, [NEW]) == "mismatch"
    raw = b"\xff\xfe not utf-8"  # bytes are signed as they are, even when they are no text
    assert verify_signature(raw, sign(raw, [NEW], T), [NEW], now=T) == T
    assert reason_of(raw.decode("latin-1"), sign(raw, [NEW], T), [NEW]) == "mismatch"


def test_unicode_secrets_are_utf8_keys() -> None:
    secret = "clé-secrète-☕-0123456789abcdef0123"
    expected = hmac.new(secret.encode("utf-8"), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, [secret], T) == f"t={T},v1={expected}"
    assert verify_signature(BODY, sign(BODY, [secret], T), [secret], now=T) == T


def test_the_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    assert reason_of(BODY, f"t={T},v1={'0' * 64},v1={'1' * 64}", [NEW, OLD]) == "mismatch"
    assert len(calls) == 4  # every candidate against every secret, none by ==
    calls.clear()
    assert verify_signature(BODY, sign(BODY, [NEW], T), [NEW], now=T) == T
    assert len(calls) == 1


def test_the_constant_time_comparison_alone_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid signature is refused when compare_digest says no: there is no other comparison behind it."""
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: False)
    assert reason_of(BODY, sign(BODY, [NEW], T), [NEW]) == "mismatch"


@pytest.mark.parametrize("secrets", [[], ()])
def test_no_secrets_is_a_programming_error(secrets: list[str]) -> None:
    with pytest.raises(ValueError, match="no secrets"):
        verify_signature(BODY, sign(BODY, [NEW], T), secrets, now=T)
    with pytest.raises(ValueError, match="no secrets"):
        sign(BODY, secrets, T)


def test_caller_mistakes_are_type_and_value_errors_not_verification_failures() -> None:
    header = sign(BODY, [NEW], T)
    with pytest.raises(TypeError, match="not one secret"):
        verify_signature(BODY, header, NEW, now=T)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not one secret"):
        sign(BODY, NEW, T)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty string"):
        verify_signature(BODY, header, [NEW, ""], now=T)
    with pytest.raises(TypeError, match="raw bytes"):
        verify_signature({"id": "evt_1"}, header, [NEW], now=T)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="raw bytes"):
        sign(7, [NEW], T)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str or None"):
        verify_signature(BODY, header.encode(), [NEW], now=T)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerance"):
        verify_signature(BODY, header, [NEW], -1, now=T)
    for timestamp in (1.5, "1767225600", True, None):
        with pytest.raises(TypeError, match="whole Unix seconds"):
            sign(BODY, [NEW], timestamp)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        sign(BODY, [NEW], -1)


def test_every_reason_is_reachable() -> None:
    header = sign(BODY, [NEW], T)
    seen = {
        reason_of(BODY, None, [NEW]),
        reason_of(BODY, "t=x,v1=y", [NEW]),
        reason_of(BODY, f"t={T}", [NEW]),
        reason_of(b"x", header, [NEW]),
    }
    for now in (T + 301, T - 301):
        with pytest.raises(SignatureVerificationError) as caught:
            verify_signature(BODY, header, [NEW], now=now)
        seen.add(caught.value.reason)
    assert seen == set(REASONS)
