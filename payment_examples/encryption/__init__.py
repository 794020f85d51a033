"""Field encryption (notebook 05): envelope encryption of fields under KMS with signatures that bind each value to
its item and a versioned keyring for blind indexes (``fields``: the keyring is checked where it is built, in
``encryptor_for``), customers with an encrypted email (``customers``), the card vault behind their payment methods
(``card_vault``, which customers.py owns: one direction, customers -> card_vault) and key rotation
(``key_rotation``).

``audit_entity`` exists in both customers and card_vault (one chain each): import it from its module.
"""

from __future__ import annotations

from payment_examples.encryption.card_vault import (
    AddedPaymentMethod,
    CardVault,
    PaymentMethodNotFoundError,
    PaymentMethodView,
)
from payment_examples.encryption.customers import CustomerNotFoundError, CustomerService, CustomerView, access_entity
from payment_examples.encryption.fields import (
    Binding,
    EncryptionError,
    FieldBindingError,
    FieldEncryptor,
    Keyring,
    blind_index,
    card_fingerprint,
    encryptor_for,
    normalise_email,
    validate_pan,
)
from payment_examples.encryption.key_rotation import RotationResult, rotate_keys

__all__ = [
    "AddedPaymentMethod",
    "Binding",
    "CardVault",
    "CustomerNotFoundError",
    "CustomerService",
    "CustomerView",
    "EncryptionError",
    "FieldBindingError",
    "FieldEncryptor",
    "Keyring",
    "PaymentMethodNotFoundError",
    "PaymentMethodView",
    "RotationResult",
    "access_entity",
    "blind_index",
    "card_fingerprint",
    "encryptor_for",
    "normalise_email",
    "rotate_keys",
    "validate_pan",
]
