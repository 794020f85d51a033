"""Field encryption for personal and card data: envelope encryption under KMS, bound to its item.

* **Envelope encryption** with aws-encryption-sdk (never a hand-rolled cipher): each value is encrypted under a
  data key that KMS generates and wraps (committing AES-256-GCM, no per-message signature: a signature would add
  about 100 bytes to every stored field, and integrity is already given by GCM and the binding below).
* **Caching**: the SDK's data-key cache is keyed on the encryption context, so a per-item context would make every
  write a KMS call. The SDK context here is per tenant and purpose (``merchant_id``, ``purpose``, key version), and
  a ``CachingCryptoMaterialsManager`` with a bounded age and message count reuses a data key across items.
* **Binding**: a ciphertext must not be movable to another item, attribute or merchant. The SDK context binds the
  merchant and purpose; an HMAC-SHA256 signature over (item key, attribute, merchant, purpose, ciphertext) under
  a versioned signing key binds the rest, as the AWS Database Encryption SDK signs its items. Verification comes
  first (constant time); a moved ciphertext fails with ``FieldBindingError`` before anything is decrypted.
* **Keyed hashes** (``hmac``/``hashlib`` only) under versioned keys that are not the encryption key: a blind index
  for looking up an email without storing it, and a card fingerprint (HMAC of the entire PAN, PCI DSS v4.0
  req. 3.5.1.1) for finding duplicates. Each purpose has its own key, derived from the versioned root.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from payment_examples.core import ConfigurationError, PaymentExamplesError, ValidationError
from payment_examples.core.config import check_key_versions, parse_key_versions

PURPOSES = frozenset({"email", "card", "signature", "blind-index", "fingerprint"})


class EncryptionError(PaymentExamplesError):
    """A field could not be encrypted or decrypted (fails closed: nothing is returned in clear)."""


class FieldBindingError(EncryptionError):
    """The stored signature does not match this item, attribute and merchant: the ciphertext was moved or edited."""


# -- versioned HMAC keys ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keyring:
    """Versioned root secrets for the keyed hashes and signatures; ``current`` signs and indexes new writes, every
    version still verifies (so a rotation can run while reads go on)."""

    roots: Mapping[str, bytes]
    current: str

    def __post_init__(self) -> None:
        check_key_versions(self.roots, self.current)

    @classmethod
    def parse(cls, text: str, current: str | None = None) -> Keyring:
        """``"v1:<base64>,v2:<base64>"`` (the format of ``PAYMENT_FIELD_KEYS``); current: the last, by default."""
        return cls(*parse_key_versions(text, current))

    def key(self, purpose: str, version: str | None = None) -> tuple[str, bytes]:
        """(version, key) for ``purpose``: a separate key per purpose, derived from the version's root."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown key purpose {purpose!r}")
        version = version or self.current
        try:
            root = self.roots[version]
        except KeyError:
            raise EncryptionError(f"key version {version!r} is not in the keyring") from None
        return version, hmac.new(root, b"payment-examples/" + purpose.encode(), hashlib.sha256).digest()

    def mac(self, purpose: str, message: bytes, version: str | None = None) -> tuple[str, str]:
        """(version, hex HMAC-SHA256 of ``message``) under ``purpose``'s key."""
        version, key = self.key(purpose, version)
        return version, hmac.new(key, message, hashlib.sha256).hexdigest()


def normalise_email(email: str) -> str:
    """The form a blind index is computed over: NFKC, trimmed, lower case (the local part too: providers treat it
    case-insensitively in practice, and a lookup must not miss on case)."""
    if not isinstance(email, str):
        raise ValidationError("email", "must be a string")
    text = unicodedata.normalize("NFKC", email).strip().lower()
    local, at, domain = text.partition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in text) or len(text) > 254:
        raise ValidationError("email", "is not an email address")
    return text


def blind_index(keyring: Keyring, merchant_id: str, email: str, version: str | None = None) -> str:
    """``<version>#<HMAC(merchant, normalised email)>``: equal for equal emails of one merchant, unlinkable across
    merchants and key versions, and useless without the key."""
    message = f"{merchant_id}\x00{normalise_email(email)}".encode()
    version, digest = keyring.mac("blind-index", message, version)
    return f"{version}#{digest}"


