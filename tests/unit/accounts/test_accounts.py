"""The account registry: STS assume-role credentials per account, cached until shortly before expiry, real moto
accounts on the embedded engine (in-process and the local server), narrow errors without secrets."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from pynamodb.exceptions import DoesNotExist

from payment_examples.accounts.registry import Account, AccountRegistry, local_accounts
from payment_examples.core.clock import FixedClock, SteppingClock
from payment_examples.core.config import Settings, use_settings
from payment_examples.core.errors import (
    AccountAccessError,
    ConfigurationError,
    NotFoundError,
    PaymentExamplesError,
    UnknownAccountError,
)
from payment_examples.payments.service import PaymentService
from payment_examples.tables.models import bind_models, create_tables

ARN_A = "arn:aws:iam::111111111111:role/payment-examples"
ARN_B = "arn:aws:iam::111111111112:role/payment-examples"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = "wJalrXUtnFEMI-do-not-print-me"


def identity(registry: AccountRegistry, name: str) -> str:
    return registry.client("sts", name).get_caller_identity()["Account"]


def table_names(settings: Settings) -> list[str]:
    return boto3.client(
        "dynamodb",
        region_name=settings.region,
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.aws_access_key_id or "testing",
        aws_secret_access_key=settings.aws_secret_access_key or "testing",
        aws_session_token=settings.aws_session_token,
    ).list_tables()["TableNames"]


def fresh_sts() -> Any:
    """An STS client of its own (event hooks on it cannot leak into the cached clients other tests use)."""
    return boto3.client("sts", region_name="us-east-1")


class FakeSts:
    """Stands in for an STS client: returns ``response`` to every AssumeRole and records the requests."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response
        self.requests: list[dict[str, Any]] = []

    def assume_role(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        return self.response


def credentials(key_id: str = "ASIAFAKE", expiration: Any = T0 + timedelta(hours=1)) -> dict[str, Any]:
    return {
        "Credentials": {
            "AccessKeyId": key_id,
            "SecretAccessKey": SECRET,
            "SessionToken": "token-" + SECRET,
            "Expiration": expiration,
        }
    }


# -- moto accounts: separate ids, tables and items -------------------------------------------------------------


def test_two_accounts_are_separate_moto_accounts(aws: Settings, clock: SteppingClock) -> None:
    base = replace(aws, table_prefix="multi-")
    registry = local_accounts(settings=base, create_tables=False)
    assert registry.names() == ("account-a", "account-b")
    assert [registry.account(n).account_id for n in registry.names()] == ["111111111111", "111111111112"]
    assert (identity(registry, "account-a"), identity(registry, "account-b")) == ("111111111111", "111111111112")
    assert fresh_sts().get_caller_identity()["Account"] == "123456789012"  # the default account is a third one

    created = create_tables(registry.settings("account-a"))
    assert sorted(table_names(registry.settings("account-a"))) == sorted(created)
    assert table_names(registry.settings("account-b")) == []
    assert not [name for name in table_names(aws) if name.startswith("multi-")]  # not in the default account
    described = registry.client("dynamodb", "account-a").describe_table(TableName="multi-payments")["Table"]
    assert ":111111111111:table/multi-payments" in described["TableArn"]

    create_tables(registry.settings("account-b"))  # same table names, another account
    payment = PaymentService(models=registry.models("account-a"), clock=clock).create_payment("m1", "k1", 500, "EUR")
    stored = registry.models("account-a").payment.get(payment.payment.id)
    assert (stored.amount, stored.currency) == (500, "EUR")
    with pytest.raises(DoesNotExist):
        registry.models("account-b").payment.get(payment.payment.id)


def test_local_accounts_creates_each_accounts_tables(aws: Settings) -> None:
    registry = local_accounts(("ledger", "vault", "processor"), settings=replace(aws, table_prefix="loc-"))
    expected = sorted(model.Meta.table_name for model in bind_models(replace(aws, table_prefix="loc-")).all())
    for name, account_id in zip(registry.names(), ("111111111111", "111111111112", "111111111113"), strict=True):
        assert identity(registry, name) == account_id
        assert sorted(table_names(registry.settings(name))) == expected
    assert registry.assume_role_calls == 3


# -- caching and refresh -------------------------------------------------------------------------------------------


def test_credentials_are_cached_then_refreshed_before_they_expire(aws: Settings) -> None:
    sts = fresh_sts()
    expirations: list[datetime] = []
    sts.meta.events.register(
        "after-call.sts.AssumeRole",
        lambda parsed, **_: expirations.append(parsed["Credentials"]["Expiration"]),
    )
    clock = FixedClock(datetime.now(UTC))  # moto's Expiration is real time + the session length
    margin = timedelta(minutes=5)
    base = replace(aws, table_prefix="ref-")
    registry = AccountRegistry([Account("account-a", ARN_A)], settings=base, sts_client=sts, clock=clock)

    old = registry.settings("account-a")
    assert registry.settings("account-a") is old  # cached: no second AssumeRole
    assert registry.assume_role_calls == 1
    create_tables(old)
    refresh_at = expirations[0] - margin

    clock.set(refresh_at - timedelta(microseconds=1))
    assert registry.settings("account-a") is old
    assert registry.assume_role_calls == 1

    # Record the access key every DynamoDB request is signed with, on the old client and on whichever comes next.
    signed_with: list[tuple[str, str]] = []

    def record(label: str) -> Any:
        def hook(request: Any, **_: Any) -> None:
            header = request.headers["Authorization"].decode()
            signed_with.append((label, header.split("Credential=")[1].split("/")[0]))

        return hook

    old_client = registry.client("dynamodb", "account-a")
    old_client.meta.events.register("before-send.dynamodb", record("old"))
    assert "ref-payments" in old_client.list_tables()["TableNames"]
    assert signed_with == [("old", old.aws_access_key_id)]

    clock.set(refresh_at)  # the refresh instant: the next use assumes the role again, before any call
    signed_with.clear()
    new_client = registry.client("dynamodb", "account-a")
    new = registry.settings("account-a")
    assert registry.assume_role_calls == 2
    assert new is not old and new_client is not old_client
    assert new.aws_access_key_id != old.aws_access_key_id
    assert new.aws_session_token != old.aws_session_token
    assert (new.table_prefix, new.region, new.endpoint_url) == (base.table_prefix, base.region, base.endpoint_url)
    new_client.meta.events.register("before-send.dynamodb", record("new"))
    assert "ref-payments" in new_client.list_tables()["TableNames"]  # succeeds, in the same account
    assert registry.models("account-a").payment.Meta.aws_access_key_id == new.aws_access_key_id
    assert registry.models("account-a").payment.count() == 0
    assert identity(registry, "account-a") == "111111111111"
    assert signed_with == [("new", new.aws_access_key_id)]  # nothing was signed with the old key after refresh_at
    assert registry.assume_role_calls == 2  # and the new credentials are cached in turn


def test_a_response_expiring_within_the_margin_is_used_once_then_replaced() -> None:
    sts = FakeSts(credentials(expiration=T0 + timedelta(minutes=2)))
    registry = AccountRegistry([Account("a", ARN_A)], settings=Settings(), sts_client=sts, clock=FixedClock(T0))
    assert registry.settings("a").aws_access_key_id == "ASIAFAKE"
    registry.settings("a")
    assert registry.assume_role_calls == 2


def test_a_change_of_base_settings_assumes_again() -> None:
    sts = FakeSts(credentials())
    registry = AccountRegistry([Account("a", ARN_A)], sts_client=sts, clock=FixedClock(T0))
    with use_settings(Settings(table_prefix="one-")):
        assert registry.settings("a").table_prefix == "one-"
    with use_settings(Settings(table_prefix="two-")):
        assert registry.settings("a").table_prefix == "two-"
    assert registry.assume_role_calls == 2


# -- what is sent to STS ---------------------------------------------------------------------------------------


def test_external_id_and_session_are_passed_to_assume_role(aws: Settings) -> None:
    sts = fresh_sts()
    sent: list[dict[str, Any]] = []
    sts.meta.events.register("before-parameter-build.sts.AssumeRole", lambda params, **_: sent.append(dict(params)))
    registry = AccountRegistry(
        [Account("a", ARN_A, external_id="payments-ext-42"), Account("b", ARN_B)],
        settings=aws,
        sts_client=sts,
        session_seconds=1800,
        session_name="recon-worker",
    )
    registry.settings("a")
    registry.settings("b")
    assert sent == [
        {"RoleArn": ARN_A, "RoleSessionName": "recon-worker", "DurationSeconds": 1800, "ExternalId": "payments-ext-42"},
        {"RoleArn": ARN_B, "RoleSessionName": "recon-worker", "DurationSeconds": 1800},
    ]


def test_settings_carry_the_account_region_and_keep_the_base() -> None:
    base = Settings(table_prefix="p-", region="us-west-2", endpoint_url="http://127.0.0.1:1")
    registry = AccountRegistry(
        [Account("a", ARN_A), Account("eu", ARN_B, region="eu-west-1")],
        settings=base,
        sts_client=FakeSts(credentials()),
        clock=FixedClock(T0),
    )
    a, eu = registry.settings("a"), registry.settings("eu")
    assert (a.region, eu.region) == ("us-west-2", "eu-west-1")
    assert (eu.table_prefix, eu.endpoint_url) == ("p-", "http://127.0.0.1:1")
    assert (eu.aws_access_key_id, eu.aws_secret_access_key, eu.aws_session_token) == (
        "ASIAFAKE",
        SECRET,
        "token-" + SECRET,
    )
    assert SECRET not in repr(eu)  # secret and token are kept out of repr by Settings


# -- bad input and STS failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arn",
    [
        "",
        "arn:aws:iam::12345:role/x",  # not 12 digits
        "arn:aws:iam::111111111111:user/x",  # not a role
        "arn:aws:iam::111111111111:role/",  # no role name
        "arn:aws:s3:::bucket",
        "arn:aws:iam:us-east-1:111111111111:role/x",  # IAM ARNs have no region
        "arn:aws:iam::111111111111:role/bad name",
        "arn:aws:iam::111111111111:role//x",
    ],
)
def test_malformed_role_arn_is_refused(arn: str) -> None:
    with pytest.raises(ConfigurationError, match="role ARN") as raised:
        Account("a", arn)
    assert repr(arn) in str(raised.value)


