"""Shared fixtures.

* ``aws`` (moto in-process, via ``mock_aws``): fast, single-threaded tests. Never use it for concurrency.
* ``engine`` (a local moto server process, one per test session): anything with threads.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from moto import mock_aws

from payment_examples.clock import SteppingClock
from payment_examples.config import Settings, use_settings
from payment_examples.local import local_aws
from payment_examples.models import BoundModels, bind_models, create_tables
from payment_examples.payments import PaymentService

# Dummy credentials: no test may ever reach a real account.
for _name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
    os.environ[_name] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
for _name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "PAYMENT_USE_AWS", "AWS_PROFILE"):
    os.environ.pop(_name, None)

START = datetime(2026, 1, 1, tzinfo=UTC)
_prefixes = itertools.count()


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock(START)


@pytest.fixture
def aws() -> Iterator[Settings]:
    """moto in-process with all tables created; yields the settings in force."""
    with mock_aws():
        settings = Settings(table_prefix="unit-")
        with use_settings(settings):
            create_tables(settings)
            yield settings


@pytest.fixture
def models(aws: Settings) -> BoundModels:
    return bind_models(aws)


@pytest.fixture
def service(models: BoundModels, clock: SteppingClock) -> PaymentService:
    return PaymentService(models=models, clock=clock)


@pytest.fixture(scope="session")
def engine_session() -> Iterator[Settings]:
    """One local moto server process for the whole session (starting one takes about a second)."""
    with local_aws(Settings(), create_tables=False) as _endpoint:
        from payment_examples.config import get_settings

        yield get_settings()


@pytest.fixture
def engine(engine_session: Settings) -> Iterator[Settings]:
    """The local server with a fresh set of tables (a new prefix per test, so tests never share data)."""
    settings = Settings(
        table_prefix=f"t{next(_prefixes)}-",
        endpoint_url=engine_session.endpoint_url,
        aws_access_key_id=engine_session.aws_access_key_id,
        aws_secret_access_key=engine_session.aws_secret_access_key,
    )
    with use_settings(settings):
        create_tables(settings)
        yield settings
