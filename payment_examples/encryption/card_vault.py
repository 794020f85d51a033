"""The card vault behind ``CustomerService``'s payment methods (PCI DSS v4.0 requirement 3).

* The card number (PAN) is validated (12-19 digits, Luhn) and then exists only as ciphertext bound to its vault
  item and merchant; errors never echo it, logs never contain it.
* What may be kept in clear is kept for display and routing: brand, last four digits, expiry.
* ``fingerprint``: a keyed HMAC of the *entire* PAN under a versioned key (req. 3.5.1.1), and the
  merchant-scoped ``card_index`` on the ``by-card`` index, find the same card on another customer.
* A CVV is checked for shape and discarded: never stored, never logged (req. 3.3.1.2).
* Adding and removing a card are each ONE conditional write carrying its record (``PaymentMethod.changes``); the
  card's audit chain (``payment_method#<id>``) is projected from the table's stream (``projection.py``).
  Removing a card deletes its number's ciphertext and its ``card_index`` in that write (the number is gone, not
  hidden) and keeps a tombstone (brand, last four, expiry, history) that reads as not found.
* Revealing a card number (to send it to a processor) is recorded before it is decrypted, on its customer's access
  chain (``customers.access_entity``), in the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pynamodb.exceptions import DoesNotExist, UpdateError

from payment_examples.audit import Subject
from payment_examples.core import identifier, logger
from payment_examples.core.errors import CONDITIONAL_CHECK_FAILED, NotFoundError, ValidationError, error_code
from payment_examples.encryption.fields import Binding, card_fingerprint, validate_pan
from payment_examples.tables.models import ChangeAttribute, EncryptedField, created_key, keep_latest

# Why a customer's card number may be revealed (recorded on the customer's access chain). Defined here, the lower of
# the two modules: customers.py imports the vault, never the other way round.
PURPOSES = frozenset({"support", "receipt", "fraud-review", "export", "rotation", "processor"})


class CustomerStore(Protocol):
    """What the vault needs of ``CustomerService`` (customers.py), which owns it: the vault does not import
    customers.py, so the two modules have one direction (customers -> card_vault)."""

    clock: Any
    ids: Any

    @property
    def models(self) -> Any: ...

    @property
    def encryptor(self) -> Any: ...

    def _load(self, merchant_id: str, customer_id: str) -> Any: ...

    def _record_access(self, customer_id: str, merchant_id: str, **access: Any) -> None: ...


# IIN ranges of the major brands (prefix -> brand); anything else is "unknown".
_BRANDS = (
    (("34", "37"), "amex"),
    (tuple(str(p) for p in range(51, 56)) + tuple(str(p) for p in range(2221, 2721)), "mastercard"),
    (("6011", "65") + tuple(str(p) for p in range(644, 650)), "discover"),
    (("4",), "visa"),
)


class PaymentMethodNotFoundError(NotFoundError):
    def __init__(self, method_id: str) -> None:
        super().__init__(f"payment method {method_id} not found")


@dataclass(frozen=True)
class PaymentMethodView:
    """A stored card as it may be shown: never the number."""

    id: str
    customer_id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    fingerprint: str
    key_version: str
    created_at: datetime


@dataclass(frozen=True)
class AddedPaymentMethod:
    method: PaymentMethodView
    same_card_customers: list[str]  # other customers of the merchant holding this card (by fingerprint)


def card_brand(pan: str) -> str:
    for prefixes, brand in _BRANDS:
        if pan.startswith(prefixes):
            return brand
    return "unknown"


class CardVault:
    def __init__(self, customers: CustomerStore) -> None:
        self._customers = customers

    def add(
        self,
        merchant_id: str,
        customer_id: str,
        card_number: str,
        exp_month: int,
        exp_year: int,
        *,
        cvv: str | None = None,
        actor: str,
    ) -> AddedPaymentMethod:
        identifier("actor", actor)
        pan = validate_pan(card_number)
        _check_cvv(cvv)  # and then forget it
        now = self._customers.clock.now()
        _check_expiry(exp_month, exp_year, now)
        self._customers._load(merchant_id, customer_id)  # the customer exists and is the merchant's
        encryptor = self._customers.encryptor
        keyring = encryptor.keyring
        fingerprint = card_fingerprint(keyring, pan)
        card_index = f"{merchant_id}#{fingerprint}"
        Model = self._customers.models.payment_method
        found: set[str] = set()
        for version in keyring.roots:  # during a rotation the same card may still carry an older fingerprint
            index = f"{merchant_id}#{card_fingerprint(keyring, pan, version)}"
            found |= {m.customer_id for m in Model.by_card.query(index)}
        holders = sorted(found - {customer_id})
        method_id = f"pm_{self._customers.ids.new_id()}"
        stored = encryptor.encrypt(pan, _binding(method_id, merchant_id))
        method = Model(
            method_id,
            customer_id=customer_id,
            merchant_id=merchant_id,
            brand=card_brand(pan),
            last4=pan[-4:],
            exp_month=exp_month,
            exp_year=exp_year,
            fingerprint=fingerprint,
            card_index=card_index,
            pan=EncryptedField(**stored),
            key_version=stored["v"],
            encryption_key_id=encryptor.key_id,
            created_at=now,
            created_key=created_key(now, method_id),
            changes=[ChangeAttribute(type="add-card", actor=actor, at=now, version=1)],
        )
        method.save(condition=Model.id.does_not_exist())  # the card and its record: the audit entry follows
        logger.info("payment method added", method_id=method_id, customer_id=customer_id, merchant_id=merchant_id,
                    brand=method.brand, actor=actor, same_card_customers=len(holders))  # fmt: skip
        return AddedPaymentMethod(_view(method), holders)

    def list(self, merchant_id: str, customer_id: str) -> list[PaymentMethodView]:
        """The customer's cards, oldest first (nothing decrypted)."""
        self._customers._load(merchant_id, customer_id)
        Model = self._customers.models.payment_method
        found = Model.by_customer.query(customer_id)
        return [_view(m) for m in found if m.merchant_id == merchant_id and m.removed_at is None]

    def remove(self, merchant_id: str, customer_id: str, method_id: str, *, actor: str) -> None:
        """Remove the card: its number's ciphertext and its ``card_index`` go in one conditional update that also
        records the removal; a tombstone (brand, last four, expiry, history) stays and reads as not found."""
        identifier("actor", actor)
        method = self._get(merchant_id, method_id)
        if method.customer_id != customer_id:
            raise PaymentMethodNotFoundError(method_id)
        Model = type(method)
        now = self._customers.clock.now()
        change = ChangeAttribute(type="remove-card", actor=actor, at=now, version=int(method.version) + 1)
        try:
            method.update(  # conditional on the version read too (PynamoDB's version condition)
                actions=[
                    Model.removed_at.set(now),
                    Model.pan.remove(),
                    Model.card_index.remove(),
                    Model.changes.set(keep_latest(method.changes, change)),
                ],  # fmt: skip
                condition=(Model.merchant_id == merchant_id)
                & (Model.customer_id == customer_id)
                & Model.removed_at.does_not_exist(),
            )
        except UpdateError as error:
            if error_code(error) == CONDITIONAL_CHECK_FAILED:
                raise PaymentMethodNotFoundError(method_id) from None  # removed meanwhile (or changed: try again)
            raise
        logger.info("payment method removed", method_id=method_id, customer_id=customer_id, actor=actor)

    def reveal(self, merchant_id: str, method_id: str, *, actor: str, purpose: str) -> str:
        """The card number, for ``purpose`` (e.g. sending it to the processor): recorded first, then decrypted."""
        _purpose(purpose)
        method = self._get(merchant_id, method_id)
        stored = {"c": method.pan.c, "v": method.pan.v, "s": method.pan.s}
        self._customers._record_access(
            method.customer_id, merchant_id, actor=actor, purpose=purpose, field="pan", version=stored["v"],
            method_id=method.id,
        )  # fmt: skip
        return self._customers.encryptor.decrypt(stored, _binding(method.id, merchant_id))

    def _get(self, merchant_id: str, method_id: str) -> Any:
        identifier("merchant_id", merchant_id)
        identifier("method_id", method_id)
        try:
            method = self._customers.models.payment_method.get(method_id, consistent_read=True)
        except DoesNotExist:
            raise PaymentMethodNotFoundError(method_id) from None
        if method.merchant_id != merchant_id or method.removed_at is not None:
            raise PaymentMethodNotFoundError(method_id)
        return method