def test_well_formed_role_arns_are_accepted() -> None:
    assert Account("a", "arn:aws:iam::123456789012:role/service/payments/ledger-writer").account_id == "123456789012"
    assert Account("a", "arn:aws-us-gov:iam::000000000001:role/x").account_id == "000000000001"


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 65, "naïve", "a.b"])
def test_bad_account_name_is_refused(name: str) -> None:
    with pytest.raises(ConfigurationError, match="account name"):
        Account(name, ARN_A)


@pytest.mark.parametrize("external_id", ["Q", "Qz" * 613, "secret ext-id", "tab\tQz"])
def test_bad_external_id_is_refused_without_echoing_it(external_id: str) -> None:
    with pytest.raises(ConfigurationError, match="external id") as raised:
        Account("a", ARN_A, external_id=external_id)
    assert external_id not in str(raised.value)
    assert "payments-ext" not in repr(Account("a", ARN_A, external_id="payments-ext-42"))


def test_duplicate_names_and_an_empty_registry_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="'a' is given more than once"):
        AccountRegistry([Account("a", ARN_A), Account("a", ARN_B)], settings=Settings())
    with pytest.raises(ConfigurationError, match="at least one account"):
        AccountRegistry([], settings=Settings())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"session_seconds": 899}, "session_seconds"),
        ({"session_seconds": 43_201}, "session_seconds"),
        ({"refresh_margin": timedelta(minutes=15)}, "refresh_margin"),
        ({"refresh_margin": timedelta(seconds=-1)}, "refresh_margin"),
        ({"session_name": "x"}, "session name"),
        ({"session_name": "has space"}, "session name"),
    ],
)
def test_impossible_session_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AccountRegistry([Account("a", ARN_A)], settings=Settings(), **options)


