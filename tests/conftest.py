"""Shared fixtures.

* ``aws`` (moto in-process, via ``mock_aws``): fast, single-threaded tests. Never use it for concurrency.
* ``engine`` (a local server process, one per engine per test session: the moto server, then dynalite with a moto
  server beside it for S3, KMS and STS): anything with threads.

Engine roles (README, "Engine roles"): a test using ``engine`` runs on both engines, the DynamoDB contract suite
(conditional writes, races, pages and their 1 MB ends, limits and validation, the engines' own start and stop). A
module marked ``pytest.mark.flow`` exercises the rest of the flow (the processor, reconciliation from S3, killed
workers and recovery, the load run) and runs on the moto server alone, the only engine with the whole flow
(DynamoDB Streams, transactions, S3, KMS, STS); ``make test-load`` still runs its 10,000 payments on both.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws

from payment_examples.core.clock import SeededIds, SteppingClock
from payment_examples.core.config import Settings, get_settings, use_settings
from payment_examples.engine.local import local_aws
from payment_examples.payments.service import PaymentService
from payment_examples.tables.models import BoundModels, bind_models, create_tables

# Dummy credentials: no test may ever reach a real account.
for _name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
    os.environ[_name] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
for _name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "PAYMENT_USE_AWS", "PAYMENT_ENGINE", "AWS_PROFILE"):
    os.environ.pop(_name, None)

START = datetime(2026, 1, 1, tzinfo=UTC)
ENGINES = ["moto", "dynalite"]
FLOW_ENGINE = "moto"
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


@pytest.hookimpl(tryfirst=True)  # before the fixtures plugin applies engine_session's params
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``flow`` that uses an engine gets the flow engine only (an explicit parametrize of
    ``engine_session`` takes precedence over the fixture's own params)."""
    if "engine_session" in metafunc.fixturenames and metafunc.definition.get_closest_marker("flow"):
        metafunc.definition.add_marker(pytest.mark.parametrize("engine_session", [FLOW_ENGINE], indirect=True))


@pytest.fixture(scope="session", params=ENGINES)
def engine_session(request: pytest.FixtureRequest) -> Iterator[Settings]:
    """One engine for the whole session per parameter: every concurrency test runs on the local moto server (the
    project's embedded engine) and again on dynalite (a second, independent DynamoDB), whose S3, KMS and STS are a
    moto server process beside it (``aws_endpoint_url``), as ``local_aws`` starts it."""
    with local_aws(Settings(engine=request.param), create_tables=False) as _endpoint:
        yield get_settings()


@pytest.fixture
def engine(engine_session: Settings) -> Iterator[Settings]:
    """The local server with a fresh set of tables (a new prefix per test, so tests never share data)."""
    settings = Settings(
        engine=engine_session.engine,
        table_prefix=f"t{next(_prefixes)}-",
        endpoint_url=engine_session.endpoint_url,
        aws_endpoint_url=engine_session.aws_endpoint_url,  # dynalite's S3, KMS, STS: the moto server beside it
        aws_access_key_id=engine_session.aws_access_key_id,
        aws_secret_access_key=engine_session.aws_secret_access_key,
    )
    with use_settings(settings):
        create_tables(settings)
        yield settings


# -- field encryption (customers, card vault) -----------------------------------------------------------------------

FIELD_KEYS = {v: base64.b64encode(v.encode() * 16).decode() for v in ("v1", "v2")}
V1 = f"v1:{FIELD_KEYS['v1']}"
V1_V2 = f"v1:{FIELD_KEYS['v1']},v2:{FIELD_KEYS['v2']}"


@pytest.fixture
def field_settings(clock: SteppingClock) -> Iterator[Settings]:
    """moto in-process with the tables, a KMS key and version-1 field keys."""
    from payment_examples.engine.local import create_kms_key

    with mock_aws():
        base = Settings(table_prefix="cust-", field_keys=V1)
        settings = replace(base, kms_key_id=create_kms_key(base))
        with use_settings(settings):
            create_tables(settings)
            yield settings


@pytest.fixture
def customers(field_settings: Settings, clock: SteppingClock):
    from payment_examples.encryption.customers import CustomerService

    return CustomerService(field_settings, clock=clock, ids=SeededIds(1))


def scan_everything(settings: Settings) -> str:
    """Every item of every table as JSON (binary as base64): to search for what must not be stored."""
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    items = []
    for model in bind_models(settings).all():
        items += dynamodb.scan(TableName=model.Meta.table_name)["Items"]
    return json.dumps(items, default=lambda b: base64.b64encode(b).decode())


def stream_records(settings: Settings, table: str) -> list[dict]:
    """Every record of ``table``'s stream (one shard: moto's), as Lambda delivers them."""
    from payment_examples.core.aws import client
    from payment_examples.engine.stream import StreamPoller

    poller = StreamPoller(table, lambda e, c: None, settings=settings)
    streams = client("dynamodbstreams", settings)
    shard = streams.describe_stream(StreamArn=poller.arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=poller.arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    found = streams.get_records(ShardIterator=iterator["ShardIterator"], Limit=1000)["Records"]
    return [poller._lambda_record(r) for r in found]
