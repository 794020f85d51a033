"""Secrets at run time (secrets.py, Settings.from_env) and the API handlers failing closed on AWS.

The secret settings come from one JSON secret in Secrets Manager or one SSM SecureString, read through Powertools
Parameters; a missing, malformed or weak secret is a ConfigurationError that names it (never its value). With
PAYMENT_USE_AWS=1 an API handler without a JWT audience, a JWT key or (query) a cursor secret refuses to run."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from payment_examples.core import secrets
from payment_examples.core.config import Settings, require_api_settings, use_settings
from payment_examples.core.errors import ConfigurationError
from payment_examples.handlers import process, query
from payment_examples.tables.models import bind_models, create_tables
from tests.api_events import HS_SECRET, api_event, token

JWT = "jwt-secret-from-secrets-manager-0123456789"
CURSOR = "cursor-secret-from-secrets-manager-0123456"
SECRET = {"jwt_secret": JWT, "cursor_secret": CURSOR}
AWS_ENV = {"PAYMENT_USE_AWS": "1", "AWS_REGION": "us-east-1", "PAYMENT_TABLE_PREFIX": "deployed-"}


class FakeProvider:
    """A Powertools-shaped provider that records its calls."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls: list[tuple[str, dict]] = []

    def get(self, name: str, max_age: int | None = None, transform: Any = None, **options: Any) -> Any:
        self.calls.append((name, {"max_age": max_age, "transform": transform, **options}))
        return self.value


@pytest.fixture(autouse=True)
def fresh_providers():
    secrets._providers.clear()  # Powertools' caches must not carry values from one moto account to the next
    yield
    secrets._providers.clear()


def test_settings_read_the_keys_from_a_secrets_manager_secret_at_run_time() -> None:
    with mock_aws():
        boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="payments/keys", SecretString=json.dumps(SECRET)
        )
        settings = Settings.from_env({**AWS_ENV, "PAYMENT_SECRETS_ID": "payments/keys"})
    assert (settings.jwt_secret, settings.cursor_secret, settings.use_aws) == (JWT, CURSOR, True)
    assert JWT not in repr(settings) and CURSOR not in repr(settings)


def test_settings_read_the_keys_from_an_ssm_securestring() -> None:
    with mock_aws():
        boto3.client("ssm", region_name="us-east-1").put_parameter(
            Name="/payments/keys", Value=json.dumps(SECRET), Type="SecureString"
        )
        settings = Settings.from_env({**AWS_ENV, "PAYMENT_SECRETS_PARAMETER": "/payments/keys"})
    assert (settings.jwt_secret, settings.cursor_secret) == (JWT, CURSOR)


def test_the_provider_is_asked_with_the_cache_age_and_without_a_secret_in_the_environment() -> None:
    provider = FakeProvider(json.dumps(SECRET))
    env = {**AWS_ENV, "PAYMENT_SECRETS_ID": "keys", "PAYMENT_SECRETS_MAX_AGE": "60"}
    settings = Settings.from_env(env, secrets_provider=provider)
    assert provider.calls == [("keys", {"max_age": 60, "transform": None})]
    assert settings.jwt_secret == JWT
    Settings.from_env({**AWS_ENV, "PAYMENT_SECRETS_ID": "keys"}, secrets_provider=provider)
    assert provider.calls[-1][1]["max_age"] == secrets.DEFAULT_MAX_AGE