def test_unknown_account_names_the_known_ones() -> None:
    registry = AccountRegistry([Account("account-a", ARN_A), Account("account-b", ARN_B)], settings=Settings())
    with pytest.raises(UnknownAccountError) as raised:
        registry.settings("account-c")
    assert isinstance(raised.value, NotFoundError) and raised.value.http_status == 404
    assert str(raised.value) == "unknown account 'account-c'; known accounts: account-a, account-b"
    with pytest.raises(UnknownAccountError):
        registry.account("account-c")
    assert registry.assume_role_calls == 0


def test_access_denied_is_an_account_access_error_without_secrets() -> None:
    sts = fresh_sts()
    registry = AccountRegistry(
        [Account("account-a", ARN_A, external_id="payments-ext-42")], settings=Settings(), sts_client=sts
    )
    expected = {"RoleArn": ARN_A, "RoleSessionName": "payment-examples", "DurationSeconds": 900}
    with Stubber(sts) as stub:
        for _ in range(2):
            stub.add_client_error(
                "assume_role",
                service_error_code="AccessDenied",
                service_message="User: arn:aws:iam::123456789012:user/ci is not authorized to perform sts:AssumeRole",
                http_status_code=403,
                expected_params={**expected, "ExternalId": "payments-ext-42"},
            )
        with pytest.raises(AccountAccessError) as raised:
            registry.settings("account-a")
        error = raised.value
        assert isinstance(error, PaymentExamplesError) and not isinstance(error, ConfigurationError)
        assert (error.name, error.code) == ("account-a", "AccessDenied")
        assert str(error) == f"cannot assume role {ARN_A} for account 'account-a': AccessDenied"
        assert "payments-ext-42" not in str(error)
        with pytest.raises(AccountAccessError):  # a failure is not cached: the next use asks STS again
            registry.settings("account-a")
        stub.assert_no_pending_responses()
    assert registry.assume_role_calls == 2


