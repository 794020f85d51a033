"""Field encryption (moto's KMS in-process): round trips, ciphertexts that cannot move between items, attributes or
merchants, fail-closed keys, the data-key cache counted in KMS calls, blind indexes, card fingerprints and PAN
validation."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from payment_examples.core.errors import ConfigurationError, ValidationError
from payment_examples.encryption.fields import (
    Binding,
    EncryptionError,
    FieldBindingError,
    FieldEncryptor,
    Keyring,
    blind_index,
    card_fingerprint,
    validate_pan,
)

KEYRING = Keyring({"v1": b"1" * 32, "v2": b"2" * 32}, "v1")
EMAIL = Binding("customer#c-1", "email", "merchant-a", "email")
VISA = "4111 1111 1111 1111"


@pytest.fixture
def kms() -> Iterator[tuple[str, Counter]]:
    with mock_aws():
        key = boto3.client("kms", region_name="us-east-1").create_key(Description="fields")["KeyMetadata"]["Arn"]
        yield key, Counter()


def encryptor(key: str, calls: Counter, **kwargs) -> FieldEncryptor:
    return FieldEncryptor(
        key,
        kwargs.pop("keyring", KEYRING),
        kms_client_factory=lambda region: boto3.client("kms", region_name=region),
        on_kms_call=lambda operation: calls.update([operation]),
        **kwargs,
    )


def test_round_trip_without_the_clear_value_in_the_stored_form(kms) -> None:
    fields = encryptor(*kms)
    stored = fields.encrypt("Alice@Example.com", EMAIL)
    assert set(stored) == {"c", "v", "s"} and stored["v"] == "v1"
    assert b"Alice" not in stored["c"] and b"Example" not in stored["c"]
    assert fields.decrypt(stored, EMAIL) == "Alice@Example.com"
    assert fields.encrypt("Alice@Example.com", EMAIL)["c"] != stored["c"]  # a fresh IV every time


@pytest.mark.parametrize(
    "elsewhere",
    [
        Binding("customer#c-2", "email", "merchant-a", "email"),  # copied onto another customer
        Binding("customer#c-1", "name", "merchant-a", "email"),  # onto another attribute
        Binding("customer#c-1", "email", "merchant-b", "email"),  # onto another merchant's item
        Binding("customer#c-1", "email", "merchant-a", "card"),  # read for another purpose
    ],
)
def test_a_ciphertext_moved_elsewhere_fails_to_verify(kms, elsewhere: Binding) -> None:
    fields = encryptor(*kms)
    stored = fields.encrypt("alice@example.com", EMAIL)
    with pytest.raises(FieldBindingError, match="the signature does not match"):
        fields.decrypt(stored, elsewhere)


def test_an_edited_ciphertext_or_signature_fails(kms) -> None:
    fields = encryptor(*kms)
    stored = fields.encrypt("alice@example.com", EMAIL)
    flipped = bytearray(stored["c"])
    flipped[-1] ^= 1
    with pytest.raises(FieldBindingError):
        fields.decrypt({**stored, "c": bytes(flipped)}, EMAIL)
    with pytest.raises(FieldBindingError):
        fields.decrypt({**stored, "s": "0" * 64}, EMAIL)
    with pytest.raises(EncryptionError, match="not an encrypted field"):
        fields.decrypt({"c": stored["c"]}, EMAIL)


def test_the_sdk_context_binds_the_merchant_even_if_the_signature_were_forged(kms) -> None:
    # Someone holding the signing key (but not KMS access for another tenant's context) re-signs merchant A's
    # ciphertext for merchant B: the encryption context inside the message still says merchant A.
    fields = encryptor(*kms)
    stored = fields.encrypt("alice@example.com", EMAIL)
    other = Binding("customer#c-1", "email", "merchant-b", "email")
    _, forged = KEYRING.mac("signature", other.message(stored["c"], "v1"), "v1")
    with pytest.raises(FieldBindingError, match="another merchant or purpose"):
        fields.decrypt({**stored, "s": forged}, other)


def test_a_wrong_key_fails_closed(kms) -> None:
    key, calls = kms
    stored = encryptor(key, calls).encrypt("alice@example.com", EMAIL)
    other_key = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
    with pytest.raises(EncryptionError, match="could not decrypt email"):
        encryptor(other_key, calls).decrypt(stored, EMAIL)
    with pytest.raises(EncryptionError, match="key version 'v9' is not in the keyring"):
        encryptor(key, calls).decrypt({**stored, "v": "v9"}, EMAIL)
    with pytest.raises(ConfigurationError, match="no KMS key configured"):
        encryptor("", calls)


def test_after_a_key_rotation_old_values_still_decrypt_and_new_ones_use_the_new_keys(kms) -> None:
    key, calls = kms
    old = encryptor(key, calls).encrypt("alice@example.com", EMAIL)
    new_key = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
    rotated = encryptor(new_key, calls, keyring=Keyring(KEYRING.roots, "v2"), previous_key_ids=(key,))
    assert rotated.decrypt(old, EMAIL) == "alice@example.com"
    fresh = rotated.encrypt("alice@example.com", EMAIL)
    assert fresh["v"] == "v2"
    with pytest.raises(EncryptionError):  # the new value is under the new KMS key only
        encryptor(key, calls).decrypt(fresh, EMAIL)


@pytest.mark.slow  # seconds: make test runs it, make test-fast does not
def test_the_data_key_cache_turns_1000_writes_into_one_kms_call(kms) -> None:
    key, _ = kms
    cached, uncached = Counter(), Counter()
    with_cache = encryptor(key, cached, max_messages=1000)
    without = encryptor(key, uncached, cache=False)
    for i in range(1000):
        binding = Binding(f"customer#c-{i}", "email", "merchant-a", "email")  # a new item every time
        with_cache.encrypt(f"user{i}@example.com", binding)
        without.encrypt(f"user{i}@example.com", binding)
    assert cached == Counter({"GenerateDataKey": 1})
    assert uncached == Counter({"GenerateDataKey": 1000})
    with_cache.encrypt("one-more@example.com", EMAIL)  # message 1,001: the cached key is used up
    assert cached["GenerateDataKey"] == 2


def test_each_merchant_and_purpose_gets_its_own_data_key(kms) -> None:
    key, calls = kms
    fields = encryptor(key, calls)
    for merchant in ("merchant-a", "merchant-b"):
        for purpose in ("email", "card"):
            for i in range(3):
                fields.encrypt("x", Binding(f"customer#{i}", purpose, merchant, purpose))
    assert calls["GenerateDataKey"] == 4


# -- keyed hashes ---------------------------------------------------------------------------------------------


def test_blind_index_is_stable_normalised_and_scoped() -> None:
    a = blind_index(KEYRING, "merchant-a", "Alice@Example.com ")
    assert a == blind_index(KEYRING, "merchant-a", "alice@example.com")
    assert a.startswith("v1#") and "alice" not in a
    assert a != blind_index(KEYRING, "merchant-b", "alice@example.com")
    assert a != blind_index(KEYRING, "merchant-a", "alice@example.com", "v2")
    assert a != blind_index(KEYRING, "merchant-a", "alice@example.org")


@pytest.mark.parametrize("email", ["", "alice", "alice@", "@example.com", "al ice@example.com", "a@b"])
def test_blind_index_refuses_what_is_not_an_email(email: str) -> None:
    with pytest.raises(ValidationError, match="email"):
        blind_index(KEYRING, "merchant-a", email)


def test_card_fingerprint_is_stable_and_key_versioned() -> None:
    fingerprint = card_fingerprint(KEYRING, VISA)
    assert fingerprint == card_fingerprint(KEYRING, "4111-1111-1111-1111")
    assert fingerprint.startswith("v1#") and "1111" not in fingerprint.split("#")[1][:4]
    assert fingerprint != card_fingerprint(KEYRING, VISA, "v2")
    assert fingerprint != card_fingerprint(KEYRING, "5555 5555 5555 4444")


@pytest.mark.parametrize(
    ("pan", "reason"),
    [
        ("4111 1111 1111 1112", "Luhn"),
        ("4111 1111 111", "12 to 19 digits, got 11"),
        ("4" * 20, "12 to 19 digits, got 20"),
        ("4111 1111 1111 111a", "only digits"),
        ("٤١١١١١١١١١١١١١١١", "only digits"),  # Arabic-Indic digits are not card digits
    ],
)
def test_bad_card_numbers_are_refused_without_echoing_them(pan: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason) as error:
        validate_pan(pan)
    assert pan.replace(" ", "")[:8] not in str(error.value) and "4111" not in str(error.value)


def test_valid_card_numbers() -> None:
    assert validate_pan("4111 1111 1111 1111") == "4111111111111111"
    assert validate_pan("378282246310005") == "378282246310005"  # Amex test number, 15 digits


def test_keyring_parsing_and_its_errors() -> None:
    keys = f"v1:{base64.b64encode(b'a' * 32).decode()},v2:{base64.b64encode(b'b' * 32).decode()}"
    assert Keyring.parse(keys).current == "v2"
    assert Keyring.parse(keys, "v1").key("email")[0] == "v1"
    assert Keyring.parse(keys).key("email") != Keyring.parse(keys).key("card")  # one key per purpose
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        Keyring.parse(f"v1:{base64.b64encode(b'short').decode()}")
    with pytest.raises(ConfigurationError, match="not base64"):
        Keyring.parse("v1:***")
    with pytest.raises(ConfigurationError, match="no field keys"):
        Keyring.parse(" , ")
    with pytest.raises(ConfigurationError, match="current key version 'v3'"):
        Keyring.parse(keys, "v3")


def test_settings_without_field_keys_or_kms_key_fail_closed() -> None:
    from payment_examples.core.config import Settings
    from payment_examples.encryption.fields import encryptor_for

    with pytest.raises(ConfigurationError, match="no field keys configured"):
        encryptor_for(Settings(kms_key_id="arn:aws:kms:us-east-1:123456789012:key/x"))
    with pytest.raises(ConfigurationError, match="no KMS key configured"):
        encryptor_for(Settings(field_keys=f"v1:{base64.b64encode(b'k' * 32).decode()}"))
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        Settings(field_keys=f"v1:{base64.b64encode(b'short').decode()}")
    with pytest.raises(ConfigurationError, match="PAYMENT_FIELD_KEY_VERSION is set"):
        Settings(field_key_version="v1")
    env = {"PAYMENT_FIELD_KEYS": f"v1:{base64.b64encode(b'k' * 32).decode()}", "PAYMENT_KMS_KEY_ID": "k",
           "PAYMENT_KMS_PREVIOUS_KEY_IDS": "old-1, old-2"}  # fmt: skip
    loaded = Settings.from_env(env)
    assert loaded.kms_previous_key_ids == ("old-1", "old-2") and loaded.field_keys == env["PAYMENT_FIELD_KEYS"]
    assert env["PAYMENT_FIELD_KEYS"].split(":")[1] not in repr(loaded)  # the field keys never appear in a repr