def audit_entity(method_id: str) -> str:
    """The card's audit chain: its changes, projected from the payment-methods table's stream."""
    return f"payment_method#{method_id}"


def _audited(method: Any) -> dict[str, Any]:
    """What a card's audit entries diff: its customer, brand, last four and expiry (shown), the card number's
    ciphertext signature (shown only as changed)."""
    return {"customer_id": method.customer_id, "brand": method.brand, "last4": method.last4,
            "exp_month": int(method.exp_month), "exp_year": int(method.exp_year),
            "pan": method.pan.s if method.pan is not None else None}  # fmt: skip


PAYMENT_METHODS = Subject("payment_method", lambda models: models.payment_method, audit_entity, _audited,
                          creates=frozenset({"add-card"}))  # fmt: skip


def _binding(method_id: str, merchant_id: str) -> Binding:
    return Binding(f"payment_method#{method_id}", "pan", merchant_id, "card")


def _check_cvv(cvv: str | None) -> None:
    if cvv is None:
        return
    if not isinstance(cvv, str) or not cvv.isascii() or not cvv.isdigit() or len(cvv) not in (3, 4):
        raise ValidationError("cvv", "must be 3 or 4 digits")


def _check_expiry(month: int, year: int, now: datetime) -> None:
    if not isinstance(month, int) or isinstance(month, bool) or not 1 <= month <= 12:
        raise ValidationError("exp_month", "must be a month number, 1-12")
    if not isinstance(year, int) or isinstance(year, bool) or not 2000 <= year <= 2100:
        raise ValidationError("exp_year", "must be a four-digit year")
    if (year, month) < (now.year, now.month):
        raise ValidationError("exp_year", "the card has expired")


def _view(method: Any) -> PaymentMethodView:
    return PaymentMethodView(
        method.id,
        method.customer_id,
        method.brand,
        method.last4,
        int(method.exp_month),
        int(method.exp_year),
        method.fingerprint,
        method.key_version,
        method.created_at,
    )


def _purpose(purpose: str) -> str:
    if purpose not in PURPOSES:
        raise ValidationError("purpose", f"must be one of {', '.join(sorted(PURPOSES))}")
    return purpose
