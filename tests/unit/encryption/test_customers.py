"""CustomerService (moto in-process, KMS included): the email is never stored or logged in clear, lookups by email
go through the blind index and stay within the merchant, every decryption is recorded first, and a ciphertext
moved onto another customer does not decrypt."""

from __future__ import annotations

import io
import logging
from dataclasses import replace

import boto3
import pytest

from payment_examples.core.clock import SeededIds
from payment_examples.core.errors import ValidationError, VersionConflictError
from payment_examples.encryption.customers import CustomerNotFoundError, CustomerService, access_entity, audit_entity
from payment_examples.encryption.fields import FieldBindingError
from payment_examples.harness.consumer import drain
from payment_examples.tables.models import get_models
from tests.conftest import V1_V2, scan_everything


def test_create_and_get_round_trip_without_the_email_in_clear_anywhere(customers, field_settings) -> None:
    created = customers.create_customer("merchant-a", "Alice.Smith@Example.com", actor="signup")
    assert created.email == "alice.smith@example.com" and created.key_version == "v1"
    stored = scan_everything(field_settings)
    assert "alice" not in stored.lower() and "example.com" not in stored.lower()
    got = customers.get_customer("merchant-a", created.id, actor="agent-7", purpose="support")
    assert got.email == "alice.smith@example.com" and got.version == created.version


def test_every_decryption_is_recorded_with_who_when_field_version_and_purpose(customers, field_settings, clock) -> None:
    created = customers.create_customer("merchant-a", "alice@example.com", actor="signup")
    customers.get_customer("merchant-a", created.id, actor="agent-7", purpose="support")
    [entry] = customers.audit.history(access_entity(created.id))  # appended in the request, before decrypting
    assert (entry.seq, entry.actor, entry.action) == (1, "agent-7", "decrypt")
    drain()  # the create's entry is projected from the stream onto the customer's own chain
    [create] = customers.audit.history(audit_entity(created.id))
    assert (create.seq, create.actor, create.action, create.event_id) == (1, "signup", "create", "v1")
    assert create.changes == (  # the email only as changed
        {"field": "email", "changed": True},
        {"field": "key_version", "from": None, "to": "v1"},
        {"field": "merchant_id", "from": None, "to": "merchant-a"},
    )
    assert entry.detail == {
        "field": "email",
        "purpose": "support",
        "key_version": "v1",
        "merchant_id": "merchant-a",
    }
    assert entry.at.tzinfo is not None


def test_no_audit_record_means_no_clear_value(customers, field_settings, monkeypatch) -> None:
    created = customers.create_customer("merchant-a", "alice@example.com", actor="signup")
    Audit = get_models(field_settings).audit

    def refuse(self, *args, **kwargs):
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(Audit, "save", refuse)
    decrypted = []
    monkeypatch.setattr(customers.encryptor, "decrypt", lambda *a: decrypted.append(a) or "x")
    with pytest.raises(RuntimeError, match="audit log unavailable"):
        customers.get_customer("merchant-a", created.id, actor="agent-7", purpose="support")
    assert decrypted == []


def test_find_by_email_reads_only_the_match_and_stays_within_the_merchant(customers, monkeypatch) -> None:
    alice_a = customers.create_customer("merchant-a", "alice@example.com", actor="signup")
    alice_b = customers.create_customer("merchant-b", "alice@example.com", actor="signup")
    for i in range(5):
        customers.create_customer("merchant-a", f"other{i}@example.com", actor="signup")
    decrypt = customers.encryptor.decrypt
    calls = []
    monkeypatch.setattr(
        customers.encryptor, "decrypt", lambda stored, binding: calls.append(binding) or decrypt(stored, binding)
    )
    found = customers.find_customer_by_email("merchant-a", " ALICE@example.com", actor="agent", purpose="support")
    assert found is not None and found.id == alice_a.id and found.email == "alice@example.com"
    assert [b.item_key for b in calls] == [f"customer#{alice_a.id}"]  # nobody else was decrypted
    assert (
        customers.find_customer_by_email("merchant-b", "alice@example.com", actor="a", purpose="support").id
        == alice_b.id
    )
    assert customers.find_customer_by_email("merchant-c", "alice@example.com", actor="a", purpose="support") is None
    assert customers.find_customer_by_email("merchant-a", "nobody@example.com", actor="a", purpose="support") is None


def test_another_merchants_customer_reads_as_not_found(customers) -> None:
    created = customers.create_customer("merchant-a", "alice@example.com", actor="signup")
    with pytest.raises(CustomerNotFoundError):
        customers.get_customer("merchant-b", created.id, actor="agent", purpose="support")
    with pytest.raises(CustomerNotFoundError):
        customers.get_customer("merchant-a", "cus_missing", actor="agent", purpose="support")


