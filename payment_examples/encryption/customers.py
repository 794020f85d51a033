"""Customers whose email is stored only encrypted, found by email through a blind index, with every decryption
recorded.

``CustomerService`` encrypts and decrypts the marked field transparently (``encryption.FieldEncryptor``):

* ``create_customer`` stores the email as ciphertext bound to the new item and merchant, and its blind index on
  the ``by-email`` index; the clear email is never written or logged;
* every change is ONE conditional write that carries its own record (``Customer.changes``: who, what, when, the
  version it produced); the customer's audit chain (``customer#<id>``) is projected from the table's stream
  (``projection.py``, as for payments), with the email shown only as changed. A change made outside the package
  is caught there as ``unattributed``;
* ``get_customer`` and ``find_customer_by_email`` decrypt, and record each decryption (who, when, which field, key
  version, purpose) *before* decrypting, appended in the request to the customer's access chain
  (``customer-access#<id>``, ``access_entity``): no record, no clear value. A read leaves no stream record, so
  this is the one audit entry written in the request; the card vault's reveals go on the same chain;
* ``find_customer_by_email`` queries the blind index under every key version of the keyring (the current first:
  lookups keep working while a rotation moves items forward), only ever reads the matching items, and only the
  merchant's own (the index is keyed by merchant, and the merchant is checked again);
* ``update_email`` re-encrypts and re-indexes, conditional on the version read; ``list_customers`` decrypts
  nothing;
* payment methods (``add_payment_method``, ``payment_methods``, ``remove_payment_method``, ``reveal_card_number``)
  live in the card vault (``card_vault.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist, UpdateError

from payment_examples.audit import AuditTracker, Subject
from payment_examples.core import Clock, IdFactory, RandomIds, Settings, SystemClock, get_settings, identifier, logger
from payment_examples.core.errors import (
    CONDITIONAL_CHECK_FAILED,
    NotFoundError,
    ValidationError,
    VersionConflictError,
    error_code,
)
from payment_examples.encryption.card_vault import AddedPaymentMethod, CardVault, PaymentMethodView, _purpose
from payment_examples.encryption.fields import Binding, FieldEncryptor, blind_index, encryptor_for, normalise_email
from payment_examples.tables.models import (
    BoundModels,
    ChangeAttribute,
    EncryptedField,
    created_key,
    get_models,
    keep_latest,
)


class CustomerNotFoundError(NotFoundError):
    def __init__(self, customer_id: str) -> None:
        super().__init__(f"customer {customer_id} not found")
        self.customer_id = customer_id


@dataclass(frozen=True)
class CustomerView:
    """A customer as its merchant sees it (``email`` in clear only where it was decrypted for a purpose)."""

    id: str
    merchant_id: str
    email: str | None
    key_version: str | None
    created_at: datetime
    updated_at: datetime
    version: int


class CustomerService:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        models: BoundModels | None = None,
        encryptor: FieldEncryptor | None = None,
        clock: Clock | None = None,
        ids: IdFactory | None = None,
        audit: AuditTracker | None = None,
    ) -> None:
        self._settings = settings
        self._models = models
        self._encryptor = encryptor
        self.clock = clock or SystemClock()
        self.ids = ids or RandomIds()
        self.audit = audit or AuditTracker(models=models, settings=settings, clock=self.clock)

    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    @property
    def models(self) -> BoundModels:
        return self._models or get_models(self.settings)

    @property
    def encryptor(self) -> FieldEncryptor:
        if self._encryptor is None:
            self._encryptor = encryptor_for(self.settings)
        return self._encryptor

    # -- writes ---------------------------------------------------------------------------------------------------

    def create_customer(self, merchant_id: str, email: str, *, actor: str) -> CustomerView:
        identifier("merchant_id", merchant_id)
        identifier("actor", actor)
        email = normalise_email(email)
        Model = self.models.customer
        now = self.clock.now()
        customer_id = f"cus_{self.ids.new_id()}"
        customer = Model(
            customer_id,
            merchant_id=merchant_id,
            created_at=now,
            updated_at=now,
            created_key=created_key(now, customer_id),
            encryption_key_id=self.encryptor.key_id,
            changes=[ChangeAttribute(type="create", actor=actor, at=now, version=1)],
            **self._email_fields(customer_id, merchant_id, email),
        )
        customer.save(condition=Model.id.does_not_exist())  # the create and its record: the audit entry follows
        logger.info("customer created", customer_id=customer_id, merchant_id=merchant_id, actor=actor)
        return self._view(customer, email)

    def update_email(
        self, merchant_id: str, customer_id: str, email: str, *, actor: str, expected_version: int | None = None
    ) -> CustomerView:
        identifier("actor", actor)
        email = normalise_email(email)
        customer = self._load(merchant_id, customer_id)
        if expected_version is not None and customer.version != expected_version:
            raise VersionConflictError(customer_id, expected_version)
        Model = type(customer)
        fields = self._email_fields(customer_id, merchant_id, email)
        now = self.clock.now()
        change = ChangeAttribute(type="update-email", actor=actor, at=now, version=int(customer.version) + 1)
        try:
            customer.update(  # conditional on the version read (PynamoDB's version condition) and the merchant
                actions=[
                    Model.email.set(fields["email"]),
                    Model.email_index.set(fields["email_index"]),
                    Model.key_version.set(fields["key_version"]),
                    Model.encryption_key_id.set(self.encryptor.key_id),
                    Model.updated_at.set(now),
                    Model.changes.set(keep_latest(customer.changes, change)),
                ],
                condition=Model.merchant_id == merchant_id,
            )
        except UpdateError as error:
            if error_code(error) == CONDITIONAL_CHECK_FAILED:
                raise VersionConflictError(customer_id, customer.version) from None
            raise
        logger.info("customer email updated", customer_id=customer_id, merchant_id=merchant_id, actor=actor)
        return self._view(customer, email)

    def _email_fields(self, customer_id: str, merchant_id: str, email: str) -> dict[str, Any]:
        stored = self.encryptor.encrypt(email, _binding(customer_id, merchant_id))
        return {
            "email": EncryptedField(**stored),
            "email_index": blind_index(self.encryptor.keyring, merchant_id, email),
            "key_version": stored["v"],
        }

    # -- the card vault (card_vault.py) -----------------------------------------------------------------------------

    @property
    def vault(self) -> CardVault:
        return CardVault(self)

    def add_payment_method(
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
        """Store a card (encrypted, fingerprinted); the CVV, if given, is checked and discarded."""
        return self.vault.add(merchant_id, customer_id, card_number, exp_month, exp_year, cvv=cvv, actor=actor)

    def payment_methods(self, merchant_id: str, customer_id: str) -> list[PaymentMethodView]:
        return self.vault.list(merchant_id, customer_id)

    def remove_payment_method(self, merchant_id: str, customer_id: str, method_id: str, *, actor: str) -> None:
        self.vault.remove(merchant_id, customer_id, method_id, actor=actor)

    def reveal_card_number(self, merchant_id: str, method_id: str, *, actor: str, purpose: str) -> str:
        return self.vault.reveal(merchant_id, method_id, actor=actor, purpose=purpose)

    # -- reads ----------------------------------------------------------------------------------------------------

    def get_customer(self, merchant_id: str, customer_id: str, *, actor: str, purpose: str) -> CustomerView:
        """The customer with the email decrypted for ``purpose`` (recorded in the audit log first)."""
        _purpose(purpose)
        customer = self._load(merchant_id, customer_id)
        return self._view(customer, self._decrypt_email(customer, actor=actor, purpose=purpose))

    def find_customer_by_email(self, merchant_id: str, email: str, *, actor: str, purpose: str) -> CustomerView | None:
        """The merchant's customer with this email (the earliest created if several), or None. Reads only index
        matches; another merchant's customer is never returned."""
        identifier("merchant_id", merchant_id)
        _purpose(purpose)
        email = normalise_email(email)
        keyring = self.encryptor.keyring
        versions = [keyring.current, *(v for v in keyring.roots if v != keyring.current)]
        Model = self.models.customer
        matches = []
        for version in versions:  # during a rotation an item may still carry its old version's index
            index = blind_index(keyring, merchant_id, email, version)
            matches += [c for c in Model.by_email.query(index) if c.merchant_id == merchant_id]
        if not matches:
            return None
        customer = min(matches, key=lambda c: c.created_key)
        customer = Model.get(customer.id, consistent_read=True)  # the index is eventually consistent
        if customer.merchant_id != merchant_id:
            return None
        clear = self._decrypt_email(customer, actor=actor, purpose=purpose)
        return self._view(customer, clear) if clear == email else None

    def list_customers(self, merchant_id: str, *, limit: int = 50) -> list[CustomerView]:
        """The merchant's newest customers, without decrypting anything (``email`` is None)."""
        identifier("merchant_id", merchant_id)
        if not 1 <= limit <= 100:
            raise ValidationError("limit", "must be between 1 and 100")
        Model = self.models.customer
        found = Model.by_merchant.query(merchant_id, scan_index_forward=False, limit=limit)
        return [self._view(customer, None) for customer in list(found)[:limit]]

    def _load(self, merchant_id: str, customer_id: str) -> Any:
        identifier("merchant_id", merchant_id)
        identifier("customer_id", customer_id)
        try:
            customer = self.models.customer.get(customer_id, consistent_read=True)
        except DoesNotExist:
            raise CustomerNotFoundError(customer_id) from None
        if customer.merchant_id != merchant_id:  # another merchant's customer reads as not found
            raise CustomerNotFoundError(customer_id)
        return customer

    def _decrypt_email(self, customer: Any, *, actor: str, purpose: str) -> str | None:
        if customer.email is None:
            return None
        stored = {"c": customer.email.c, "v": customer.email.v, "s": customer.email.s}
        binding = _binding(customer.id, customer.merchant_id)
        self._record_access(
            customer.id, customer.merchant_id, actor=actor, purpose=purpose, field="email", version=stored["v"]
        )
        return self.encryptor.decrypt(stored, binding)

    def _record_access(
        self, customer_id: str, merchant_id: str, *, actor: str, purpose: str, field: str, version: str, **detail: str
    ) -> None:
        """Append a decryption to the customer's access chain; raises if it cannot be written (then nothing is
        decrypted)."""
        detail = {"field": field, "purpose": purpose, "key_version": version, "merchant_id": merchant_id, **detail}
        self.audit.track(access_entity(customer_id), "decrypt", actor, detail=detail)

    @staticmethod
    def _view(customer: Any, email: str | None) -> CustomerView:
        return CustomerView(
            customer.id,
            customer.merchant_id,
            email,
            customer.key_version,
            customer.created_at,
            customer.updated_at,
            customer.version,
        )


def audit_entity(customer_id: str) -> str:
    """The customer's audit chain: its changes, projected from the customers table's stream."""
    return f"customer#{customer_id}"


def access_entity(customer_id: str) -> str:
    """The customer's access chain: every decryption of its email and of its cards' numbers, appended before it."""
    return f"customer-access#{customer_id}"


def _audited(customer: Any) -> dict[str, Any]:
    """What a customer's audit entries diff; ``email`` is the ciphertext's signature, shown only as changed."""
    return {"merchant_id": customer.merchant_id, "key_version": customer.key_version,
            "email": customer.email.s if customer.email is not None else None}  # fmt: skip


CUSTOMERS = Subject("customer", lambda models: models.customer, audit_entity, _audited)


def _binding(customer_id: str, merchant_id: str) -> Binding:
    return Binding(f"customer#{customer_id}", "email", merchant_id, "email")
