"""Key rotation (moto in-process): interrupted midway and resumed, every item readable under the new key version and
KMS key, none lost, a re-run changes nothing, concurrent changes are not overwritten, and lookups by email and by
card keep working while the rotation runs."""

from __future__ import annotations

from dataclasses import replace

import boto3
import pytest

from payment_examples.cli import main
from payment_examples.core.clock import SeededIds
from payment_examples.core.config import use_settings
from payment_examples.encryption.card_vault import audit_entity as card_entity
from payment_examples.encryption.customers import CustomerService, audit_entity
from payment_examples.encryption.fields import EncryptionError
from payment_examples.encryption.key_rotation import rotate_keys
from payment_examples.harness.consumer import drain
from tests.conftest import V1_V2, scan_everything

VISA, MASTERCARD = "4111 1111 1111 1111", "5555 5555 5555 4444"


@pytest.fixture
def population(customers):
    """Six customers of two merchants, three with a card."""
    people = []
    for i in range(6):
        customer = customers.create_customer(f"merchant-{i % 2}", f"person{i}@example.com", actor="signup")
        if i % 2 == 0:
            customers.add_payment_method(customer.merchant_id, customer.id, VISA, 12, 2030, actor="checkout")
        people.append(customer)
    return people


@pytest.fixture
def rotated_settings(field_settings):
    new_key = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
    return replace(
        field_settings,
        field_keys=V1_V2,
        field_key_version="v2",
        kms_key_id=new_key,
        kms_previous_key_ids=(field_settings.kms_key_id,),
    )


class Crash(Exception):
    pass


@pytest.mark.slow  # seconds: make test runs it, make test-fast does not
def test_interrupted_then_resumed_then_idempotent(customers, population, rotated_settings, clock) -> None:
    service = CustomerService(rotated_settings, clock=clock, ids=SeededIds(5))
    seen = []

    def crash_after_four(kind: str, item_id: str, rotated: bool) -> None:
        seen.append(kind)
        if len(seen) == 4:
            raise Crash

    with pytest.raises(Crash):
        rotate_keys(service, page_size=2, on_item=crash_after_four)
    versions = sorted(c.key_version for c in service.models.customer.scan())
    assert versions.count("v2") == 4 and versions.count("v1") == 2  # half done

    # reads and lookups work on both sides of the line
    for person in population:
        found = service.find_customer_by_email(person.merchant_id, person.email, actor="agent", purpose="support")
        assert found is not None and found.id == person.id
    # a card added mid-rotation finds the holder whose card still has the old fingerprint
    added = service.add_payment_method("merchant-0", population[2].id, VISA, 1, 2031, actor="checkout")
    assert population[0].id in added.same_card_customers

    resumed = rotate_keys(service, page_size=2)
    assert resumed.rotated == {"customers": 2, "payment_methods": 3}
    again = rotate_keys(service, page_size=2)
    assert again.total_rotated == 0 and again.already_current == again.scanned == 6 + 4

    # every item now decrypts with the new KMS key alone (no previous key)
    new_only = CustomerService(replace(rotated_settings, kms_previous_key_ids=()), clock=clock, ids=SeededIds(6))
    for person in population:
        got = new_only.get_customer(person.merchant_id, person.id, actor="agent", purpose="support")
        assert got.email == person.email and got.key_version == "v2"
    for method in service.models.payment_method.scan():
        assert method.key_version == "v2" and method.fingerprint.startswith("v2#")
        assert new_only.reveal_card_number(method.merchant_id, method.id, actor="a", purpose="processor")[:4] == "4111"
    # ... and the old key alone no longer decrypts them
    old_only = CustomerService(replace(rotated_settings, kms_key_id=customers.settings.kms_key_id,
                                       kms_previous_key_ids=()), clock=clock)  # fmt: skip
    with pytest.raises(EncryptionError):
        old_only.get_customer(population[0].merchant_id, population[0].id, actor="a", purpose="support")

    # each rotation was one write with its record: projected as a "rotate-key" entry, never as unattributed
    assert drain().failed == 0
    for person in population:
        entries = list(service.audit.history(audit_entity(person.id)))
        assert [(e.action, e.actor) for e in entries] == [("create", "signup"), ("rotate-key", "key-rotation")]
        assert entries[1].detail == {"from_key_version": "v1", "to_key_version": "v2"}
    for method in service.models.payment_method.scan():
        actions = [e.action for e in service.audit.history(card_entity(method.id))]
        assert actions == (["add-card", "rotate-key"] if method.id != added.method.id else ["add-card"])
        assert service.audit.verify(card_entity(method.id)).ok


def test_a_concurrent_change_is_not_overwritten(customers, population, rotated_settings, clock) -> None:
    service = CustomerService(rotated_settings, clock=clock, ids=SeededIds(7))
    changed = []

    def change_one_not_yet_rotated(kind: str, item_id: str, rotated: bool) -> None:
        if not changed:  # after the first item: change another customer the scan has already read
            target = next(p for p in population if p.id != item_id)
            new = CustomerService(rotated_settings, clock=clock, ids=SeededIds(70))  # a writer with the new keys
            new.update_email(target.merchant_id, target.id, "changed@example.com", actor="customer")
            changed.append(target)

    result = rotate_keys(service, page_size=100, on_item=change_one_not_yet_rotated)
    assert result.conflicts == 1  # the stale copy's update was refused, the item re-read...
    assert result.rotated["customers"] == 5 and result.already_current == 1  # ...and found already current
    got = service.get_customer(changed[0].merchant_id, changed[0].id, actor="agent", purpose="support")
    assert got.email == "changed@example.com" and got.key_version == "v2"


def test_a_removed_card_has_nothing_to_rotate(customers, population, rotated_settings, clock) -> None:
    method = customers.payment_methods(population[0].merchant_id, population[0].id)[0]
    customers.remove_payment_method(population[0].merchant_id, population[0].id, method.id, actor="customer")
    result = rotate_keys(CustomerService(rotated_settings, clock=clock, ids=SeededIds(8)), page_size=100)
    assert result.rotated == {"customers": 6, "payment_methods": 2} and result.already_current == 1


def test_rotation_decryptions_are_audited(customers, population, rotated_settings, clock) -> None:
    service = CustomerService(rotated_settings, clock=clock, ids=SeededIds(8))
    rotate_keys(service)
    entries = [e for e in service.models.audit.scan() if e.actor == "key-rotation"]
    assert len(entries) == 6 + 3
    assert {e.detail.as_dict()["purpose"] for e in entries} == {"rotation"}


def test_nothing_in_clear_after_rotation(customers, population, rotated_settings, clock, field_settings) -> None:
    rotate_keys(CustomerService(rotated_settings, clock=clock, ids=SeededIds(9)))
    stored = scan_everything(field_settings).lower()
    assert "person" not in stored and "4111111111111111" not in stored


def test_the_cli_rotates_with_a_progress_bar(customers, population, rotated_settings, capsys) -> None:
    with use_settings(rotated_settings):
        assert main(["rotate-keys", "--page-size", "3"]) == 0
        captured = capsys.readouterr()
        assert "6 customers and 3 payment methods rotated" in captured.out
        assert "rotating to key version v2" in captured.err
        assert main(["rotate-keys", "--quiet"]) == 0
        assert "0 customers and 0 payment methods rotated, 9 already current" in capsys.readouterr().out


def test_bad_page_size_is_refused(customers) -> None:
    with pytest.raises(ValueError, match="page_size"):
        rotate_keys(customers, page_size=0)
