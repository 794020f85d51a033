"""Every payment and customer has one verifiable audit chain without sensitive values (a payment's is projected
from the table's stream: crashes, redelivery and gaps are tested in test_projection.py)."""

from __future__ import annotations

import boto3

from payment_examples.harness.consumer import drain
from payment_examples.payments.service import PaymentService
from tests.conftest import scan_everything

M = "merchant-1"
PAN = "4111111111111111"


def _actions(service: PaymentService, payment_id: str) -> list[tuple[str, str | None]]:
    return [(e.action, e.event_id) for e in service.audit.history(f"payment#{payment_id}")]


def test_create_capture_refund_is_one_verified_chain(service: PaymentService) -> None:
    p = service.create_payment(M, "k-1", 1000, "USD", description="for alice@example.com", request_id="req-1")
    service.authorize(M, p.payment.id, actor="api")
    service.capture(M, p.payment.id, actor="api")
    service.refund(M, p.payment.id, actor="support-7", amount=400)
    drain()  # the stream's consumer writes the entries
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
    drain()

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
