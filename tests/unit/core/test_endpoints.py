"""Service-specific endpoints: DynamoDB on one endpoint, every other service (S3, KMS, STS) on another, as boto3's
``AWS_ENDPOINT_URL_DYNAMODB`` and ``AWS_ENDPOINT_URL`` do; the dynalite engine runs that way (dynalite + moto)."""

from __future__ import annotations

import pytest

from payment_examples.core import aws
from payment_examples.core.config import Settings
from payment_examples.core.errors import ConfigurationError
from payment_examples.encryption import fields as encryption
from tests.conftest import V1

DDB, REST = "http://127.0.0.1:8000", "http://127.0.0.1:4566"


def test_both_variables_give_dynamodb_its_own_endpoint_and_the_rest_the_generic_one() -> None:
    settings = Settings.from_env({"AWS_ENDPOINT_URL_DYNAMODB": DDB, "AWS_ENDPOINT_URL": REST})
    assert (settings.endpoint_url, settings.aws_endpoint_url, settings.mode) == (DDB, REST, "endpoint")
    assert [settings.endpoint_for(s) for s in ("dynamodb", "s3", "kms", "sts")] == [DDB, REST, REST, REST]


@pytest.mark.parametrize(
    "env",
    [{"AWS_ENDPOINT_URL": REST}, {"AWS_ENDPOINT_URL_DYNAMODB": DDB}],
)
def test_one_variable_is_every_service_endpoint(env: dict[str, str]) -> None:
    settings = Settings.from_env(env)
    (only,) = env.values()
    assert settings.aws_endpoint_url is None
    assert [settings.endpoint_for(s) for s in ("dynamodb", "s3", "kms", "sts")] == [only] * 4


def test_clients_talk_to_their_service_endpoint() -> None:
    settings = Settings(endpoint_url=DDB, aws_endpoint_url=REST, aws_access_key_id="a", aws_secret_access_key="b")
    assert aws.client("dynamodb", settings).meta.endpoint_url == DDB
    for service in ("s3", "kms", "sts"):
        assert aws.client(service, settings).meta.endpoint_url == REST, service


def test_field_encryption_builds_its_kms_clients_on_the_services_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(endpoint_url=DDB, aws_endpoint_url=REST, field_keys=V1, kms_key_id="alias/x")
    given: dict = {}
    monkeypatch.setattr(encryption, "FieldEncryptor", lambda *args, **kwargs: given.update(kwargs))
    encryption.encryptor_for(settings, cache=False)
    assert given["kms_client_factory"]("eu-west-1").meta.endpoint_url == REST  # the SDK's KMS clients


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"endpoint_url": DDB, "aws_endpoint_url": "localhost:4566"}, "http"),
        ({"endpoint_url": DDB, "aws_endpoint_url": "ftp://host"}, "http"),
        ({"endpoint_url": DDB, "aws_endpoint_url": "http://"}, "http"),
        ({"aws_endpoint_url": REST}, "DynamoDB's endpoint too"),
    ],
)
def test_bad_services_endpoint_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings(**kwargs)


def test_bad_services_endpoint_from_the_environment_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="http"):
        Settings.from_env({"AWS_ENDPOINT_URL_DYNAMODB": DDB, "AWS_ENDPOINT_URL": "localhost:4566"})
    with pytest.raises(ConfigurationError, match="choose one"):
        Settings.from_env({"AWS_ENDPOINT_URL_DYNAMODB": DDB, "AWS_ENDPOINT_URL": REST, "PAYMENT_USE_AWS": "1"})


def test_with_endpoint_keeps_one_endpoint_when_both_are_the_same() -> None:
    one = Settings().with_endpoint(DDB, aws_endpoint_url=DDB, access_key_id="a", secret_access_key="b")
    two = Settings().with_endpoint(DDB, aws_endpoint_url=REST, access_key_id="a", secret_access_key="b")
    assert (one.aws_endpoint_url, two.aws_endpoint_url, two.endpoint_for("kms")) == (None, REST, REST)
