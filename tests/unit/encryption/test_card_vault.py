"""The card vault (moto in-process): no card number or CVV stored or logged in clear, duplicates found by
fingerprint within the merchant only, reveals recorded first, and card input validated without echoing it."""

from __future__ import annotations

import io
import logging
import re

import boto3
import pytest

from payment_examples.core.errors import ValidationError
from payment_examples.encryption.card_vault import PaymentMethodNotFoundError, card_brand
from payment_examples.encryption.customers import access_entity
from payment_examples.encryption.fields import FieldBindingError
from payment_examples.tables.models import get_models
from tests.conftest import scan_everything

VISA = "4111 1111 1111 1111"
DIGITS = "4111111111111111"


@pytest.fixture
def alice(customers):
    return customers.create_customer("merchant-a", "alice@example.com", actor="signup")


def test_a_card_is_stored_without_its_number_or_cvv(customers, field_settings, alice) -> None:
    added = customers.add_payment_method("merchant-a", alice.id, VISA, 12, 2030, cvv="7391", actor="checkout")
    method = added.method
    assert (method.brand, method.last4, method.exp_month, method.exp_year) == ("visa", "1111", 12, 2030)
    assert method.fingerprint.startswith("v1#") and added.same_card_customers == []
    stored = scan_everything(field_settings)
    assert DIGITS not in stored and not re.search(r"\b\d{12,19}\b", re.sub(r"arn:aws:kms:[^\"]*", "", stored))
    table = get_models(field_settings).payment_method.Meta.table_name
    item = boto3.client("dynamodb", region_name="us-east-1").get_item(TableName=table, Key={"id": {"S": method.id}})
    assert "cvv" not in str(item["Item"]).lower() and "7391" not in [v.get("S") for v in item["Item"].values()]
    assert customers.payment_methods("merchant-a", alice.id) == [method]


def test_the_same_card_on_another_customer_is_found_by_fingerprint(customers, alice) -> None:
    bob = customers.create_customer("merchant-a", "bob@example.com", actor="signup")
    carol = customers.create_customer("merchant-b", "carol@example.com", actor="signup")
    first = customers.add_payment_method("merchant-a", alice.id, VISA, 1, 2031, actor="checkout")
    second = customers.add_payment_method("merchant-a", bob.id, "4111-1111-1111-1111", 2, 2032, actor="checkout")
    assert second.same_card_customers == [alice.id]
    assert second.method.fingerprint == first.method.fingerprint  # stable across encryptions
    other_merchant = customers.add_payment_method("merchant-b", carol.id, VISA, 1, 2031, actor="checkout")
    assert other_merchant.same_card_customers == []  # fingerprints are matched within the merchant only


def test_revealing_a_card_number_is_recorded_first(customers, field_settings, alice) -> None:
    method = customers.add_payment_method("merchant-a", alice.id, VISA, 12, 2030, actor="checkout").method
    assert customers.reveal_card_number("merchant-a", method.id, actor="processor-call", purpose="processor") == DIGITS
    [entry] = get_models(field_settings).audit.query(access_entity(alice.id))  # the card's customer's access chain
    assert entry.actor == "processor-call" and entry.action == "decrypt"
    assert entry.detail.as_dict() == {"field": "pan", "purpose": "processor", "key_version": "v1",
                                      "merchant_id": "merchant-a", "method_id": method.id}  # fmt: skip
    with pytest.raises(PaymentMethodNotFoundError):
        customers.reveal_card_number("merchant-b", method.id, actor="x", purpose="processor")


def test_a_card_number_moved_onto_another_method_does_not_decrypt(customers, field_settings, alice) -> None:
    visa = customers.add_payment_method("merchant-a", alice.id, VISA, 12, 2030, actor="c").method
    master = customers.add_payment_method("merchant-a", alice.id, "5555 5555 5555 4444", 12, 2030, actor="c").method
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    table = get_models(field_settings).payment_method.Meta.table_name
    pan = dynamodb.get_item(TableName=table, Key={"id": {"S": visa.id}})["Item"]["pan"]
    dynamodb.update_item(TableName=table, Key={"id": {"S": master.id}}, UpdateExpression="SET pan = :p",
                         ExpressionAttributeValues={":p": pan})  # fmt: skip
    with pytest.raises(FieldBindingError):
        customers.reveal_card_number("merchant-a", master.id, actor="x", purpose="processor")


def test_remove_only_the_customers_own_card(customers, alice) -> None:
    bob = customers.create_customer("merchant-a", "bob@example.com", actor="signup")
    method = customers.add_payment_method("merchant-a", alice.id, VISA, 12, 2030, actor="c").method
    with pytest.raises(PaymentMethodNotFoundError):
        customers.remove_payment_method("merchant-a", bob.id, method.id, actor="bob")
    with pytest.raises(PaymentMethodNotFoundError):
        customers.remove_payment_method("merchant-b", alice.id, method.id, actor="x")
    customers.remove_payment_method("merchant-a", alice.id, method.id, actor="alice")
    assert customers.payment_methods("merchant-a", alice.id) == []


@pytest.mark.parametrize(
    ("card", "month", "year", "cvv", "field", "reason"),
    [
        ("4111 1111 1111 1112", 12, 2030, None, "card_number", "Luhn"),
        ("4111 1111 111", 12, 2030, None, "card_number", "12 to 19 digits"),
        ("4111 1111 1111 111x", 12, 2030, None, "card_number", "only digits"),
        (VISA, 13, 2030, None, "exp_month", "1-12"),
        (VISA, 12, 30, None, "exp_year", "four-digit"),
        (VISA, 12, 2025, None, "exp_year", "expired"),  # the clock says 2026-01
        (VISA, 12, 2030, "12", "cvv", "3 or 4 digits"),
        (VISA, 12, 2030, "12a", "cvv", "3 or 4 digits"),
    ],
)
def test_bad_card_input_is_refused_without_echo_and_without_writes(
    customers,
    field_settings,
    alice,
    card,
    month,
    year,
    cvv,
    field,
    reason,
) -> None:
    before = scan_everything(field_settings)
    with pytest.raises(ValidationError, match=reason) as error:
        customers.add_payment_method("merchant-a", alice.id, card, month, year, cvv=cvv, actor="checkout")
    assert error.value.field == field
    assert "4111" not in str(error.value) and (cvv is None or cvv not in str(error.value))
    assert scan_everything(field_settings) == before


def test_card_numbers_and_cvvs_never_reach_the_logs(customers, alice) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    package_logger = logging.getLogger("payment_examples")
    package_logger.addHandler(handler)
    try:
        method = customers.add_payment_method("merchant-a", alice.id, VISA, 12, 2030, cvv="7391", actor="c").method
        customers.reveal_card_number("merchant-a", method.id, actor="p", purpose="processor")
        with pytest.raises(ValidationError):
            customers.add_payment_method("merchant-a", alice.id, "4111 1111 1111 1112", 12, 2030, actor="c")
    finally:
        package_logger.removeHandler(handler)
    logged = stream.getvalue()
    assert "payment method added" in logged
    assert DIGITS not in logged and "7391" not in logged and not re.search(r"\b\d{12,19}\b", logged)


@pytest.mark.parametrize(
    ("pan", "brand"),
    [("4111111111111111", "visa"), ("5555555555554444", "mastercard"), ("2223003122003222", "mastercard"),
     ("378282246310005", "amex"), ("6011111111111117", "discover"), ("3530111333300000", "unknown")],
)  # fmt: skip
def test_card_brands(pan: str, brand: str) -> None:
    assert card_brand(pan) == brand