def card_fingerprint(keyring: Keyring, pan: str, version: str | None = None) -> str:
    """``<version>#<HMAC of the entire PAN>`` (PCI DSS v4.0 3.5.1.1: a keyed hash of the whole number, never of
    a part); the same card gives the same fingerprint under one key version, across customers."""
    version, digest = keyring.mac("fingerprint", validate_pan(pan).encode(), version)
    return f"{version}#{digest}"


def validate_pan(pan: str) -> str:
    """The card number's digits (spaces and dashes allowed as separators), 12-19 digits passing the Luhn check.
    Errors never echo the number."""
    if not isinstance(pan, str):
        raise ValidationError("card_number", "must be a string of digits")
    digits = pan.replace(" ", "").replace("-", "")
    if not digits.isascii() or not digits.isdigit():
        raise ValidationError("card_number", "must contain only digits, spaces or dashes")
    if not 12 <= len(digits) <= 19:
        raise ValidationError("card_number", f"must have 12 to 19 digits, got {len(digits)}")
    if not luhn_valid(digits):
        raise ValidationError("card_number", "fails the Luhn check (mistyped?)")
    return digits


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char) * (2 if i % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


# -- encrypted fields ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """Where a field lives: the item's key, the attribute, the merchant that owns it, and what it is."""

    item_key: str
    attribute: str
    merchant_id: str
    purpose: str

    def message(self, ciphertext: bytes, version: str) -> bytes:
        parts = (self.item_key, self.attribute, self.merchant_id, self.purpose, version)
        if any("\x00" in part for part in parts):
            raise ValueError("binding fields must not contain NUL")
        return "\x00".join(parts).encode() + b"\x00" + hashlib.sha256(ciphertext).digest()


class FieldEncryptor:
    """Encrypts and decrypts single field values under a KMS key, bound to their item (see the module docstring).

    ``kms_client_factory(region)`` returns a new boto3 KMS client (the SDK wraps its methods, so it must not be
    shared); ``on_kms_call`` is told the operation of every KMS call (to count them)."""

    def __init__(
        self,
        key_id: str,
        keyring: Keyring,
        *,
        kms_client_factory: Callable[[str], Any],
        previous_key_ids: tuple[str, ...] = (),
        cache: bool = True,
        max_age: timedelta = timedelta(minutes=5),
        max_messages: int = 1000,
        on_kms_call: Callable[[str], None] | None = None,
    ) -> None:
        import aws_encryption_sdk
        from aws_encryption_sdk import CommitmentPolicy

        if not key_id:
            raise ConfigurationError("no KMS key configured (PAYMENT_KMS_KEY_ID)")
        if max_age <= timedelta(0) or max_messages < 1:
            raise ValueError("max_age and max_messages must be positive")
        self.key_id = key_id
        self.keyring = keyring
        self._sdk = aws_encryption_sdk.EncryptionSDKClient(
            commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
        )

        def materials(key_ids: list[str]) -> Any:
            provider = _provider(key_ids, kms_client_factory, on_kms_call)
            if not cache:
                return aws_encryption_sdk.DefaultCryptoMaterialsManager(master_key_provider=provider)
            return aws_encryption_sdk.CachingCryptoMaterialsManager(
                master_key_provider=provider,
                cache=aws_encryption_sdk.LocalCryptoMaterialsCache(capacity=256),
                max_age=max_age.total_seconds(),
                max_messages_encrypted=max_messages,
            )

        # New values are encrypted under the current key only; values under a previous key (during a rotation)
        # still decrypt. A strict provider never tries a key it was not given.
        self._encrypt_materials = materials([key_id])
        self._decrypt_materials = (
            materials([key_id, *previous_key_ids]) if previous_key_ids else self._encrypt_materials
        )
        self._lock = threading.Lock()  # the SDK's cache is not documented as thread-safe

    def encrypt(self, value: str, binding: Binding) -> dict[str, Any]:
        """The stored form: ``{"c": ciphertext, "v": key version, "s": signature}``."""
        from aws_encryption_sdk.identifiers import Algorithm

        version = self.keyring.current
        try:
            with self._lock:
                ciphertext, _ = self._sdk.encrypt(
                    source=value.encode("utf-8"),
                    materials_manager=self._encrypt_materials,
                    encryption_context=self._context(binding, version),
                    algorithm=Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
                )
        except Exception as error:  # the SDK raises many types; none may leak the value
            raise EncryptionError(f"could not encrypt {binding.attribute}: {type(error).__name__}") from None
        _, signature = self.keyring.mac("signature", binding.message(ciphertext, version), version)
        return {"c": ciphertext, "v": version, "s": signature}

    def decrypt(self, stored: Mapping[str, Any], binding: Binding) -> str:
        """The clear value, after checking the signature binds it to ``binding``; fails closed otherwise."""
        try:
            ciphertext, version, signature = bytes(stored["c"]), str(stored["v"]), str(stored["s"])
        except (KeyError, TypeError) as error:
            raise EncryptionError(f"{binding.attribute}: not an encrypted field ({error})") from None
        _, expected = self.keyring.mac("signature", binding.message(ciphertext, version), version)
        if not hmac.compare_digest(expected, signature):
            raise FieldBindingError(
                f"{binding.attribute} of {binding.item_key}: the signature does not match this item, attribute "
                "and merchant (the ciphertext was moved or changed)"
            )
        try:
            with self._lock:
                clear, header = self._sdk.decrypt(source=ciphertext, materials_manager=self._decrypt_materials)
        except Exception as error:
            raise EncryptionError(f"could not decrypt {binding.attribute}: {type(error).__name__}") from None
        expected_context = self._context(binding, version)
        if any(header.encryption_context.get(k) != v for k, v in expected_context.items()):
            raise FieldBindingError(f"{binding.attribute}: encrypted for another merchant or purpose")
        return clear.decode("utf-8")

    @staticmethod
    def _context(binding: Binding, version: str) -> dict[str, str]:
        # Per tenant and purpose, never per item: the data-key cache is keyed on it.
        return {"merchant_id": binding.merchant_id, "purpose": binding.purpose, "key_version": version}


def _provider(key_ids: list[str], factory: Callable[[str], Any], on_kms_call: Callable[[str], None] | None) -> Any:
    from aws_encryption_sdk.key_providers.kms import StrictAwsKmsMasterKeyProvider

    class Provider(StrictAwsKmsMasterKeyProvider):
        """The SDK's strict KMS provider, with clients from our factory (endpoint, credentials, counting)."""

        def add_regional_client(self, region_name: str) -> None:
            if region_name not in self._regional_clients:
                client = factory(region_name)
                if on_kms_call is not None:
                    client.meta.events.register("after-call.kms", lambda model, **_: on_kms_call(model.name))
                self._register_client(client, region_name)
                self._regional_clients[region_name] = client

    regions = sorted({key.split(":")[3] for key in key_ids if key.startswith("arn:")})
    return Provider(key_ids=key_ids, **({"region_names": regions} if regions else {}))


def encryptor_for(
    settings: Any, *, cache: bool = True, on_kms_call: Callable[[str], None] | None = None
) -> FieldEncryptor:
    """A ``FieldEncryptor`` from the settings (their KMS key, field keys, endpoint and credentials)."""
    import boto3

    if not settings.field_keys:
        raise ConfigurationError("no field keys configured (PAYMENT_FIELD_KEYS)")

    def kms_client(region: str) -> Any:
        session = boto3.session.Session(
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key,
            aws_session_token=settings.aws_session_token,
            region_name=region,
        )
        return session.client("kms", endpoint_url=settings.endpoint_for("kms"))

    keyring = Keyring.parse(settings.field_keys, settings.field_key_version)
    return FieldEncryptor(
        settings.kms_key_id or "",
        keyring,
        kms_client_factory=kms_client,
        previous_key_ids=tuple(k for k in settings.kms_previous_key_ids if k != settings.kms_key_id),
        cache=cache,
        on_kms_call=on_kms_call,
    )
