"""Key rotation for encrypted customer and card data: every field moved to the current key version.

``rotate_keys(service)`` walks the customers and payment-methods tables in pages and, for every item whose
``key_version`` is not the keyring's current version, decrypts its field (recorded in the audit log, purpose
``rotation``), re-encrypts it under the current KMS key and key version, and rewrites what depends on the key
version (the email's blind index, the card's fingerprint and ``card_index``) in one update conditional on the
item's version, which also records the change (``rotate-key``, projected onto the item's audit chain like every
change). So a rotation:

* keeps reads working throughout: the keyring still holds the old version and ``PAYMENT_KMS_PREVIOUS_KEY_IDS`` the
  old KMS key, and lookups by email or card try every key version;
* is idempotent and resumable: an item already at the current version is skipped, so a re-run after a crash
  continues where it stopped and a re-run after the end writes nothing;
* never overwrites a concurrent change: a version conflict re-reads the item and tries again (an item someone
  else rewrote meanwhile is usually already current).
Order of operations: first give every writer the new keys (current version and KMS key, the old ones kept for
reading), then run the rotation. A writer still on the old version writes old-version items; the next run moves
them. Only when a run finds nothing left to rotate may the old KMS key and keyring version be retired.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pynamodb.exceptions import DoesNotExist, UpdateError

from payment_examples.core import logger
from payment_examples.core.errors import CONDITIONAL_CHECK_FAILED, error_code
from payment_examples.encryption.fields import Binding, blind_index, card_fingerprint
from payment_examples.tables.models import ChangeAttribute, EncryptedField, keep_latest

ACTOR = "key-rotation"
MAX_ATTEMPTS = 5


@dataclass
class RotationResult:
    target_version: str
    scanned: int = 0
    rotated: dict[str, int] = field(default_factory=lambda: {"customers": 0, "payment_methods": 0})
    already_current: int = 0
    conflicts: int = 0  # version conflicts met (each retried)

    @property
    def total_rotated(self) -> int:
        return sum(self.rotated.values())


def rotate_keys(
    service: Any,
    *,
    page_size: int = 100,
    on_item: Callable[[str, str, bool], None] | None = None,
) -> RotationResult:
    """Move every customer email and card number of ``service``'s tables to its encryptor's current key version.
    ``on_item(kind, item_id, rotated)`` is called after each item (a progress bar; a test's simulated crash)."""
    if not 1 <= page_size <= 1000:
        raise ValueError("page_size must be within 1..1000")
    encryptor = service.encryptor
    result = RotationResult(encryptor.keyring.current)
    models = service.models
    for kind, Model, rotate in (
        ("customers", models.customer, _rotate_customer),
        ("payment_methods", models.payment_method, _rotate_method),
    ):
        for item in _pages(Model, page_size):
            result.scanned += 1
            changed = _with_retries(service, Model, item, rotate, result)
            if changed:
                result.rotated[kind] += 1
            else:
                result.already_current += 1
            if on_item is not None:
                on_item(kind, item.id, changed)
    logger.info("key rotation finished", target_version=result.target_version, rotated=result.rotated,
                already_current=result.already_current, conflicts=result.conflicts)  # fmt: skip
    return result


def _pages(Model: Any, page_size: int) -> Iterator[Any]:
    # A scan in pages of page_size (eventually consistent: an item written meanwhile is written by the current
    # version anyway). Only the key and version are needed to decide; the item is re-read before it is changed.
    yield from Model.scan(page_size=page_size)


def _with_retries(service: Any, Model: Any, item: Any, rotate: Callable, result: RotationResult) -> bool:
    for _ in range(MAX_ATTEMPTS):
        if item.key_version == service.encryptor.keyring.current or getattr(item, "removed_at", None) is not None:
            return False  # current already, or a removed card (its number is gone: nothing to rotate)
        try:
            rotate(service, item)
            return True
        except UpdateError as error:
            if error_code(error) != CONDITIONAL_CHECK_FAILED:
                raise
            result.conflicts += 1
            try:
                item = Model.get(item.id, consistent_read=True)
            except DoesNotExist:
                return False  # deleted meanwhile: nothing to rotate
    raise RuntimeError(f"{Model.Meta.table_name} {item.id}: still changing after {MAX_ATTEMPTS} attempts")


def _reencrypt(
    service: Any, stored: Any, binding: Binding, customer_id: str, **detail: str
) -> tuple[str, dict[str, Any]]:
    values = {"c": stored.c, "v": stored.v, "s": stored.s}
    service._record_access(customer_id, binding.merchant_id, actor=ACTOR, purpose="rotation",
                           field=binding.attribute, version=values["v"], **detail)  # fmt: skip
    clear = service.encryptor.decrypt(values, binding)
    return clear, service.encryptor.encrypt(clear, binding)


def _rotation(service: Any, item: Any) -> Any:
    """The rotation's change record, carried in the item's update (the item's audit chain is projected from it)."""
    target = service.encryptor.keyring.current
    change = ChangeAttribute(type="rotate-key", actor=ACTOR, at=service.clock.now(), version=int(item.version) + 1,
                             detail={"from_key_version": str(item.key_version), "to_key_version": target})  # fmt: skip
    return type(item).changes.set(keep_latest(item.changes, change))


def _rotate_customer(service: Any, customer: Any) -> None:
    Model = type(customer)
    actions = [Model.key_version.set(service.encryptor.keyring.current),
               Model.encryption_key_id.set(service.encryptor.key_id), Model.updated_at.set(service.clock.now()),
               _rotation(service, customer)]  # fmt: skip
    if customer.email is not None:
        binding = Binding(f"customer#{customer.id}", "email", customer.merchant_id, "email")
        clear, stored = _reencrypt(service, customer.email, binding, customer.id)
        actions += [
            Model.email.set(EncryptedField(**stored)),
            Model.email_index.set(blind_index(service.encryptor.keyring, customer.merchant_id, clear)),
        ]
    customer.update(actions=actions, condition=Model.merchant_id == customer.merchant_id)


def _rotate_method(service: Any, method: Any) -> None:
    Model = type(method)
    binding = Binding(f"payment_method#{method.id}", "pan", method.merchant_id, "card")
    clear, stored = _reencrypt(service, method.pan, binding, method.customer_id, method_id=method.id)
    fingerprint = card_fingerprint(service.encryptor.keyring, clear)
    method.update(
        actions=[
            Model.pan.set(EncryptedField(**stored)),
            Model.key_version.set(stored["v"]),
            Model.encryption_key_id.set(service.encryptor.key_id),
            Model.fingerprint.set(fingerprint),
            Model.card_index.set(f"{method.merchant_id}#{fingerprint}"),
            _rotation(service, method),
        ],
        condition=Model.merchant_id == method.merchant_id,
    )