def test_an_email_copied_onto_another_customer_does_not_decrypt(customers, field_settings) -> None:
    alice = customers.create_customer("merchant-a", "alice@example.com", actor="signup")
    bob = customers.create_customer("merchant-a", "bob@example.com", actor="signup")
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    table = get_models(field_settings).customer.Meta.table_name
    alice_email = dynamodb.get_item(TableName=table, Key={"id": {"S": alice.id}})["Item"]["email"]
    dynamodb.update_item(TableName=table, Key={"id": {"S": bob.id}}, UpdateExpression="SET email = :e",
                         ExpressionAttributeValues={":e": alice_email})  # fmt: skip
    with pytest.raises(FieldBindingError, match="does not match this item"):
        customers.get_customer("merchant-a", bob.id, actor="agent", purpose="support")


def test_update_email_reindexes_and_is_conditional_on_the_version(customers) -> None:
    created = customers.create_customer("merchant-a", "alice@example.com", actor="signup")
    updated = customers.update_email("merchant-a", created.id, "alice@new.example", actor="alice")
    assert updated.version == created.version + 1
    assert customers.find_customer_by_email("merchant-a", "alice@example.com", actor="a", purpose="support") is None
    found = customers.find_customer_by_email("merchant-a", "alice@new.example", actor="a", purpose="support")
    assert found is not None and found.id == created.id
    with pytest.raises(VersionConflictError):
        customers.update_email("merchant-a", created.id, "x@example.com", actor="alice", expected_version=1)


def test_lookups_work_across_key_versions(field_settings, clock) -> None:
    old = CustomerService(field_settings, clock=clock, ids=SeededIds(2))
    created = old.create_customer("merchant-a", "alice@example.com", actor="signup")
    rotated = CustomerService(
        replace(field_settings, field_keys=V1_V2, field_key_version="v2"), clock=clock, ids=SeededIds(3)
    )
    found = rotated.find_customer_by_email("merchant-a", "alice@example.com", actor="a", purpose="support")
    assert found is not None and found.id == created.id and found.key_version == "v1"
    moved = rotated.update_email("merchant-a", created.id, "alice@example.com", actor="rotation")
    assert moved.key_version == "v2"
    assert (
        rotated.find_customer_by_email("merchant-a", "alice@example.com", actor="a", purpose="support").id == created.id
    )


def test_list_customers_decrypts_nothing(customers, monkeypatch) -> None:
    for i in range(3):
        customers.create_customer("merchant-a", f"c{i}@example.com", actor="signup")
    monkeypatch.setattr(customers.encryptor, "decrypt", lambda *a: pytest.fail("decrypted while listing"))
    listed = customers.list_customers("merchant-a", limit=2)
    assert len(listed) == 2 and all(c.email is None for c in listed)
    with pytest.raises(ValidationError, match="limit"):
        customers.list_customers("merchant-a", limit=0)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.create_customer("merchant-a", "not-an-email", actor="x"), "email"),
        (lambda s: s.create_customer("", "a@example.com", actor="x"), "merchant_id"),
        (lambda s: s.find_customer_by_email("merchant-a", "a@example.com", actor="x", purpose="curiosity"), "purpose"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(customers, field_settings, call, field) -> None:
    before = scan_everything(field_settings)
    with pytest.raises(ValidationError) as error:
        call(customers)
    assert error.value.field == field
    assert scan_everything(field_settings) == before


def test_the_email_never_reaches_the_logs(customers) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    package_logger = logging.getLogger("payment_examples")
    package_logger.addHandler(handler)
    try:
        created = customers.create_customer("merchant-a", "secret.person@example.com", actor="signup")
        customers.get_customer("merchant-a", created.id, actor="agent", purpose="support")
        customers.update_email("merchant-a", created.id, "secret.other@example.com", actor="agent")
    finally:
        package_logger.removeHandler(handler)
    logged = stream.getvalue()
    assert "customer created" in logged and "secret." not in logged


@pytest.mark.slow  # seconds: make test runs it, make test-fast does not
def test_1000_customer_writes_cost_at_most_one_kms_call_per_1000_messages(field_settings, clock) -> None:
    # The bound: one GenerateDataKey per merchant and purpose per 1,000 messages (the cache's message limit) or
    # per 5 minutes, whichever comes first; here one merchant, one purpose, 1,000 writes in well under 5 minutes.
    from payment_examples.encryption.fields import encryptor_for

    counted = []
    encryptor = encryptor_for(field_settings, on_kms_call=counted.append)
    service = CustomerService(field_settings, encryptor=encryptor, clock=clock, ids=SeededIds(11))
    for i in range(1000):
        service.create_customer("merchant-a", f"customer{i}@example.com", actor="import")
    assert counted == ["GenerateDataKey"]
