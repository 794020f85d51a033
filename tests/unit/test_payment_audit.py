"""Every payment and customer has one verifiable audit chain, written crash-safely and without sensitive values."""

from __future__ import annotations

import boto3
import pytest

from payment_examples.models import payment_id_for
from payment_examples.payments import PaymentService
from tests.conftest import scan_everything

M = "merchant-1"
PAN = "4111111111111111"


def _actions(service: PaymentService, payment_id: str) -> list[tuple[str, str | None]]:
    return [(e.action, e.event_id) for e in service.audit.history(f"payment#{payment_id}")]


def _crash_once(monkeypatch, target, name: str) -> None:
    original = getattr(target, name)
    calls = []

    def crash(*args, **kwargs):
        if not calls:
            calls.append(1)
            raise RuntimeError(f"crash in {name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, crash)


def test_create_capture_refund_is_one_verified_chain(service: PaymentService) -> None:
    p = service.create_payment(M, "k-1", 1000, "USD", description="for alice@example.com", request_id="req-1")
    service.authorize(M, p.payment.id, actor="api")
    service.capture(M, p.payment.id, actor="api")
    service.refund(M, p.payment.id, actor="support-7", amount=400)
    trail = service.audit_trail(M, p.payment.id)
    assert [(e.action, e.actor, e.event_id) for e in trail] == [
        ("create", M, "v1"), ("authorize", "api", "v2"), ("capture", "api", "v3"), ("refund", "support-7", "v4"),
    ]  # fmt: skip
    assert trail[0].request_id == "req-1"
    assert {"field": "description", "changed": True} in trail[0].changes  # free text: never shown
    assert trail[2].changes == (
        {"field": "captured_amount", "from": 0, "to": 1000},
        {"field": "status", "from": "authorized", "to": "captured"},
    )
    assert trail[3].detail == {"amount": "400"}
    assert service.audit.verify(f"payment#{p.payment.id}").ok


def test_a_crash_between_the_commit_and_the_audit_entry_is_repaired_by_the_next_transition(
    service: PaymentService, monkeypatch
) -> None:
    p = service.create_payment(M, "k-1", 1000, "USD").payment
    service.authorize(M, p.id, actor="api")
    _crash_once(monkeypatch, service.audit, "track")
    with pytest.raises(RuntimeError, match="crash in track"):
        service.capture(M, p.id, actor="api")
    assert service.get_payment(M, p.id).status == "captured"  # committed, but neither audited nor recorded
    assert _actions(service, p.id) == [("create", "v1"), ("authorize", "v2")]
    service.refund(M, p.id, actor="api", amount=100)
    assert _actions(service, p.id) == [("create", "v1"), ("authorize", "v2"), ("capture", "v3"), ("refund", "v4")]
    repaired = list(service.audit.history(f"payment#{p.id}"))[2]
    assert repaired.detail == {"amount": "1000", "repaired": "true"}
    assert repaired.changes == ({"field": "status", "from": "authorized", "to": "captured"},)
    assert [t.type for t in service.transactions(M, p.id)] == ["authorize", "capture", "refund"]
    assert service.audit.verify(f"payment#{p.id}").ok


def test_a_crash_after_the_audit_entry_does_not_append_it_twice(service: PaymentService, monkeypatch) -> None:
    p = service.create_payment(M, "k-1", 1000, "USD").payment
    _crash_once(monkeypatch, service, "record_transaction")
    with pytest.raises(RuntimeError):
        service.authorize(M, p.id, actor="api")
    service.capture(M, p.id, actor="api")
    assert _actions(service, p.id) == [("create", "v1"), ("authorize", "v2"), ("capture", "v3")]


def test_a_terminal_transition_left_unaudited_is_repaired_when_the_trail_is_read(service, monkeypatch) -> None:
    p = service.create_payment(M, "k-1", 1000, "USD").payment
    _crash_once(monkeypatch, service.audit, "track")
    with pytest.raises(RuntimeError):
        service.void(M, p.id, actor="api", reason="customer asked")
    assert [e.action for e in service.audit_trail(M, p.id)] == ["create", "void"]


def test_a_create_left_unaudited_is_written_by_the_replay_or_the_first_transition(service, monkeypatch) -> None:
    _crash_once(monkeypatch, service.audit, "track")
    with pytest.raises(RuntimeError):
        service.create_payment(M, "k-1", 1000, "USD")
    replay = service.create_payment(M, "k-1", 1000, "USD")  # the client's retry
    assert replay.replayed and _actions(service, replay.payment.id) == [("create", "v1")]

    _crash_once(monkeypatch, service.audit, "track")
    with pytest.raises(RuntimeError):
        service.create_payment(M, "k-2", 500, "EUR")
    second = service.get_payment(M, payment_id_for(M, "k-2"))
    service.authorize(M, second.id, actor="api")  # no retry of the create came first
    trail = list(service.audit.history(f"payment#{second.id}"))
    assert [(e.action, e.event_id) for e in trail] == [("create", "v1"), ("authorize", "v2")]
    assert trail[0].detail == {"repaired": "true"}
    assert {"field": "amount", "from": None, "to": 500} in trail[0].changes


def test_audited_false_writes_no_entries(models, clock) -> None:
    service = PaymentService(models=models, clock=clock, audited=False)
    p = service.create_payment(M, "k-1", 1000, "USD").payment
    service.authorize(M, p.id, actor="api")
    assert list(models.audit.scan()) == []


def test_no_sensitive_value_reaches_any_audit_entry(customers, field_settings, clock) -> None:
    """A customer's whole life (email, card with CVV, reveals, rotation of the email) and a payment with free text:
    the audit table holds none of the email, card number, CVV, metadata, description or any configured secret
    (the card's brand, last four digits and expiry are shown, as PCI DSS allows)."""
    created = customers.create_customer("merchant-a", "Alice.Smith@Example.com", actor="signup")
    customers.update_email("merchant-a", created.id, "alice.new@example.org", actor="support")
    card = customers.add_payment_method("merchant-a", created.id, PAN, 12, 2030, cvv="9071", actor="checkout")
    customers.reveal_card_number("merchant-a", card.method.id, actor="processor", purpose="processor")
    customers.get_customer("merchant-a", created.id, actor="agent", purpose="support")
    customers.remove_payment_method("merchant-a", created.id, card.method.id, actor="support")
    payments = PaymentService(clock=clock)
    p = payments.create_payment("merchant-a", "k", 100, "USD", description="ring Alice Smith",
                                metadata={"note": "private-note"}).payment  # fmt: skip
    payments.void("merchant-a", p.id, actor="api", reason="Alice Smith changed her mind")

    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    table = customers.models.audit.Meta.table_name
    entries = dynamodb.scan(TableName=table)["Items"]
    assert len(entries) == 8
    for item in entries:
        text = repr({k: v for k, v in item.items() if k not in ("hash", "prev")}).lower()
        for secret in ("alice", "example", PAN, "9071", "private-note", "changed her mind",
                       field_settings.field_keys.split(":")[1][:12].lower()):  # fmt: skip
            assert secret not in text, (secret, item["action"])
    assert "alice" in scan_everything(field_settings).lower()  # the payment's own description still holds it
    for entity in {item["entity"]["S"] for item in entries}:
        assert customers.audit.verify(entity).ok
