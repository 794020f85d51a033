"""Secrets read at run time: the signing keys from one JSON secret, never from the function's configuration.

A deployed function names where its keys are (``PAYMENT_SECRETS_ID``: a Secrets Manager secret, or
``PAYMENT_SECRETS_PARAMETER``: an SSM Parameter Store SecureString) and reads them when its settings are built
(``config.Settings.from_env``), through Powertools Parameters, cached for ``max_age`` seconds per process. Why
not CloudFormation's ``{{resolve:secretsmanager:...}}`` into environment variables: the resolved values become
part of the function's configuration, readable by anyone allowed ``lambda:GetFunctionConfiguration``.

The value is a JSON object whose keys are the secret settings (each optional; at least one)::

    {"jwt_secret": "...", "cursor_secret": "...", "jwt_public_key": "-----BEGIN PUBLIC KEY-----...",
     "field_keys": "v1:<base64>", "audit_key": "..."}

Unknown keys, non-string values, keys shorter than 32 bytes and an unreadable secret are a
``ConfigurationError`` that names the secret and the key, never the value.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from payment_examples.core.errors import ConfigurationError

# JSON key in the secret -> the environment variable that could hold it instead (for messages).
SECRET_FIELDS = {
    "jwt_secret": "PAYMENT_JWT_SECRET",
    "jwt_public_key": "PAYMENT_JWT_PUBLIC_KEY",
    "cursor_secret": "PAYMENT_CURSOR_SECRET",
    "field_keys": "PAYMENT_FIELD_KEYS",
    "audit_key": "PAYMENT_AUDIT_KEY",
    "processor_webhook_secret": "PAYMENT_PROCESSOR_WEBHOOK_SECRET",
}
# HMAC keys (RFC 7518 3.2)
MIN_KEY_BYTES = {"jwt_secret": 32, "cursor_secret": 32, "audit_key": 32, "processor_webhook_secret": 32}
DEFAULT_MAX_AGE = 300  # seconds a read value is reused by this process (Powertools' cache)


class ParameterProvider(Protocol):
    """What is used of a Powertools provider (``SecretsProvider``, ``SSMProvider``) or a test's fake."""

    def get(self, name: str, max_age: int | None = None, transform: Any = None, **sdk_options: Any) -> Any: ...


def load_secrets(
    *,
    secret_id: str | None = None,
    parameter_name: str | None = None,
    provider: ParameterProvider | None = None,
    region: str | None = None,
    max_age: int = DEFAULT_MAX_AGE,
) -> dict[str, str]:
    """The secret settings held by ``secret_id`` (Secrets Manager) or ``parameter_name`` (SSM SecureString), as
    ``{setting: value}``. ``provider`` defaults to Powertools' provider for that service in ``region``."""
    if bool(secret_id) == bool(parameter_name):
        raise ConfigurationError("name exactly one of PAYMENT_SECRETS_ID and PAYMENT_SECRETS_PARAMETER")
    if max_age < 0:
        raise ConfigurationError("PAYMENT_SECRETS_MAX_AGE must not be negative")
    where = f"secret {secret_id!r}" if secret_id else f"parameter {parameter_name!r}"
    raw = _read(secret_id, parameter_name, provider, region, max_age, where)
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError:
            raise ConfigurationError(f"{where} is not UTF-8 text") from None
    if not isinstance(raw, str):
        raise ConfigurationError(f"{where} is not a string value")
    try:
        values = json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigurationError(f"{where} is not a JSON object (expected keys: {', '.join(SECRET_FIELDS)})") from None
    if not isinstance(values, dict) or not values:
        raise ConfigurationError(f"{where} must be a non-empty JSON object (keys: {', '.join(SECRET_FIELDS)})")
    unknown = sorted(set(values) - set(SECRET_FIELDS))
    if unknown:
        raise ConfigurationError(f"{where} has unknown keys {unknown} (accepted: {', '.join(SECRET_FIELDS)})")
    for key, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError(f"{where}: {key!r} must be a non-empty string")
        if len(value.encode()) < MIN_KEY_BYTES.get(key, 0):
            raise ConfigurationError(f"{where}: {key!r} must be at least {MIN_KEY_BYTES[key]} bytes")
    return dict(values)


def _read(secret_id, parameter_name, provider, region, max_age, where) -> Any:
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

    try:
        if secret_id:
            return (provider or _secrets_provider(region)).get(secret_id, max_age=max_age)
        return (provider or _ssm_provider(region)).get(parameter_name, max_age=max_age, decrypt=True)
    except GetParameterError as error:  # not found, access denied, throttled: the cause, without any value
        cause = error.__cause__ or error
        raise ConfigurationError(f"{where} could not be read: {type(cause).__name__}: {cause}"[:500]) from None


_providers: dict[tuple[str, str | None], Any] = {}


def _secrets_provider(region: str | None) -> Any:
    """One provider per region and process, so its cache serves every settings build of a Lambda container."""
    if ("secretsmanager", region) not in _providers:
        import boto3
        from aws_lambda_powertools.utilities.parameters import SecretsProvider

        client = boto3.session.Session().client("secretsmanager", region_name=region)
        _providers["secretsmanager", region] = SecretsProvider(boto3_client=client)
    return _providers["secretsmanager", region]


def _ssm_provider(region: str | None) -> Any:
    if ("ssm", region) not in _providers:
        import boto3
        from aws_lambda_powertools.utilities.parameters import SSMProvider

        _providers["ssm", region] = SSMProvider(boto3_client=boto3.session.Session().client("ssm", region_name=region))
    return _providers["ssm", region]