def test_the_default_provider_caches_the_secret_for_max_age() -> None:
    env = {**AWS_ENV, "PAYMENT_SECRETS_ID": "keys"}
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        client.create_secret(Name="keys", SecretString=json.dumps(SECRET))
        uncached = Settings.from_env({**env, "PAYMENT_SECRETS_MAX_AGE": "0"})  # kept for 0 s
        client.put_secret_value(SecretId="keys", SecretString=json.dumps({**SECRET, "jwt_secret": "x" * 40}))
        fresh = Settings.from_env(env)  # read again, kept for the default 300 s
        client.put_secret_value(SecretId="keys", SecretString=json.dumps({**SECRET, "jwt_secret": "y" * 40}))
        cached = Settings.from_env(env)
    assert (uncached.jwt_secret, fresh.jwt_secret, cached.jwt_secret) == (JWT, "x" * 40, "x" * 40)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json", "is not a JSON object"),
        ("[1, 2]", "must be a non-empty JSON object"),
        ("{}", "must be a non-empty JSON object"),
        (json.dumps({**SECRET, "jwt_secert": JWT}), r"unknown keys \['jwt_secert'\]"),
        (json.dumps({"jwt_secret": 42}), "'jwt_secret' must be a non-empty string"),
        (json.dumps({"cursor_secret": "  "}), "'cursor_secret' must be a non-empty string"),
        (json.dumps({"jwt_secret": "short-secret"}), "'jwt_secret' must be at least 32 bytes"),
        (json.dumps({"cursor_secret": "c" * 31}), "'cursor_secret' must be at least 32 bytes"),
        (json.dumps({"audit_key": "a" * 31}), "'audit_key' must be at least 32 bytes"),
        (json.dumps({"field_keys": "v1:not-base64"}), "key version 'v1' is not base64"),
        (b"\xff\xfe", "is not UTF-8 text"),
    ],
)
def test_a_malformed_or_weak_secret_is_a_clear_error_that_never_shows_the_value(value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        Settings.from_env({**AWS_ENV, "PAYMENT_SECRETS_ID": "keys"}, secrets_provider=FakeProvider(value))
    assert "short-secret" not in str(raised.value) and "c" * 31 not in str(raised.value)


def test_a_missing_secret_names_it() -> None:
    with mock_aws(), pytest.raises(ConfigurationError, match=r"secret 'nope' could not be read: .*ResourceNotFound"):
        Settings.from_env({**AWS_ENV, "PAYMENT_SECRETS_ID": "nope"})
    with mock_aws(), pytest.raises(ConfigurationError, match=r"parameter '/nope' could not be read"):
        Settings.from_env({**AWS_ENV, "PAYMENT_SECRETS_PARAMETER": "/nope"})


def test_a_setting_in_both_the_environment_and_the_secret_is_refused() -> None:
    env = {**AWS_ENV, "PAYMENT_SECRETS_ID": "keys", "PAYMENT_JWT_SECRET": HS_SECRET}
    with pytest.raises(ConfigurationError, match="PAYMENT_JWT_SECRET is set and the secret holds 'jwt_secret'"):
        Settings.from_env(env, secrets_provider=FakeProvider(json.dumps(SECRET)))


def test_both_a_secret_and_a_parameter_is_refused() -> None:
    env = {**AWS_ENV, "PAYMENT_SECRETS_ID": "keys", "PAYMENT_SECRETS_PARAMETER": "/keys"}
    with pytest.raises(ConfigurationError, match="exactly one of PAYMENT_SECRETS_ID and PAYMENT_SECRETS_PARAMETER"):
        Settings.from_env(env, secrets_provider=FakeProvider(json.dumps(SECRET)))


def test_without_a_secret_name_nothing_is_read() -> None:
    provider = FakeProvider(json.dumps(SECRET))
    settings = Settings.from_env(AWS_ENV, secrets_provider=provider)
    assert provider.calls == [] and settings.jwt_secret is None


# -- failing closed on AWS ------------------------------------------------------------------------------------------

COMPLETE = Settings(use_aws=True, jwt_secret=HS_SECRET, jwt_audience="payments-api", cursor_secret=CURSOR)


@pytest.mark.parametrize(
    ("missing", "cursors", "named"),
    [
        ({"jwt_audience": None}, False, ["PAYMENT_JWT_AUDIENCE"]),
        ({"jwt_secret": None}, False, ["a JWT key"]),
        ({"cursor_secret": None}, True, ["the cursor secret"]),
        ({"jwt_audience": None, "jwt_secret": None, "cursor_secret": None}, True,
         ["PAYMENT_JWT_AUDIENCE", "a JWT key", "the cursor secret"]),
    ],
)  # fmt: skip
def test_on_aws_an_api_handler_without_audience_key_or_cursor_secret_refuses_to_start(
    missing: dict, cursors: bool, named: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        require_api_settings(replace(COMPLETE, **missing), cursors=cursors)
    assert all(name in str(raised.value) for name in named), raised.value


def test_what_is_required_depends_on_the_mode_and_the_handler() -> None:
    assert require_api_settings(COMPLETE, cursors=True) is COMPLETE
    public_key_only = replace(COMPLETE, jwt_secret=None, jwt_public_key="-----BEGIN PUBLIC KEY-----")
    assert require_api_settings(public_key_only, cursors=True) is public_key_only
    no_cursor = replace(COMPLETE, cursor_secret=None)
    assert require_api_settings(no_cursor, cursors=False) is no_cursor  # the process handler never pages
    local = Settings()  # embedded and endpoint modes keep per-request 401s (notebooks run without keys)
    assert require_api_settings(local, cursors=True) is local


@pytest.fixture
def deployed() -> Settings:
    """PAYMENT_USE_AWS=1 on moto in-process: the tables exist, the configuration is what is under test."""
    with mock_aws():
        settings = replace(COMPLETE, table_prefix="deployed-")
        create_tables(settings)
        yield settings


def _counts(settings: Settings) -> list[int]:
    client = boto3.client("dynamodb", region_name="us-east-1")
    return [client.scan(TableName=m.Meta.table_name, Select="COUNT")["Count"] for m in bind_models(settings).all()]


@pytest.mark.parametrize("missing", ["jwt_audience", "jwt_secret"])
def test_the_process_handler_on_aws_fails_closed_and_writes_nothing(deployed: Settings, missing: str) -> None:
    headers = {"Authorization": f"Bearer {token(aud='payments-api')}", "Idempotency-Key": "idem-1"}
    event = api_event("2.0", "POST", "/payments", headers=headers, body={"amount": 100, "currency": "USD"})
    with use_settings(replace(deployed, **{missing: None})), pytest.raises(ConfigurationError, match="missing"):
        process.handler(event, None)
    assert sum(_counts(deployed)) == 0
    with use_settings(deployed):  # the same request with the configuration complete
        assert process.handler(event, None)["statusCode"] == 201


def test_the_process_handler_refuses_a_token_for_another_audience(deployed: Settings) -> None:
    headers = {"Authorization": f"Bearer {token(aud='another-service')}", "Idempotency-Key": "idem-1"}
    event = api_event("2.0", "POST", "/payments", headers=headers, body={"amount": 100, "currency": "USD"})
    with use_settings(deployed):
        assert process.handler(event, None)["statusCode"] == 401
    assert sum(_counts(deployed)) == 0


@pytest.mark.parametrize("missing", ["jwt_audience", "jwt_secret", "cursor_secret"])
def test_the_query_handler_on_aws_fails_closed(deployed: Settings, missing: str) -> None:
    event = api_event("2.0", "GET", "/payments", headers={"Authorization": f"Bearer {token(aud='payments-api')}"})
    with use_settings(replace(deployed, **{missing: None})), pytest.raises(ConfigurationError, match="missing"):
        query.handler(event, None)
    with use_settings(deployed):
        response = query.handler(event, None)
    assert response["statusCode"] == 200 and json.loads(response["body"])["items"] == []