@pytest.mark.parametrize(
    "response",
    [
        {},
        {"Credentials": {"AccessKeyId": "ASIAFAKE", "SecretAccessKey": SECRET}},
        credentials(expiration="2026-01-01T01:00:00Z"),  # not a datetime
        credentials(expiration=datetime(2026, 1, 1, 1)),  # naive
        credentials(key_id=""),
    ],
)
def test_malformed_sts_response_is_an_account_access_error(response: dict[str, Any]) -> None:
    registry = AccountRegistry([Account("a", ARN_A)], settings=Settings(), sts_client=FakeSts(response))
    with pytest.raises(AccountAccessError, match="MalformedResponse") as raised:
        registry.settings("a")
    assert SECRET not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_local_accounts_refuses_real_aws_and_account_ids_past_12_digits() -> None:
    with pytest.raises(ConfigurationError, match="moto accounts"):
        local_accounts(settings=Settings(use_aws=True))
    with pytest.raises(ConfigurationError, match="12 digits"):
        local_accounts(settings=Settings(), first_account_id=999_999_999_999, create_tables=False)


# -- the local server processes (moto; dynalite + moto): threads, and the same account separation -----------------


@pytest.mark.slow  # the engine processes: make test runs it, make test-fast does not
def test_concurrent_callers_for_one_account_make_one_assume_role_call(engine: Settings) -> None:
    registry = local_accounts(settings=engine, create_tables=False)
    results: list[Settings] = []
    barrier = threading.Barrier(8)

    def call() -> None:
        barrier.wait()
        results.append(registry.settings("account-a"))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and all(result is results[0] for result in results)
    assert registry.assume_role_calls == 1
    assert identity(registry, "account-a") == "111111111111"


@pytest.mark.slow  # the engine processes: make test runs it, make test-fast does not
def test_accounts_are_separate_on_the_local_server(engine: Settings, clock: SteppingClock) -> None:
    # The same table names in A, in B and in the default account. STS is the moto server's on both engines; dynalite
    # has one account whatever the credentials, so there the accounts' tables are on that moto server too.
    registry = local_accounts(settings=engine)
    assert registry.settings("account-a").endpoint_url == engine.endpoint_for("sts")
    assert (identity(registry, "account-a"), identity(registry, "account-b")) == ("111111111111", "111111111112")
    created = PaymentService(models=registry.models("account-a"), clock=clock).create_payment("m1", "k1", 700, "USD")
    assert registry.models("account-a").payment.get(created.payment.id).amount == 700
    for other in (registry.models("account-b"), bind_models(engine)):
        with pytest.raises(DoesNotExist):
            other.payment.get(created.payment.id)
