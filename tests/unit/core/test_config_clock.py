"""Settings (environment parsing, validation, scoped overrides), clocks and id factories."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from payment_examples.core.clock import FixedClock, SeededIds, SteppingClock, name_based_id
from payment_examples.core.config import Settings, get_settings, use_settings
from payment_examples.core.errors import ConfigurationError

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)

# -- Settings.from_env --------------------------------------------------------------------------------------------


def test_from_env_defaults_to_embedded() -> None:
    settings = Settings.from_env({})
    assert (settings.region, settings.table_prefix, settings.endpoint_url, settings.use_aws) == (
        "us-east-1",
        "payment-examples-",
        None,
        False,
    )
    assert settings.mode == "embedded"


def test_from_env_reads_prefix_region_and_endpoint() -> None:
    settings = Settings.from_env(
        {
            "PAYMENT_TABLE_PREFIX": "dev.team_1-",
            "AWS_REGION": "eu-west-2",
            "AWS_DEFAULT_REGION": "us-west-1",
            "AWS_ENDPOINT_URL": "http://generic:4566",
            "AWS_ENDPOINT_URL_DYNAMODB": "http://localhost:8000",
        }
    )
    assert settings.region == "eu-west-2"  # AWS_REGION wins over AWS_DEFAULT_REGION
    assert settings.endpoint_url == "http://localhost:8000"  # the service-specific endpoint wins
    assert settings.table_name("payments") == "dev.team_1-payments"
    assert settings.mode == "endpoint"


def test_from_env_falls_back_to_generic_endpoint_and_default_region() -> None:
    settings = Settings.from_env({"AWS_ENDPOINT_URL": "https://ddb.example.com", "AWS_DEFAULT_REGION": "ap-south-1"})
    assert (settings.endpoint_url, settings.region, settings.mode) == (
        "https://ddb.example.com",
        "ap-south-1",
        "endpoint",
    )


@pytest.mark.parametrize(
    ("raw", "use_aws"),
    [("1", True), ("true", True), (" TRUE ", True), ("Yes", True), ("on", True)]
    + [("", False), ("0", False), ("false", False), ("No", False), ("off", False)],
)
def test_payment_use_aws_values(raw: str, use_aws: bool) -> None:
    settings = Settings.from_env({"PAYMENT_USE_AWS": raw})
    assert settings.use_aws is use_aws
    assert settings.mode == ("aws" if use_aws else "embedded")


@pytest.mark.parametrize(
    "environ",
    [
        {"PAYMENT_USE_AWS": "maybe"},
        {"PAYMENT_USE_AWS": "2"},
        {"PAYMENT_TABLE_PREFIX": "bad prefix"},
        {"PAYMENT_TABLE_PREFIX": "p/"},
        {"PAYMENT_TABLE_PREFIX": "p" * 65},
        {"AWS_ENDPOINT_URL": "localhost:8000"},
        {"AWS_ENDPOINT_URL_DYNAMODB": "ftp://host"},
        {"AWS_ENDPOINT_URL_DYNAMODB": "http://"},
        {"AWS_REGION": "US_EAST_1"},
        {"AWS_REGION": "us east 1"},
        {"PAYMENT_USE_AWS": "1", "AWS_ENDPOINT_URL": "http://localhost:8000"},
    ],
)
def test_from_env_rejects_impossible_configuration(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env(environ)


def test_prefix_length_boundary() -> None:
    assert Settings(table_prefix="p" * 64).table_name("x") == "p" * 64 + "x"
    assert Settings(table_prefix="").table_name("payments") == "payments"


def test_with_endpoint_keeps_other_fields_and_switches_mode() -> None:
    base = Settings(table_prefix="x-", region="eu-west-1")
    local = base.with_endpoint("http://127.0.0.1:5000", access_key_id="k", secret_access_key="s")
    assert (local.table_prefix, local.region, local.mode) == ("x-", "eu-west-1", "endpoint")
    assert (local.aws_access_key_id, local.aws_secret_access_key) == ("k", "s")
    assert base.mode == "embedded"


# -- use_settings -------------------------------------------------------------------------------------------------


def test_use_settings_nests_and_restores() -> None:
    outside = get_settings()
    a, b = Settings(table_prefix="a-"), Settings(table_prefix="b-")
    with use_settings(a):
        assert get_settings() == a
        with use_settings(b):
            assert get_settings() == b
            with use_settings(a):
                assert get_settings() == a
            assert get_settings() == b
        assert get_settings() == a
    assert get_settings() == outside


def test_use_settings_restores_after_an_exception() -> None:
    outside = get_settings()
    inner = Settings(table_prefix="boom-")
    with pytest.raises(RuntimeError), use_settings(inner):
        assert get_settings() == inner
        raise RuntimeError
    assert get_settings() == outside


# -- clocks -------------------------------------------------------------------------------------------------------


def test_fixed_clock_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError):
        FixedClock(datetime(2026, 1, 1))
    clock = FixedClock(T0)
    with pytest.raises(ValueError):
        clock.set(datetime(2026, 1, 2))
    assert clock.now() == T0


def test_fixed_clock_stands_still_until_moved() -> None:
    clock = FixedClock(T0)
    assert clock.now() == clock.now() == T0
    assert clock.advance(timedelta(seconds=90)) == T0 + timedelta(seconds=90)
    assert clock.now() == T0 + timedelta(seconds=90)
    clock.set(T0 - timedelta(days=1))
    assert clock.now() == T0 - timedelta(days=1)


def test_fixed_clock_normalises_to_utc() -> None:
    paris_winter = timezone(timedelta(hours=1))
    now = FixedClock(datetime(2026, 1, 1, 13, tzinfo=paris_winter)).now()
    assert now == T0 and now.utcoffset() == timedelta(0)


def test_stepping_clock_steps_once_per_call() -> None:
    clock = SteppingClock(T0, step=timedelta(seconds=2))
    assert [clock.now() for _ in range(3)] == [T0, T0 + timedelta(seconds=2), T0 + timedelta(seconds=4)]


@pytest.mark.parametrize("step", [timedelta(0), timedelta(seconds=-1)])
def test_stepping_clock_needs_a_positive_step(step: timedelta) -> None:
    with pytest.raises(ValueError):
        SteppingClock(T0, step=step)


def test_stepping_clock_rejects_naive_start() -> None:
    with pytest.raises(ValueError):
        SteppingClock(datetime(2026, 1, 1))


# -- ids ----------------------------------------------------------------------------------------------------------


def test_seeded_ids_are_reproducible_per_seed() -> None:
    first, again, other = SeededIds(42), SeededIds(42), SeededIds(43)
    a = [first.new_id() for _ in range(5)]
    assert a == [again.new_id() for _ in range(5)]
    assert set(a).isdisjoint(other.new_id() for _ in range(5))
    assert len(set(a)) == 5
    assert all(uuid.UUID(i).version == 4 for i in a)


def test_name_based_id_is_deterministic() -> None:
    assert name_based_id("payment", "m-1", "k-1") == name_based_id("payment", "m-1", "k-1")
    assert uuid.UUID(name_based_id("payment", "m-1", "k-1")).version == 5
    assert name_based_id("payment", "m-1", "k-1") != name_based_id("payment", "m-1", "k-2")
    # The separator keeps part boundaries: ("ab", "c") and ("a", "bc") are different ids.
    assert name_based_id("ab", "c") != name_based_id("a", "bc")


@pytest.mark.parametrize("parts", [("a\x1fb",), ("ok", "\x1f")])
def test_name_based_id_rejects_the_separator(parts: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        name_based_id(*parts)


def test_engine_is_chosen_by_environment_and_validated() -> None:
    assert Settings.from_env({}).engine == "moto"
    assert Settings.from_env({"PAYMENT_ENGINE": "dynalite"}).engine == "dynalite"
    with pytest.raises(ConfigurationError, match="PAYMENT_ENGINE"):
        Settings.from_env({"PAYMENT_ENGINE": "dynamodb-local"})
