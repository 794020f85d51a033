"""The reconcile Lambda handler: the S3 event contract, URL-encoded keys, several records, a missing object among
good ones, bad files, running out of time and continuing by itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import quote_plus

import boto3
import pytest

from payment_examples.core.clock import FixedClock
from payment_examples.handlers.reconcile import CONTINUATION, MAX_CONTINUATIONS, make_handler
from payment_examples.payments.service import PaymentService
from payment_examples.reconciliation.generator import SettlementScenario, create_scenario_payments, settlement_bytes
from payment_examples.reconciliation.reconciler import Outcome, Reconciler
from payment_examples.reconciliation.settlement_file import HEADER

BUCKET = "settlement-bucket"


class Context:
    """A Lambda context whose remaining time drops by ``per_call`` ms at every look."""

    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:reconcile"

    def __init__(self, remaining_ms: int = 900_000, per_call: int = 0) -> None:
        self.remaining_ms, self.per_call = remaining_ms, per_call

    def get_remaining_time_in_millis(self) -> int:
        self.remaining_ms -= self.per_call
        return self.remaining_ms


def s3_event(*objects: tuple[str, str | None]) -> dict:
    """An S3 ObjectCreated event; keys are encoded as S3 encodes them (``quote_plus``)."""
    records = []
    for key, etag in objects:
        obj = {"key": quote_plus(key, safe="/"), "size": 1}
        if etag is not None:
            obj["eTag"] = etag
        bucket = {"name": BUCKET, "arn": f"arn:aws:s3:::{BUCKET}"}
        records.append({"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                        "s3": {"bucket": bucket, "object": obj}})  # fmt: skip
    return {"Records": records}


@pytest.fixture
def s3(aws):
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def continued() -> list:
    return []


@pytest.fixture
def handler(aws, continued):
    clock = FixedClock(datetime(2026, 3, 1, tzinfo=UTC))
    factory = lambda: Reconciler(PaymentService(clock=clock), clock=clock, max_workers=1, batch_rows=100)  # noqa: E731
    return make_handler(factory, continue_with=lambda event, context: continued.append(event))


def put(s3, key: str, body: bytes) -> str:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')


@pytest.mark.slow  # seconds: make test runs it, make test-fast does not
def test_url_encoded_keys_several_records_and_a_missing_object(s3, handler, continued) -> None:
    scenario = SettlementScenario(rows=120, seed=2, discrepancy_rate=0.3)
    create_scenario_payments(scenario)
    odd_key = "settlements/día 2026-03-02+final (1).csv"  # a space, a plus and a non-ASCII letter
    etag = put(s3, odd_key, settlement_bytes(scenario))
    other = put(s3, "settlements/other.csv", f"{HEADER}\nnope,m,5,USD,settled,2026-03-02T00:00:00Z,r\n".encode())

    result = handler(s3_event((odd_key, etag), ("settlements/missing.csv", "0123"), ("settlements/other.csv", None)),
                     Context())  # fmt: skip

    first, missing, second = result["files"]
    assert (first["key"], first["etag"], first["complete"], first["rows"]) == (odd_key, etag, True, 120)
    expected = {o.value: 0 for o in Outcome}
    for answer in scenario.answer_key():
        if answer.line:
            expected[answer.outcome] += 1
    assert first["outcomes"] == expected
    assert first["missing_in_file"] == sum(1 for a in scenario.answer_key() if a.line is None)
    prefix = f"s3://{BUCKET}/reconciliation-reports/{odd_key}/{etag}/"
    assert first["report"] == {"summary": prefix + "summary.json", "exceptions": prefix + "exceptions.csv"}
    assert s3.head_object(Bucket=BUCKET, Key=f"reconciliation-reports/{odd_key}/{etag}/summary.json")
    assert missing["complete"] is False and missing["error"] == "object not found" and missing["report"] is None
    assert set(missing["outcomes"]) == {o.value for o in Outcome} and not any(missing["outcomes"].values())
    assert (second["etag"], second["complete"], second["outcomes"]["unknown_payment"]) == (other, True, 1)
    assert continued == []  # everything finished: nothing to continue


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (HEADER.encode() + b"\n", "no data rows"),
        (b"a,b\n1,2\n", "wrong columns"),
        (bytes(range(256)), "binary"),
    ],  # fmt: skip
)
def test_a_bad_file_is_an_error_for_its_record_only(s3, handler, body, message) -> None:
    bad = put(s3, "bad.csv", body)
    good = put(s3, "good.csv", f"{HEADER}\nnope,m,5,USD,settled,2026-03-02T00:00:00Z,r\n".encode())
    files = handler(s3_event(("bad.csv", bad), ("good.csv", good)), Context())["files"]
    assert message in files[0]["error"] and files[0]["complete"] is False
    assert files[1]["complete"] is True


@pytest.mark.slow  # seconds: make test runs it, make test-fast does not
def test_running_out_of_time_checkpoints_and_continues_with_the_same_event(s3, handler, continued) -> None:
    scenario = SettlementScenario(rows=250, seed=4, discrepancy_rate=0.2)
    create_scenario_payments(scenario)
    etag = put(s3, "big.csv", settlement_bytes(scenario))
    event = s3_event(("big.csv", etag))

    # 10 s safety margin; the clock loses 6 s per look: two batches of 100 rows, then it stops.
    first = handler(event, Context(remaining_ms=28_000, per_call=6_000))["files"][0]
    assert (first["complete"], first["rows"], first["report"]) == (False, 200, None)
    assert continued == [{"Records": event["Records"], CONTINUATION: 1}]

    # The continuation (as Lambda would deliver it) resumes from the checkpoint and finishes.
    last = handler(continued[0], Context())["files"][0]
    assert (last["complete"], last["rows"]) == (True, 250)
    expected = {o.value: 0 for o in Outcome}
    for answer in scenario.answer_key():
        if answer.line:
            expected[answer.outcome] += 1
    assert last["outcomes"] == expected
    assert len(continued) == 1

    # The same event again (S3 delivers at least once): the stored result, nothing re-run.
    assert handler(event, Context())["files"][0] == last


def test_no_time_at_all_makes_no_progress_and_the_loop_is_bounded(s3, handler, continued) -> None:
    etag = put(s3, "f.csv", f"{HEADER}\nnope,m,5,USD,settled,2026-03-02T00:00:00Z,r\n".encode())
    event = s3_event(("f.csv", etag)) | {CONTINUATION: MAX_CONTINUATIONS}
    files = handler(event, Context(remaining_ms=5_000))["files"]
    assert (files[0]["complete"], files[0]["rows"]) == (False, 0)
    assert continued == []  # the continuation budget is spent: logged, not looped forever


def test_an_event_that_is_not_from_s3_is_refused(handler) -> None:
    for event in ({}, {"Records": []}, {"Records": "x"}, []):
        with pytest.raises(ValueError, match="not an S3 event"):
            handler(event, Context())


def test_a_transient_failure_is_retryable_and_continued_and_other_records_still_run(s3, aws, monkeypatch) -> None:
    from botocore.exceptions import ClientError

    from payment_examples.reconciliation.reconciler import RunStore

    calls = {"n": 0}
    original = RunStore.acquire

    def throttled_once(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}},
                              "UpdateItem")  # fmt: skip
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RunStore, "acquire", throttled_once)
    continued = []
    clock = FixedClock(datetime(2026, 3, 1, tzinfo=UTC))
    handler = make_handler(lambda: Reconciler(PaymentService(clock=clock), clock=clock, max_workers=1),
                           continue_with=lambda event, context: continued.append(event))  # fmt: skip
    body = f"{HEADER}\nnope,m,5,USD,settled,2026-03-02T00:00:00Z,r\n".encode()
    first, second = put(s3, "one.csv", body), put(s3, "two.csv", body)
    files = handler(s3_event(("one.csv", first), ("two.csv", second)), Context())["files"]
    assert files[0]["retryable"] is True and "ProvisionedThroughput" in files[0]["error"]
    assert files[1]["complete"] is True
    assert [r["s3"]["object"]["key"] for r in continued[0]["Records"]] == ["one.csv"]
    assert handler(continued[0], Context())["files"][0]["complete"] is True


def test_a_run_left_leased_by_a_killed_invocation_is_taken_over_when_the_lease_runs_out(s3, aws) -> None:
    from datetime import timedelta

    from payment_examples.reconciliation.reconciler import RunStore, SettlementFile

    clock = FixedClock(datetime(2026, 3, 1, tzinfo=UTC))
    etag = put(s3, "k.csv", f"{HEADER}\nnope,m,5,USD,settled,2026-03-02T00:00:00Z,r\n".encode())
    # An invocation killed mid-batch by the Lambda timeout never released its lease (2 minutes).
    RunStore(clock=clock).acquire(SettlementFile.for_s3(BUCKET, "k.csv", etag), "killed", timedelta(minutes=2))
    slept = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(timedelta(seconds=seconds))

    handler = make_handler(lambda: Reconciler(PaymentService(clock=clock), clock=clock, max_workers=1), sleep=sleep,
                           continue_with=lambda event, context: None)  # fmt: skip
    entry = handler(s3_event(("k.csv", etag)), Context())["files"][0]
    assert entry["complete"] is True and 120 <= sum(slept) <= 130


def test_a_live_owner_keeps_the_record_busy_and_it_is_not_continued(s3, aws) -> None:
    from datetime import timedelta

    from payment_examples.reconciliation.reconciler import RunStore, SettlementFile

    clock = FixedClock(datetime(2026, 3, 1, tzinfo=UTC))
    etag = put(s3, "k.csv", f"{HEADER}\nnope,m,5,USD,settled,2026-03-02T00:00:00Z,r\n".encode())
    file = SettlementFile.for_s3(BUCKET, "k.csv", etag)
    store = RunStore(clock=clock)

    def sleep(seconds: float) -> None:  # the owner checkpoints meanwhile: its lease moves forward
        clock.advance(timedelta(seconds=seconds))
        store.acquire(file, "alive", timedelta(minutes=2))

    sleep(0)
    continued = []
    handler = make_handler(lambda: Reconciler(PaymentService(clock=clock), clock=clock, max_workers=1), sleep=sleep,
                           continue_with=lambda event, context: continued.append(event))  # fmt: skip
    entry = handler(s3_event(("k.csv", etag)), Context())["files"][0]
    assert entry["busy"] is True and entry["complete"] is False and continued == []


def _lambda_error(code: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": f"{code} (simulated)"}}, "Invoke")


@pytest.mark.slow  # seconds: make test runs it, make test-fast does not
@pytest.mark.parametrize("code", [None, "TooManyRequestsException", "AccessDeniedException"])
def test_a_failed_continuation_returns_the_summary_names_the_failure_and_leaves_the_file_resumable(
    s3, aws, monkeypatch, code
) -> None:
    """As a new user meets it locally: a Lambda-like context whose function does not exist (moto answers
    ResourceNotFoundException), or an invoke that is throttled or not permitted."""
    import payment_examples.handlers.reconcile as module

    if code is not None:
        monkeypatch.setattr(module, "invoke_self", lambda event, context: (_ for _ in ()).throw(_lambda_error(code)))
    clock = FixedClock(datetime(2026, 3, 1, tzinfo=UTC))
    factory = lambda: Reconciler(PaymentService(clock=clock), clock=clock, max_workers=1, batch_rows=100)  # noqa: E731
    handler = make_handler(factory)  # no continue_with: the real self-invocation
    scenario = SettlementScenario(rows=250, seed=4, discrepancy_rate=0.2)
    create_scenario_payments(scenario)
    etag = put(s3, "big.csv", settlement_bytes(scenario))

    first = handler(s3_event(("big.csv", etag)), Context(remaining_ms=28_000, per_call=6_000))["files"][0]
    assert (first["complete"], first["rows"]) == (False, 200)
    assert first["continuation"]["resumable"] is True and first["continuation"]["parked"] is None  # no queue here
    assert (code or "ResourceNotFoundException") in first["continuation"]["error"]
    last = handler(s3_event(("big.csv", etag)), Context())["files"][0]  # the same event delivered again
    assert (last["complete"], last["rows"]) == (True, 250) and "continuation" not in last


def test_a_failed_continuation_is_parked_on_the_failure_queue_and_its_redrive_finishes_the_file(s3, aws) -> None:
    from dataclasses import replace

    sqs = boto3.client("sqs", region_name="us-east-1")
    queue = sqs.create_queue(QueueName="reconcile-failures")["QueueUrl"]
    clock = FixedClock(datetime(2026, 3, 1, tzinfo=UTC))
    factory = lambda: Reconciler(PaymentService(clock=clock), clock=clock, max_workers=1, batch_rows=100)  # noqa: E731
    handler = make_handler(factory, settings=replace(aws, recon_failure_queue_url=queue))  # the real invoke: fails
    scenario = SettlementScenario(rows=250, seed=4, discrepancy_rate=0.2)
    create_scenario_payments(scenario)
    etag = put(s3, "big.csv", settlement_bytes(scenario))
    first = handler(s3_event(("big.csv", etag)), Context(remaining_ms=28_000, per_call=6_000))["files"][0]
    assert first["continuation"]["parked"] == queue and first["rows"] == 200
    (message,) = sqs.receive_message(QueueUrl=queue)["Messages"]
    parked = json.loads(message["Body"])
    assert "ResourceNotFoundException" in parked["responsePayload"]["errorMessage"]
    redriven = handler(parked["requestPayload"], Context())["files"][0]  # what a re-drive invokes
    assert (redriven["complete"], redriven["rows"]) == (True, 250)

    # Neither invoked nor parked (the queue is gone): the invocation fails, so Lambda retries it
    sqs.delete_queue(QueueUrl=queue)
    second = SettlementScenario(rows=250, seed=5, discrepancy_rate=0.2)
    create_scenario_payments(second)
    etag2 = put(s3, "second.csv", settlement_bytes(second))
    with pytest.raises(Exception, match="NonExistentQueue|does not exist"):
        handler(s3_event(("second.csv", etag2)), Context(remaining_ms=28_000, per_call=6_000))


def test_a_successful_continuation_is_named_in_the_entry(s3, handler, continued) -> None:
    scenario = SettlementScenario(rows=250, seed=4, discrepancy_rate=0.2)
    create_scenario_payments(scenario)
    etag = put(s3, "big.csv", settlement_bytes(scenario))
    first = handler(s3_event(("big.csv", etag)), Context(remaining_ms=28_000, per_call=6_000))["files"][0]
    assert first["continuation"] == {"invoked": 1} and len(continued) == 1


STRIPE_FIXTURE = "tests/fixtures/settlement/stripe/payout_reconciliation_itemized_5.csv"


def test_a_processor_report_is_detected_and_its_merchant_is_the_keys_folder(s3, handler) -> None:
    from pathlib import Path

    body = Path(STRIPE_FIXTURE).read_bytes()
    under_merchant = put(s3, "settlements/merchant-a/stripe-2026-03-04.csv", body)
    entry = handler(s3_event(("settlements/merchant-a/stripe-2026-03-04.csv", under_merchant)), Context())
    entry = entry["files"][0]
    assert entry["complete"] is True and entry["rows"] == body.count(b"\n") - 1
    assert entry["outcomes"]["unknown_payment"] > 0 and entry["outcomes"]["fee"] > 0  # no such payments here
    summary = json.loads(s3.get_object(Bucket=BUCKET, Key=entry["report"]["summary"].split("/", 3)[3])["Body"].read())
    assert summary["layout"] == "stripe"

    no_merchant = put(s3, "settlements/stripe-2026-03-04.csv", body)
    refused = handler(s3_event(("settlements/stripe-2026-03-04.csv", no_merchant)), Context())["files"][0]
    assert "--merchant" in refused["error"] and "retryable" not in refused


def test_the_merchant_folder_of_a_key() -> None:
    from payment_examples.handlers.reconcile import file_merchant

    assert file_merchant("settlements/m-1/2026-03-02.csv", "settlements/") == "m-1"
    assert file_merchant("settlements/2026-03-02.csv", "settlements/") is None
    assert file_merchant("elsewhere/m-1/x.csv", "settlements/") is None
    assert file_merchant("settlements//x.csv", "settlements/") is None


def test_a_file_above_the_threshold_goes_to_the_state_machine_once(s3, aws) -> None:
    from dataclasses import replace

    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    machine = sfn.create_state_machine(
        name="reconcile", roleArn="arn:aws:iam::123456789012:role/sfn",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
    )["stateMachineArn"]  # fmt: skip
    config = replace(aws, recon_state_machine_arn=machine, recon_distributed_bytes=10)
    handler = make_handler(settings=config, continue_with=lambda event, context: None)
    etag = put(s3, "settlements/m-1/big.csv", f"{HEADER}\nnope,m,5,USD,settled,2026-03-02T00:00:00Z,r\n".encode())
    event = s3_event(("settlements/m-1/big.csv", etag))
    event["Records"][0]["s3"]["object"]["size"] = 999
    entry = handler(event, Context())["files"][0]
    execution = entry["distributed"]["execution"]
    assert entry["complete"] is False and execution.startswith(machine.replace(":stateMachine:", ":execution:"))
    started = json.loads(sfn.describe_execution(executionArn=execution)["input"])
    assert started == {"bucket": BUCKET, "key": "settlements/m-1/big.csv", "etag": etag, "merchant": "m-1"}
    assert handler(event, Context())["files"][0]["distributed"]["execution"] == execution  # a repeat: the same one
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1
    sfn.stop_execution(executionArn=execution)  # it ended badly: the next delivery starts the next attempt
    retried = handler(event, Context())["files"][0]["distributed"]
    assert retried["attempt"] == 2 and retried["execution"] == f"{execution}-2"
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 2

    event["Records"][0]["s3"]["object"]["size"] = 5  # below the threshold: the function reconciles it itself
    assert handler(event, Context())["files"][0]["complete"] is True


def test_a_state_machine_that_does_not_exist_is_a_final_error_for_the_record(s3, aws) -> None:
    from dataclasses import replace

    missing = "arn:aws:states:us-east-1:123456789012:stateMachine:nope"
    continued = []
    handler = make_handler(settings=replace(aws, recon_state_machine_arn=missing, recon_distributed_bytes=0),
                           continue_with=lambda event, context: continued.append(event))  # fmt: skip
    etag = put(s3, "f.csv", f"{HEADER}\nnope,m,5,USD,settled,2026-03-02T00:00:00Z,r\n".encode())
    entry = handler(s3_event(("f.csv", etag)), Context())["files"][0]
    assert entry["error"] == "the state machine does not exist" and "retryable" not in entry and continued == []


def test_when_every_execution_of_a_file_ended_badly_the_record_fails_for_good(s3, aws, monkeypatch) -> None:
    from dataclasses import replace

    import payment_examples.handlers.reconcile as module

    monkeypatch.setattr(module, "ATTEMPTS", 2)
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    machine = sfn.create_state_machine(
        name="reconcile", roleArn="arn:aws:iam::123456789012:role/sfn",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
    )["stateMachineArn"]  # fmt: skip
    continued = []
    handler = make_handler(settings=replace(aws, recon_state_machine_arn=machine, recon_distributed_bytes=0),
                           continue_with=lambda event, context: continued.append(event))  # fmt: skip
    etag = put(s3, "f.csv", f"{HEADER}\nnope,m,5,USD,settled,2026-03-02T00:00:00Z,r\n".encode())
    for _ in range(2):  # each attempt is aborted
        sfn.stop_execution(
            executionArn=handler(s3_event(("f.csv", etag)), Context())["files"][0]["distributed"]["execution"]
        )
    entry = handler(s3_event(("f.csv", etag)), Context())["files"][0]
    assert "2 executions" in entry["error"] and "retryable" not in entry and continued == []


def test_a_spent_continuation_budget_parks_the_event_with_a_fresh_budget(s3, aws) -> None:
    from dataclasses import replace

    sqs = boto3.client("sqs", region_name="us-east-1")
    queue = sqs.create_queue(QueueName="reconcile-failures")["QueueUrl"]
    continued = []
    handler = make_handler(settings=replace(aws, recon_failure_queue_url=queue),
                           continue_with=lambda event, context: continued.append(event))  # fmt: skip
    etag = put(s3, "f.csv", f"{HEADER}\nnope,m,5,USD,settled,2026-03-02T00:00:00Z,r\n".encode())
    event = s3_event(("f.csv", etag)) | {CONTINUATION: MAX_CONTINUATIONS}
    entry = handler(event, Context(remaining_ms=5_000))["files"][0]
    assert entry["continuation"]["parked"] == queue and continued == []
    (message,) = sqs.receive_message(QueueUrl=queue)["Messages"]
    assert json.loads(message["Body"])["requestPayload"] == {"Records": event["Records"], CONTINUATION: 0}
