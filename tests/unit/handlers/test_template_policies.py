"""Least privilege, proven by running the code: each function's policy in template.yaml allows every AWS call its
handler makes, and grants nothing beyond them plus a short allow-list of calls reached only on paths a test cannot
reach in-process (each with its reason).

The calls are collected from real flows on moto in-process through botocore event hooks (tests/aws_calls.py):
the settings are built from the function's environment *as the template sets it* (so the secret is read through
Secrets Manager as deployed), then the handler runs: process (create with and without a card, replay, a payload
reused under the key, a decline and its replay, processor timeouts before and after the charge and the retries),
query (list, filters, pages, total, one payment, a missing one),
actions (capture, refund, void, a replay from the failed claim's image and one from the read an engine without it
needs, a refusal, a missing payment, a card's capture and its refund through the simulated processor, the refund's
answer lost and resolved from the ledger), processor events (a dispute, its duplicate, a forged notification, a late
authorisation outcome), the webhook producer on the payments stream (a merchant with endpoints, one without) and
the deliverer on what it enqueued (delivered, a failure and its backoff, a blocked message released, a disabled
endpoint, a last attempt dead-lettered; KMS calls carry their encryption context, which the deliverer's conditioned
grant is checked against),
reconcile (a settlement file that runs out of time and cannot invoke itself, so the follow-up event is parked on the
failure queue; its re-drive runs out of time again, continues by invoking itself, and is delivered again; a file
above ReconDistributedBytes handed to the state machine, twice, then again after its execution was stopped: the
next attempt), and that file's execution of ReconcileStateMachine:
its definition as the template resolves it, run step by step (``_execute``) with the reconcile function's real
StartExecution input, the plan, batch and merge handlers called with the payloads Step Functions would build (the
ItemReader's ranges, ItemBatcher batches with their BatchInput, the ResultWriter's manifest.json and
SUCCEEDED_0.json in S3, a batch and the merge delivered twice as a Retry does). The state machine's own needs there
(the Lambda invocations, the ItemReader's read, the ResultWriter's writes, the child executions) are checked against
its role the same way.
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote_plus

import boto3
import pytest
import yaml
from moto import mock_aws

from payment_examples.checkout.processor import Fault, LocalProcessor
from payment_examples.checkout.processor_events import authorization_outcome, dispute_created, notification
from payment_examples.checkout.service import Checkout
from payment_examples.core import aws, secrets
from payment_examples.core.clock import FixedClock, SeededIds, SteppingClock
from payment_examples.core.config import Settings, use_settings
from payment_examples.core.errors import ProcessorTimeoutError
from payment_examples.encryption.customers import CustomerService
from payment_examples.engine.local import create_kms_key
from payment_examples.engine.stream import EventSourceConfig, StreamPoller
from payment_examples.handlers import (
    actions,
    process,
    processor_events,
    query,
    reconcile,
    settlement_map,
    stream,
    webhook_delivery,
    webhook_events,
)
from payment_examples.idempotency import IdempotencyMiddleware
from payment_examples.payments.seed import seed_payments
from payment_examples.payments.service import PaymentService
from payment_examples.reconciliation.generator import SettlementScenario, create_scenario_payments, settlement_bytes
from payment_examples.reconciliation.reconciler import Reconciler
from payment_examples.tables.models import bind_models, create_tables, get_models, payment_id_for
from payment_examples.webhooks.delivery import Deliverer
from payment_examples.webhooks.endpoints import PURPOSE, WebhookEndpoints
from tests.api_events import api_event, token
from tests.aws_calls import ACCOUNT, PARTITION, REGION, Call, observed_calls, permissions, table_arn
from tests.conftest import V1

TEMPLATE = yaml.safe_load((Path(__file__).resolve().parents[3] / "template.yaml").read_text())
STACK = "teststack"
# Thresholds for small files: the file of 251 rows (24 kB) is reconciled by the function, the one of 302 (29 kB) by
# the state machine, whose plan cuts it into three ranges that the Map batches as two and one. A webhook's second
# attempt is its last.
PARAMETERS = {"TablePrefix": "stack-", "SecretsName": "payments/keys", "SettlementBucketName": "settlements-test",
              "Processor": "local", "ReconDistributedBytes": "26000", "ReconRowsPerRange": "120",
              "ReconRangesPerBatch": "2", "WebhookMaxAttempts": "2"}  # fmt: skip
KEYS = {"jwt_secret": "jwt-secret-held-in-secrets-manager-0123456789", "cursor_secret": "c" * 40,
        "processor_webhook_secret": "p" * 40, "field_keys": V1}  # fmt: skip
AUDIENCE = "payments-api"

# Granted, though no flow here reaches them: (function, action, resource suffix) -> why. An entry needs a reason (a
# path only a failure reaches) and a test that it is still granted.
ALLOWED_UNOBSERVED: dict[tuple[str, str, str], str] = {
    ("ProcessPaymentFunction", "dynamodb:GetItem", "table/stack-payments"): (
        "a retry that loses the race to apply the processor's answer reads the payment as it is now "
        "(checkout.Checkout.resolve); replays are answered from the failed put's ALL_OLD image"
    ),
    ("ReconcileBatchFunction", "dynamodb:GetItem", "table/stack-reconciliation"): (
        "a merchant's row whose digest the run's bloom filter holds (first recorded as another merchant's row, or "
        "a false positive) is looked up (reconciler.RunStore.row_item); the merge and a single run read the run "
        "item anyway"
    ),
}

MACHINE = "ReconcileStateMachineRole"
_STATES = f"arn:{PARTITION}:states:{REGION}:{ACCOUNT}"
_REPORTS = (
    f"arn:{PARTITION}:s3:::{PARAMETERS['SettlementBucketName']}/" + TEMPLATE["Parameters"]["ReportPrefix"]["Default"]
)
_EXECUTIONS = f"{_STATES}:execution:{STACK}-reconcile"
# The state machine's role, granted though _execute cannot make these calls: Step Functions makes them itself.
MACHINE_UNOBSERVED: dict[tuple[str, str], str] = {
    ("states:DescribeExecution", f"{_EXECUTIONS}:*"): "the Distributed Map watches its child executions",
    ("states:DescribeExecution", f"{_EXECUTIONS}/*"): "(the Map Run's children: execution:<machine>/<label>:<id>)",
    ("states:StopExecution", f"{_EXECUTIONS}:*"): "and stops them when the Map fails or the execution is stopped",
    ("states:StopExecution", f"{_EXECUTIONS}/*"): "(the same, for the Map Run's children)",
    ("s3:ListMultipartUploadParts", f"{_REPORTS}map-results/*"): "the ResultWriter writes large result files in parts",
    ("s3:AbortMultipartUpload", f"{_REPORTS}map-results/*"): "and abandons an upload that failed",
}


# -- the template, resolved the way CloudFormation would for PARAMETERS -------------------------------------------

_DROP = object()


def _parameter(name: str, parameters: dict[str, str]) -> str:
    if name in parameters:
        return parameters[name]
    return str(TEMPLATE["Parameters"][name]["Default"])


def _condition(name: str, parameters: dict[str, str]) -> bool:
    return bool(_resolve(TEMPLATE["Conditions"][name], parameters))


def _ref(name: str, parameters: dict[str, str]) -> Any:
    pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": PARTITION,
              "AWS::StackName": STACK, "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": _DROP}  # fmt: skip
    if name in pseudo:
        return pseudo[name]
    if name in TEMPLATE["Parameters"]:
        return _parameter(name, parameters)
    resource = TEMPLATE["Resources"][name]
    if resource["Type"] == "AWS::DynamoDB::Table":
        return _resolve(resource["Properties"]["TableName"], parameters)
    if resource["Type"] == "AWS::Serverless::Function":
        return _resolve(resource["Properties"]["FunctionName"], parameters)
    if resource["Type"] == "AWS::StepFunctions::StateMachine":  # Ref: the ARN
        return f"{_STATES}:stateMachine:{_resolve(resource['Properties']['StateMachineName'], parameters)}"
    if resource["Type"] == "AWS::SQS::Queue":  # Ref: the URL
        return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{_queue_name(name)}"
    return f"<{name}>"  # ids CloudFormation makes up (an API id)


def _queue_name(name: str) -> str:
    properties = TEMPLATE["Resources"][name]["Properties"]
    assert "QueueName" not in properties, name  # no QueueName: CloudFormation names it (a FIFO queue with .fifo)
    return f"{STACK}-{name}-AbCdEf012345" + (".fifo" if properties.get("FifoQueue") else "")


# The ids CloudFormation's KMS makes up; the flows create their keys with these (_key).
KEY_IDS = {"FieldEncryptionKey": "0f1e2d3c-4b5a-4697-8877-665544332211"}


def _arn(name: str, parameters: dict[str, str]) -> str:
    resource = TEMPLATE["Resources"][name]
    if resource["Type"] == "AWS::DynamoDB::Table":
        return table_arn(_ref(name, parameters))
    if resource["Type"] == "AWS::Serverless::Function":
        return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{_ref(name, parameters)}"
    if resource["Type"] == "AWS::StepFunctions::StateMachine":
        return _ref(name, parameters)
    if resource["Type"] == "AWS::IAM::Role":  # no RoleName: CloudFormation names it
        return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{STACK}-{name}-AbCdEf012345"
    if resource["Type"] == "AWS::SQS::Queue":
        return f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{_queue_name(name)}"
    if resource["Type"] == "AWS::KMS::Key":
        return f"arn:{PARTITION}:kms:{REGION}:{ACCOUNT}:key/{KEY_IDS[name]}"
    return f"arn:{PARTITION}:<{name}>"


def _resolve(node: Any, parameters: dict[str, str]) -> Any:
    if isinstance(node, list):
        return [v for v in (_resolve(item, parameters) for item in node) if v is not _DROP]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        ((key, value),) = node.items()
        if key == "Ref":
            return _ref(value, parameters)
        if key == "Fn::GetAtt":
            assert value[1] == "Arn", value
            return _arn(value[0], parameters)
        if key == "Fn::Sub":

            def substitute(match: re.Match) -> str:
                name, _, attribute = match[1].partition(".")
                return _arn(name, parameters) if attribute == "Arn" else str(_ref(name, parameters))

            return re.sub(r"\$\{([^}!]+)\}", substitute, value)
        if key == "Fn::If":
            return _resolve(value[1] if _condition(value[0], parameters) else value[2], parameters)
        if key == "Fn::Equals":
            return _resolve(value[0], parameters) == _resolve(value[1], parameters)
        if key == "Fn::Not":
            return not _resolve(value[0], parameters)
    resolved = {k: _resolve(v, parameters) for k, v in node.items()}
    return {k: v for k, v in resolved.items() if v is not _DROP}


def _statements(function: str, parameters: dict[str, str]) -> list[dict]:
    """A function's policy statements, or an IAM role's (its inline policies)."""
    resource = TEMPLATE["Resources"][function]
    statements = []
    for policy in resource["Properties"]["Policies"]:
        if resource["Type"] == "AWS::IAM::Role":
            assert set(policy) == {"PolicyName", "PolicyDocument"}, function
            statements += _resolve(policy["PolicyDocument"]["Statement"], parameters)
            continue
        assert set(policy) == {"Statement"}, f"{function}: only explicit statements, no SAM policy templates"
        statements += _resolve(policy["Statement"], parameters)
    return statements


# A grant is (action, resource pattern), or (action, resource pattern, condition) for a statement with a Condition:
# the only form allowed is StringEquals on KMS encryption-context keys, as frozenset({(condition key, value)}). A
# need is (action, resource), or (action, resource, context) for a KMS call: the same form, from its
# EncryptionContext; a conditioned grant allows a need only when the call's context holds every pair.
_CONTEXT = "kms:EncryptionContext:"


def _grants(function: str, parameters: dict[str, str]) -> set[tuple]:
    """Every (action, resource pattern[, condition]) the function's policy allows."""
    grants: set[tuple] = set()
    for statement in _statements(function, parameters):
        assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
        condition: tuple = ()
        if "Condition" in statement:
            (operator, pairs), *others = statement["Condition"].items()
            assert operator == "StringEquals" and not others, statement  # the one form _allows understands
            assert all(key.startswith(_CONTEXT) and isinstance(value, str) for key, value in pairs.items()), pairs
            condition = (frozenset(pairs.items()),)
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        grants |= {(action, resource, *condition) for action in actions for resource in resources}
    return grants


def _allows(grant: tuple, need: tuple) -> bool:
    # IAM wildcards: "*" any run of characters, "?" one; actions are case-insensitive.
    if not (fnmatch.fnmatchcase(need[0].lower(), grant[0].lower()) and fnmatch.fnmatchcase(need[1], grant[1])):
        return False
    return len(grant) == 2 or (len(need) == 3 and grant[2] <= need[2])


def _environment(function: str, parameters: dict[str, str]) -> dict[str, str]:
    variables = dict(TEMPLATE["Globals"]["Function"]["Environment"]["Variables"])
    variables |= TEMPLATE["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
    return {"AWS_REGION": REGION, **_resolve(variables, parameters)}


def _definition(parameters: dict[str, str] = PARAMETERS) -> dict:
    """ReconcileStateMachine's Amazon States Language definition, resolved."""
    return json.loads(_resolve(TEMPLATE["Resources"]["ReconcileStateMachine"]["Properties"]["DefinitionString"],
                               parameters))  # fmt: skip


def _needs(call: Call) -> list[tuple]:
    """tests/aws_calls.permissions, the Step Functions calls the reconcile handler makes, and a KMS call's
    encryption context (what a grant's condition is checked against)."""
    if (call.service, call.operation) == ("states", "StartExecution"):
        return [("states:StartExecution", call.params["stateMachineArn"])]
    if (call.service, call.operation) == ("states", "DescribeExecution"):
        return [("states:DescribeExecution", call.params["executionArn"])]
    if call.service == "kms":
        context = frozenset((_CONTEXT + k, v) for k, v in (call.params.get("EncryptionContext") or {}).items())
        return [(*need, context) for need in permissions(call)]
    return permissions(call)


# -- the flows -------------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_secret_cache() -> Iterator[None]:
    secrets._providers.clear()
    yield
    secrets._providers.clear()


def _deployed_settings(function: str, recorder: Any, parameters: dict[str, str] = PARAMETERS) -> Settings:
    """Settings as the deployed function builds them; the tables and the secret exist (made unrecorded)."""
    with recorder.paused():
        create_tables(Settings(table_prefix=parameters["TablePrefix"], processor="local"))
        boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name=parameters["SecretsName"], SecretString=json.dumps(KEYS)
        )
    return Settings.from_env(_environment(function, parameters))


def _run_process() -> list[Call]:
    with mock_aws(), observed_calls() as recorder:
        settings = _deployed_settings("ProcessPaymentFunction", recorder)
        assert settings.use_aws and settings.processor == "local" and settings.jwt_secret == KEYS["jwt_secret"]
        with use_settings(settings):
            auth = {"Authorization": f"Bearer {token(KEYS['jwt_secret'], aud=AUDIENCE)}"}

            def post(key: str, handler: Any = process.handler, **body: Any) -> int:
                event = api_event("2.0", "POST", "/payments", headers=auth | {"Idempotency-Key": key},
                                  body={"amount": 1250, "currency": "USD", **body})  # fmt: skip
                return handler(event, None)["statusCode"]

            assert post("plain") == 201
            assert post("plain") == 201  # replay
            assert post("plain", amount=999) == 422  # the key reused with another payload
            assert post("card", payment_method="pm_card_visa") == 201
            assert post("declined", payment_method="pm_card_declined") == 402
            assert post("declined", payment_method="pm_card_declined") == 402  # the decline replayed
            # Processor timeouts before and after the charge, each retried by the client.
            service = PaymentService(models=get_models(settings))
            processor = LocalProcessor(settings=settings)
            checkout = Checkout(service, processor, sleep=lambda _: None)
            flaky = process.make_handler(service, checkout)
            for fault in (Fault.TIMEOUT_BEFORE, Fault.TIMEOUT_AFTER):
                processor.inject(fault)
                assert post(f"timeout-{fault}", flaky, payment_method="pm_card_visa") == 503
                assert post(f"timeout-{fault}", flaky, payment_method="pm_card_visa") == 201
        return recorder.calls


def _run_query() -> list[Call]:
    with mock_aws(), observed_calls() as recorder:
        settings = _deployed_settings("QueryPaymentsFunction", recorder)
        with use_settings(settings):
            with recorder.paused():
                seeded = seed_payments("merchant-1", 12, clock=SteppingClock(datetime(2026, 4, 1, tzinfo=UTC)),
                                       ids=SeededIds(1))  # fmt: skip
            auth = {"Authorization": f"Bearer {token(KEYS['jwt_secret'], aud=AUDIENCE)}"}

            def get(path: str, **params: str) -> dict:
                response = query.handler(api_event("2.0", "GET", path, headers=auth, query=params or None), None)
                assert response["statusCode"] in (200, 404), response
                return json.loads(response["body"])

            first = get("/payments", limit="5", include_total="true")
            assert len(first["items"]) == 5 and first["total"] == 12
            assert get("/payments", limit="5", cursor=first["next_cursor"])["items"]
            assert get("/payments", status=seeded[0].status, order="asc")["items"]
            get("/payments", currency="USD", min_amount="1", **{"from": "2026-01-01", "to": "2027-01-01"})
            assert get(f"/payments/{seeded[0].id}")["id"] == seeded[0].id
            assert get("/payments/no-such-payment")["status"] == 404
        return recorder.calls


class _Context:
    """A Lambda context whose remaining time drops by ``per_call`` ms at every look."""

    def __init__(self, remaining_ms: int = 900_000, per_call: int = 0) -> None:
        self.invoked_function_arn = _arn("ReconcileFunction", PARAMETERS)
        self.remaining_ms, self.per_call = remaining_ms, per_call

    def get_remaining_time_in_millis(self) -> int:
        self.remaining_ms -= self.per_call
        return self.remaining_ms


# One run drives the four functions and the state machine (each step's calls are the slice its handler made): the
# fixture takes each one's share.
@cache
def _run_reconciliation() -> dict[str, Any]:
    invoked: list[dict] = []
    refuse = [True]  # the first self-invocation fails

    def lambda_accepts(call: Call) -> dict | None:  # Lambda queues an asynchronous invocation: 202
        if (call.service, call.operation) != ("lambda", "Invoke"):
            return None
        if refuse:  # not answered here: moto has no such function (ResourceNotFoundException)
            refuse.clear()
            return None
        invoked.append(json.loads(call.params["body"]))  # before-call: the serialised request
        return {"StatusCode": 202}

    with mock_aws(), observed_calls(intercept=lambda_accepts) as recorder:
        settings = _deployed_settings("ReconcileFunction", recorder)
        assert settings.recon_state_machine_arn == _ref("ReconcileStateMachine", PARAMETERS)
        bucket, prefix = PARAMETERS["SettlementBucketName"], _parameter("SettlementPrefix", PARAMETERS)
        scenario = SettlementScenario(rows=250, seed=4, discrepancy_rate=0.2)
        key = f"{prefix}2026-03-02 final.csv"
        clock = FixedClock(datetime(2026, 3, 1, tzinfo=UTC))
        with use_settings(settings), recorder.paused():
            create_scenario_payments(scenario)
            # One payment with a transition behind it.
            service = PaymentService(models=get_models(settings), clock=clock)
            extra = service.create_payment("merchant-x", "idem-x", 500, "USD").payment
            service.authorize("merchant-x", extra.id, actor="test")
            row = f"{extra.id},merchant-x,500,USD,settled,2026-03-02T12:00:00Z,ref-x\n".encode()
            s3 = boto3.client("s3", region_name=REGION)
            s3.create_bucket(Bucket=bucket)
            s3.put_object(Bucket=bucket, Key=key, Body=settlement_bytes(scenario) + row)
            # A merchant's file above ReconDistributedBytes, and the state machine the stack deploys.
            large = SettlementScenario(rows=300, seed=7, discrepancy_rate=0.2)
            create_scenario_payments(large)
            body = settlement_bytes(large)
            # Two payments split across ranges (their rows wait for the merge): a matched row (a mark, no
            # transition) and another merchant's row (a row item), each again in the last range.
            body += b"".join(body.splitlines(keepends=True)[3:5])
            large_key = f"{prefix}merchant-a/2026-03-02 large.csv"
            assert len(settlement_bytes(scenario) + row) < settings.recon_distributed_bytes < len(body)
            etag = s3.put_object(Bucket=bucket, Key=large_key, Body=body)["ETag"].strip('"')
            sfn = boto3.client("stepfunctions", region_name=REGION)
            machine = sfn.create_state_machine(
                name=_resolve(TEMPLATE["Resources"]["ReconcileStateMachine"]["Properties"]["StateMachineName"],
                              PARAMETERS),
                definition=json.dumps(_definition()), roleArn=_arn(MACHINE, PARAMETERS), type="STANDARD",
            )["stateMachineArn"]  # fmt: skip
            assert machine == settings.recon_state_machine_arn
            # The function's failure queue (Lambda's on-failure destination, and where unsent continuations go).
            sqs = boto3.client("sqs", region_name=REGION)
            queue = sqs.create_queue(QueueName=_queue_name("ReconcileFailureQueue"))["QueueUrl"]
            assert queue == settings.recon_failure_queue_url == _ref("ReconcileFailureQueue", PARAMETERS)
        handler = reconcile.make_handler(
            lambda: Reconciler(PaymentService(models=get_models(settings), clock=clock), settings=settings,
                               clock=clock, max_workers=1, batch_rows=100),
            settings=settings,
        )  # fmt: skip
        record = {
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key, safe="/"), "size": 1}},
        }
        # No eTag in the record: the handler asks S3 (HeadObject). One batch, then it runs out of time, and the
        # self-invocation fails: the follow-up event is parked on the failure queue, as Lambda's destination would.
        first = handler({"Records": [record]}, _Context(remaining_ms=22_000, per_call=6_000))["files"][0]
        assert (first["complete"], first["rows"], invoked, refuse) == (False, 100, [], []), first
        assert first["continuation"]["resumable"] and first["continuation"]["parked"] == queue, first
        assert first["continuation"]["error"].startswith("ResourceNotFoundException"), first
        with recorder.paused():
            (message,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
        parked = json.loads(message["Body"])
        assert parked == {"requestPayload": {"Records": [record], reconcile.CONTINUATION: 1},
                          "responsePayload": {"errorMessage": first["continuation"]["error"]}}  # fmt: skip
        # Its re-drive: another batch, out of time again, and this time it continues by invoking itself.
        second = handler(parked["requestPayload"], _Context(remaining_ms=22_000, per_call=6_000))["files"][0]
        assert (second["complete"], second["rows"], second["continuation"]) == (False, 200, {"invoked": 2}), second
        assert len(invoked) == 1
        last = handler(invoked[0], _Context())["files"][0]  # the continuation, as Lambda delivers it
        assert (last["complete"], last["rows"]) == (True, 251) and last["report"], last
        assert handler(invoked[0], _Context())["files"][0] == last  # delivered again: the stored result
        # The large file: one execution, named after the file; S3 delivering the event again starts nothing new.
        big = {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
               "s3": {"bucket": {"name": bucket},
                      "object": {"key": quote_plus(large_key, safe="/"), "size": len(body), "eTag": etag}}}  # fmt: skip
        (entry,) = handler({"Records": [big]}, _Context())["files"]
        execution = entry["distributed"]["execution"]
        assert entry["distributed"] == {"execution": execution, "attempt": 1}
        assert handler({"Records": [big]}, _Context())["files"][0]["distributed"] == entry["distributed"]
        # Someone stops that execution (ABORTED): the next delivery describes it and starts the second attempt,
        # and a delivery after that finds the second running.
        with recorder.paused():
            sfn.stop_execution(executionArn=execution)
        retried = handler({"Records": [big]}, _Context())["files"][0]["distributed"]
        assert retried == {"execution": f"{execution}-2", "attempt": 2}, retried
        assert handler({"Records": [big]}, _Context())["files"][0]["distributed"] == retried
        assert len(invoked) == 1  # handed over, not continued
        assert [c.operation for c in recorder.calls if c.service == "states"].count("DescribeExecution") == 2
        calls = {"ReconcileFunction": list(recorder.calls)}
        with recorder.paused():
            assert sfn.describe_execution(executionArn=execution)["status"] == "ABORTED"
            started = sfn.describe_execution(executionArn=retried["execution"])
        assert started["stateMachineArn"] == machine
        given = json.loads(started["input"])
        assert given == {"bucket": bucket, "key": large_key, "etag": etag, "merchant": "merchant-a"}
        summary, steps, needs = _execute(given, recorder, clock)
        assert (summary["complete"], summary["rows"], summary["key"]) == (True, large.rows + 2, large_key), summary
        assert summary["report"]["summary"].startswith(f"s3://{bucket}/{settings.recon_report_prefix}{large_key}/")
        return calls | steps | {MACHINE: needs}


# -- ReconcileStateMachine, step by step as Step Functions runs it (JSONPath: the few forms the definition uses) --


def _path(document: Any, path: str) -> Any:
    assert path == "$" or path.startswith("$."), path
    for part in path.split(".")[1:]:
        document = document[part]
    return document


def _parameters(template: Any, state: Any) -> Any:
    """A state's Parameters (or BatchInput) for ``state``: "name.$" fields take the value at their path."""
    if isinstance(template, dict):
        return {k.removesuffix(".$"): _path(state, v) if k.endswith(".$") else _parameters(v, state)
                for k, v in template.items()}  # fmt: skip
    return [_parameters(v, state) for v in template] if isinstance(template, list) else template


def _execute(given: dict, recorder: Any, clock: FixedClock) -> tuple[dict, dict[str, list[Call]], set]:
    """One execution of the definition: each step's handler called as the deployed function (its settings from its
    template environment) with the payload the definition builds; returns the merge's output, each function's
    calls, and what the state machine's role needed."""
    definition = _definition()
    steps = {"ReconcilePlanFunction": settlement_map.plan_handler,
             "ReconcileBatchFunction": settlement_map.batch_handler,
             "ReconcileMergeFunction": settlement_map.merge_handler}  # fmt: skip
    by_arn = {_arn(name, PARAMETERS): name for name in steps}
    calls: dict[str, list[Call]] = {name: [] for name in steps}
    needs: set[tuple[str, str]] = set()
    machine = _ref("ReconcileStateMachine", PARAMETERS)
    s3 = boto3.client("s3", region_name=REGION)

    def invoke(task: dict, state: Any) -> Any:
        assert task["Type"] == "Task" and task["Resource"] == f"arn:{PARTITION}:states:::lambda:invoke", task
        parameters = _parameters(task["Parameters"], state)
        name = by_arn[parameters["FunctionName"]]
        needs.add(("lambda:InvokeFunction", parameters["FunctionName"]))
        settings = Settings.from_env(_environment(name, PARAMETERS))
        start = len(recorder.calls)
        with use_settings(settings):
            extra = {} if name == "ReconcilePlanFunction" else {"reconciler": Reconciler(
                PaymentService(models=get_models(settings), clock=clock), settings=settings, clock=clock,
                max_workers=1)}  # fmt: skip
            payload = steps[name](json.loads(json.dumps(parameters["Payload"])), None, settings=settings, **extra)
        calls[name] += recorder.calls[start:]
        return _path({"Payload": json.loads(json.dumps(payload)), "StatusCode": 200}, task["OutputPath"])

    def distributed_map(label: str, step: dict, state: dict) -> dict:
        assert step["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
        reader, batcher = step["ItemReader"], step["ItemBatcher"]
        assert reader["Resource"] == f"arn:{PARTITION}:states:::s3:getObject" and reader["ReaderConfig"] == {
            "InputType": "JSON"}  # fmt: skip
        where = _parameters(reader["Parameters"], state)
        needs.add(("s3:GetObject", f"arn:{PARTITION}:s3:::{where['Bucket']}/{where['Key']}"))
        with recorder.paused():
            items = json.loads(s3.get_object(Bucket=where["Bucket"], Key=where["Key"])["Body"].read())
        assert len(items) == state["ranges"] == 3, items
        with recorder.paused():  # the split payments' rows wait for the merge
            assert len(json.loads(s3.get_object(Bucket=where["Bucket"], Key=state["deferred_key"])["Body"].read())) == 2
        batch_input, size = _parameters(batcher["BatchInput"], state), batcher["MaxItemsPerBatch"]
        processor = step["ItemProcessor"]
        (task,) = processor["States"].values()
        assert processor["StartAt"] in processor["States"] and task.get("End") is True
        run_id = str(uuid.UUID(int=len(items)))
        children = []
        for index in range(0, len(items), size):
            child = {"Items": items[index : index + size], "BatchInput": batch_input}
            needs.add(("states:StartExecution", machine))  # each batch is a child execution of this machine
            output = invoke(task, child)
            if index + size >= len(items):  # a Retry after a lost response: the same partial, nothing counted twice
                assert invoke(task, child) == output
            name = str(uuid.UUID(int=index + 1))
            children.append({
                "ExecutionArn": f"{machine.replace(':stateMachine:', ':execution:')}/{label}:{name}", "Name": name,
                "Input": json.dumps(child), "InputDetails": {"Included": True}, "Output": json.dumps(output),
                "OutputDetails": {"Included": True}, "RedriveCount": 0, "RedriveStatus": "NOT_REDRIVABLE",
                "StartDate": "2026-03-03T01:00:00.000Z", "StateMachineArn": machine, "Status": "SUCCEEDED",
                "StopDate": "2026-03-03T01:01:00.000Z",
            })  # fmt: skip
        assert [len(json.loads(c["Input"])["Items"]) for c in children] == [2, 1]
        # The ResultWriter: <Prefix>/<map run id>/manifest.json and the SUCCEEDED results file it names.
        assert step["ResultWriter"]["Resource"] == f"arn:{PARTITION}:states:::s3:putObject"
        writer = _parameters(step["ResultWriter"]["Parameters"], state)
        run = f"{writer['Prefix']}/{run_id}"
        results_key, manifest_key = f"{run}/SUCCEEDED_0.json", f"{run}/manifest.json"
        results = json.dumps(children).encode()
        map_run = f"{machine.replace(':stateMachine:', ':mapRun:')}/{label}:{run_id}"
        manifest = {"DestinationBucket": writer["Bucket"], "MapRunArn": map_run,
                    "ResultFiles": {"FAILED": [], "PENDING": [], "SUCCEEDED": [{"Key": results_key,
                                                                                 "Size": len(results)}]}}  # fmt: skip
        with recorder.paused():
            s3.put_object(Bucket=writer["Bucket"], Key=results_key, Body=results)
            s3.put_object(Bucket=writer["Bucket"], Key=manifest_key, Body=json.dumps(manifest).encode())
        needs.update(
            ("s3:PutObject", f"arn:{PARTITION}:s3:::{writer['Bucket']}/{k}") for k in (results_key, manifest_key)
        )
        output = {"MapRunArn": map_run, "ResultWriterDetails": {"Bucket": writer["Bucket"], "Key": manifest_key}}
        assert step["ResultPath"].count(".") == 1
        return state | {step["ResultPath"].removeprefix("$."): output}

    state, name = given, definition["StartAt"]
    while True:
        step = definition["States"][name]
        before = state
        state = distributed_map(name, step, state) if step["Type"] == "Map" else invoke(step, state)
        if step.get("End"):
            assert invoke(step, before) == state  # the last step delivered again (a Retry): the stored summary
            return state, calls, needs
        name = step["Next"]


def _run_stream_consumer() -> list[Call]:
    """The consumer's calls (in Lambda the event source mapping reads the streams, not the function): a payment's
    changes, a customer's and a card's, an out-of-band edit, and the same records delivered again to a fresh
    container."""
    with mock_aws(), observed_calls() as recorder:
        settings = _deployed_settings("StreamConsumerFunction", recorder)
        writer = Settings(table_prefix=PARAMETERS["TablePrefix"], field_keys=V1)  # the API's, with its own clients
        with use_settings(writer), recorder.paused():
            writer = replace(writer, kms_key_id=create_kms_key(writer))
            models = get_models(writer)
            service = PaymentService(models=models)
            payment = service.create_payment("merchant-1", "k-1", 1250, "USD").payment
            service.authorize("merchant-1", payment.id, actor="api")
            service.capture("merchant-1", payment.id, actor="api")
            boto3.client("dynamodb", region_name=REGION).update_item(
                TableName=models.payment.Meta.table_name, Key={"id": {"S": payment.id}},
                UpdateExpression="SET amount = :a", ExpressionAttributeValues={":a": {"N": "1"}},
            )  # fmt: skip
            customers = CustomerService(writer, models=models)
            customer = customers.create_customer("merchant-1", "alice@example.com", actor="api")
            customers.update_email("merchant-1", customer.id, "alice@example.org", actor="api")
            card = customers.add_payment_method("merchant-1", customer.id, "4242424242424242", 12, 2030, actor="api")
            customers.remove_payment_method("merchant-1", customer.id, card.method.id, actor="api")
            events: list[dict] = []
            for model in (models.payment, models.customer, models.payment_method):
                StreamPoller(model.Meta.table_name, lambda event, _: events.append(event), settings=writer,
                             config=EventSourceConfig(batch_size=2)).drain()  # fmt: skip
        with use_settings(settings):
            for event in events:
                assert stream.handler(event, None) == {"batchItemFailures": []}
            fresh = stream.make_handler(stream.stream_projectors(settings))
            assert fresh(events[-1], None) == {"batchItemFailures": []}  # redelivered: reads the head
        with use_settings(writer), recorder.paused():
            assert sum(1 for _ in get_models(writer).audit.scan()) == 4 + 2 + 2
        return recorder.calls


def _run_actions() -> list[Call]:
    """Capture, refund and void (a capture replayed, once from the failed claim's ALL_OLD image and once from the
    consistent read an engine without that image needs, a void the state machine refuses, a payment that is not
    found), and a card's capture and refund through the simulated processor (the refund's answer lost: the retry
    resolves it from the ledger)."""
    strip = []  # the next claim's failure comes back without its ALL_OLD image (what dynalite answers)

    def without_old_image(call: Call) -> Any:  # before-call: the serialised request
        claim = (call.service, call.operation) == ("dynamodb", "PutItem") and json.loads(call.params["body"])[
            "TableName"].endswith("idempotency")  # fmt: skip
        if not (strip and claim):
            return None
        strip.clear()
        return 400, {"Error": {"Code": "ConditionalCheckFailedException", "Message": "The conditional request failed"}}

    with mock_aws(), observed_calls(intercept=without_old_image) as recorder:
        settings = _deployed_settings("PaymentActionsFunction", recorder)
        assert settings.processor == "local" and settings.jwt_audience == AUDIENCE
        with recorder.paused():
            writer = Settings(table_prefix=PARAMETERS["TablePrefix"], processor="local")
            with use_settings(writer):
                service = PaymentService(models=get_models(writer))
                plain, other = (service.create_payment("merchant-1", key, 1250, "USD").payment for key in ("p", "o"))
                for payment in (plain, other):
                    service.authorize("merchant-1", payment.id, actor="api")
                checkout = Checkout(service, LocalProcessor(settings=writer), sleep=lambda _: None)
                card = checkout.create_and_authorize("merchant-1", "card", 1250, "USD", "pm_card_visa").payment
        auth = {"Authorization": f"Bearer {token(KEYS['jwt_secret'], aud=AUDIENCE)}"}

        def post(payment_id: str, action: str, key: str, body: Any = None, handler: Any = actions.handler) -> int:
            event = api_event("2.0", "POST", f"/payments/{payment_id}/{action}", body=body,
                              headers=auth | {"Idempotency-Key": key}, path_parameters={"id": payment_id})  # fmt: skip
            return handler(event, None)["statusCode"]

        with use_settings(settings):
            assert post(plain.id, "capture", "a-1") == 200
            assert post(plain.id, "capture", "a-1") == 200  # replayed from the failed claim's image
            strip.append(True)
            assert post(plain.id, "capture", "a-1") == 200  # replayed from the consistent read
            assert not strip
            assert post(plain.id, "refunds", "a-2", {"amount": 250, "reason": "damaged"}) == 201
            assert post(other.id, "void", "a-3") == 200
            assert post(plain.id, "void", "a-4") == 422  # refused (stored and replayed like a success)
            assert post("no-such-payment", "capture", "a-5") == 404  # the claim released
            assert post(card.id, "capture", "c-1") == 200  # at the processor, then recorded
            service = PaymentService(models=get_models(settings))
            processor = LocalProcessor(settings=settings)
            flaky = actions.make_handler(service, Checkout(service, processor, sleep=lambda _: None),
                                         IdempotencyMiddleware(settings=settings))  # fmt: skip
            processor.inject(Fault.TIMEOUT_AFTER)
            assert post(card.id, "refunds", "c-2", {"amount": 300}, flaky) == 503  # refunded, the answer lost
            assert post(card.id, "refunds", "c-2", {"amount": 300}, flaky) == 201  # resolved from the ledger
        with use_settings(writer), recorder.paused():
            assert service.read_payment("merchant-1", card.id).refunded_amount == 300
        return recorder.calls


def _key(name: str) -> str:
    """The KMS key ``name`` as CloudFormation would make it, with the id the template resolves to (KEY_IDS)."""
    with mock.patch("moto.kms.models.generate_key_id", return_value=KEY_IDS[name]):
        arn = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
    assert arn == _arn(name, PARAMETERS)
    return arn


def _run_processor_events() -> list[Call]:
    """The processor's notifications: a dispute opened on a captured card payment, the same notification delivered
    again (a duplicate), a forged one, and the late outcome of an authorisation whose answer was lost (the simulated
    processor's ledger decides)."""
    with mock_aws(), observed_calls() as recorder:
        settings = _deployed_settings("ProcessorEventsFunction", recorder)
        assert settings.processor_webhook_secret == KEYS["processor_webhook_secret"] and settings.processor == "local"
        with recorder.paused():
            writer = Settings(table_prefix=PARAMETERS["TablePrefix"], processor="local")
            with use_settings(writer):
                service = PaymentService(models=get_models(writer))
                processor = LocalProcessor(settings=writer)
                checkout = Checkout(service, processor, sleep=lambda _: None)
                card = checkout.create_and_authorize("merchant-1", "card", 1250, "USD", "pm_card_visa").payment
                card = checkout.capture("merchant-1", card.id, actor="api").payment
                processor.inject(Fault.TIMEOUT_AFTER)
                with pytest.raises(ProcessorTimeoutError):
                    checkout.create_and_authorize("merchant-1", "lost", 700, "USD", "pm_card_visa")
                lost = service.read_payment("merchant-1", payment_id_for("merchant-1", "lost"))
                charge = processor.find(lost.processor_call.key)
        secret, now = KEYS["processor_webhook_secret"], int(time.time())  # the handler checks against its clock

        def post(event_id: str, kind: str, obj: dict, *, key: str = secret) -> dict:
            body, headers = notification(kind, obj, secret=key, created=now, event_id=event_id)
            event = api_event("2.0", "POST", "/processor/events", headers=headers, body=body.decode())
            response = processor_events.handler(event, None)
            return {"status": response["statusCode"], **json.loads(response["body"])}

        with use_settings(settings):
            dispute = dispute_created(card, dispute_id="dp_flow1")
            assert post("pev_01", *dispute)["outcome"] == "applied"
            assert post("pev_01", *dispute)["outcome"] == "duplicate"  # delivered again: one read, nothing written
            assert post("pev_02", *dispute, key="x" * 40)["status"] == 400  # forged: refused before any read
            assert post("pev_03", *authorization_outcome(lost, charge))["outcome"] == "applied"  # from the ledger
        with use_settings(writer), recorder.paused():
            assert service.read_payment("merchant-1", card.id).status == "charged_back"
            assert service.read_payment("merchant-1", lost.id).processor_call is None
        return recorder.calls


def _sqs_event(messages: list[dict], queue: str) -> dict:
    """Lambda's SQS event for received ``messages`` (what the event source mapping hands the function)."""
    return {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                         "attributes": m["Attributes"], "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
                         "eventSource": "aws:sqs", "eventSourceARN": _arn(queue, PARAMETERS), "awsRegion": REGION}
                        for m in messages]}  # fmt: skip


# One run: the producer's calls on the payments stream, then the deliverer's on the messages it enqueued.
@cache
def _run_webhooks() -> dict[str, list[Call]]:
    """The producer (WebhookEventsFunction) on a payment's create, authorisation and capture, whose merchant has
    three endpoints (one for every event, one for created and captured, one for captured), and on another
    merchant's payment (no endpoints: one query, nothing sent). The deliverer (WebhookDeliveryFunction) on what it
    enqueued: delivered, a failed first attempt (its backoff set, the group's next message made visible again),
    the endpoint disabled meanwhile (given up, no HTTP), then the failed message's last attempt (logged failed,
    moved to the dead-letter queue) and the next one's first."""
    with mock_aws(), observed_calls() as recorder:
        settings = _deployed_settings("WebhookEventsFunction", recorder)
        sqs = boto3.client("sqs", region_name=REGION)
        with recorder.paused():
            fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
            queue = sqs.create_queue(QueueName=_queue_name("WebhookQueue"), Attributes=fifo)["QueueUrl"]
            dead = sqs.create_queue(QueueName=_queue_name("WebhookDeadLetterQueue"), Attributes=fifo)["QueueUrl"]
            assert settings.webhook_queue_url == queue
            writer = Settings(
                table_prefix=PARAMETERS["TablePrefix"], field_keys=V1, kms_key_id=_key("FieldEncryptionKey")
            )
            with use_settings(writer):  # the CLI's (webhooks add), and the API's changes
                endpoints = WebhookEndpoints(settings=writer)
                every, _ = endpoints.add("merchant-1", "https://merchant-1.example/every")
                down, _ = endpoints.add("merchant-1", "https://merchant-1.example/down",
                                        events=["payment.created", "payment.captured"])  # fmt: skip
                gone, _ = endpoints.add("merchant-1", "https://merchant-1.example/gone", events=["payment.captured"])
                service = PaymentService(models=get_models(writer))
                payment = service.create_payment("merchant-1", "k-1", 1250, "USD").payment
                service.authorize("merchant-1", payment.id, actor="api")
                service.capture("merchant-1", payment.id, actor="api")
                service.create_payment("merchant-2", "k-2", 990, "EUR")
                events: list[dict] = []
                StreamPoller(get_models(writer).payment.Meta.table_name, lambda event, _: events.append(event),
                             settings=writer, config=EventSourceConfig(batch_size=2)).drain()  # fmt: skip
        with use_settings(settings):
            for event in events:
                assert webhook_events.handler(event, None) == {"batchItemFailures": []}
        calls = {"WebhookEventsFunction": list(recorder.calls)}
        start = len(recorder.calls)
        deliverer_settings = Settings.from_env(_environment("WebhookDeliveryFunction", PARAMETERS))  # reads the keys
        assert (deliverer_settings.webhook_queue_url, deliverer_settings.webhook_dead_letter_queue_url) == (queue, dead)
        assert deliverer_settings.webhook_max_attempts == 2 and deliverer_settings.field_keys == V1
        with recorder.paused():
            sent = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])
            assert sent["Attributes"]["ApproximateNumberOfMessages"] == str(3 + 2 + 1)  # every, down, gone
            with use_settings(writer):
                endpoints.disable("merchant-1", gone.endpoint_id)  # after its message was enqueued
        posted: list[str] = []

        def http(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int | None, str | None]:
            assert headers["Payment-Signature"].startswith("t=") and timeout == 5.0
            posted.append(url)
            return (200, None) if url == every.url else (503, None)

        def receive() -> dict:
            with recorder.paused():
                messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, AttributeNames=["All"])
            return _sqs_event(messages.get("Messages", []), "WebhookQueue")

        with use_settings(deliverer_settings):
            deliver = webhook_delivery.make_handler(Deliverer(endpoints=WebhookEndpoints(settings=deliverer_settings),
                                                              settings=deliverer_settings, http=http))  # fmt: skip
            first = receive()
            assert len(first["Records"]) == 6
            failures = {f["itemIdentifier"] for f in deliver(first, None)["batchItemFailures"]}
            assert sorted(posted) == sorted([every.url] * 3 + [down.url]), posted  # not the blocked, not the disabled
            failed, blocked = (r for r in first["Records"] if json.loads(r["body"])["endpoint_id"] == down.endpoint_id)
            assert json.loads(failed["body"])["type"] == "payment.created"  # the group's first: attempt 1 failed
            assert failures == {failed["messageId"], blocked["messageId"]}  # and the captured, blocked behind it
            with recorder.paused():  # its backoff over (the blocked message is visible already)
                sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=failed["receiptHandle"],
                                              VisibilityTimeout=0)  # fmt: skip
            last = receive()
            assert [r["attributes"]["ApproximateReceiveCount"] for r in last["Records"]] == ["2", "2"]
            # The created event's last attempt: given up (dead-lettered, deleted); the captured one's first (the
            # log counts attempts, not receives): it waits its backoff.
            assert deliver(last, None) == {"batchItemFailures": [{"itemIdentifier": blocked["messageId"]}]}
        with recorder.paused():
            dead_letters = sqs.receive_message(QueueUrl=dead, MaxNumberOfMessages=10).get("Messages", [])
            assert [json.loads(m["Body"])["type"] for m in dead_letters] == ["payment.created"]
            with use_settings(writer):
                states = sorted(d.state for d in get_models(writer).webhook_delivery.scan())
            assert states == ["delivered"] * 3 + ["failed"] * 2 + ["pending"]
        return calls | {"WebhookDeliveryFunction": recorder.calls[start:]}


# The module's fixture runs every handler's flows under a recording of its calls: seconds, not in make test-fast.
pytestmark = pytest.mark.slow

FLOWS = {"ProcessPaymentFunction": _run_process, "QueryPaymentsFunction": _run_query,
         "ReconcileFunction": lambda: _run_reconciliation()["ReconcileFunction"],
         "ReconcilePlanFunction": lambda: _run_reconciliation()["ReconcilePlanFunction"],
         "ReconcileBatchFunction": lambda: _run_reconciliation()["ReconcileBatchFunction"],
         "ReconcileMergeFunction": lambda: _run_reconciliation()["ReconcileMergeFunction"],
         "StreamConsumerFunction": _run_stream_consumer, "PaymentActionsFunction": _run_actions,
         "ProcessorEventsFunction": _run_processor_events,
         "WebhookEventsFunction": lambda: _run_webhooks()["WebhookEventsFunction"],
         "WebhookDeliveryFunction": lambda: _run_webhooks()["WebhookDeliveryFunction"]}  # fmt: skip


@pytest.fixture(scope="module")
def observed() -> dict[str, set[tuple[str, str]]]:
    """Per function, every (action, resource) its flows needed."""
    result = {}
    for function, flow in FLOWS.items():
        # Each function in a container of its own: no model, client or projector cached by an earlier flow (two
        # functions whose settings are equal would otherwise share clients hooked to the earlier recording).
        secrets._providers.clear()
        bind_models.cache_clear()
        aws._client.cache_clear()
        stream._default_projectors.cache_clear()
        processor_events._default_events.cache_clear()
        actions._default_dependencies.cache_clear()
        webhook_events._default_producer.cache_clear()
        result[function] = {need for call in flow() for need in _needs(call)}
    return result


# -- the checks ------------------------------------------------------------------------------------------------------


def _denied(function: str, grants: set[tuple], needs: set[tuple]) -> list[tuple]:
    return sorted((need for need in needs if not any(_allows(grant, need) for grant in grants)), key=repr)


def _unused(function: str, grants: set[tuple], needs: set[tuple]) -> list[tuple]:
    unused = [grant for grant in grants if not any(_allows(grant, need) for need in needs)
              and (function, grant[0], grant[1].rpartition(":")[2]) not in ALLOWED_UNOBSERVED]  # fmt: skip
    return sorted(unused, key=repr)


@pytest.mark.parametrize("function", FLOWS)
def test_the_policy_allows_every_call_the_handler_made(observed: dict, function: str) -> None:
    denied = _denied(function, _grants(function, PARAMETERS), observed[function])
    assert denied == [], f"{function} would be denied: {denied}"


@pytest.mark.parametrize("function", FLOWS)
def test_the_policy_grants_nothing_the_handler_did_not_use(observed: dict, function: str) -> None:
    unused = _unused(function, _grants(function, PARAMETERS), observed[function])
    assert unused == [], f"{function} grants what no flow used (remove it, or allow-list it with a reason): {unused}"


def test_the_checks_catch_a_missing_grant_a_broader_one_and_another_table(observed: dict) -> None:
    function, needs = "ProcessPaymentFunction", observed["ProcessPaymentFunction"]
    grants = _grants(function, PARAMETERS)
    payments = table_arn("stack-payments")
    assert _denied(function, grants - {("dynamodb:UpdateItem", payments)}, needs) == [("dynamodb:UpdateItem", payments)]
    assert _unused(function, grants | {("dynamodb:Scan", payments)}, needs) == [("dynamodb:Scan", payments)]
    customers = ("dynamodb:GetItem", table_arn("stack-customers"))
    assert _unused(function, grants | {customers}, needs) == [customers]
    assert _denied(function, grants, needs | {("dynamodb:Query", table_arn("stack-payments", "by-merchant-created"))})


def test_the_allow_list_is_still_granted(observed: dict) -> None:
    for function, action, suffix in ALLOWED_UNOBSERVED:
        assert any(g[0] == action and g[1].endswith(suffix) for g in _grants(function, PARAMETERS))
        assert not any(n[0] == action and n[1].endswith(suffix) for n in observed[function]), "now observed: drop it"


def test_the_flows_reached_every_service_the_functions_use(observed: dict) -> None:
    services = {f: {need[0].partition(":")[0] for need in needs} for f, needs in observed.items()}
    assert services == {
        "ProcessPaymentFunction": {"secretsmanager", "dynamodb"},
        "QueryPaymentsFunction": {"secretsmanager", "dynamodb"},
        "ReconcileFunction": {"dynamodb", "s3", "lambda", "states", "sqs"},
        "ReconcilePlanFunction": {"s3"},
        "ReconcileBatchFunction": {"dynamodb", "s3"},
        "ReconcileMergeFunction": {"dynamodb", "s3"},
        "StreamConsumerFunction": {"dynamodb"},
        "PaymentActionsFunction": {"secretsmanager", "dynamodb"},
        "ProcessorEventsFunction": {"secretsmanager", "dynamodb"},
        "WebhookEventsFunction": {"dynamodb", "sqs"},
        "WebhookDeliveryFunction": {"secretsmanager", "dynamodb", "kms", "sqs"},
    }


def test_no_wildcard_actions_or_resources_beyond_object_prefixes() -> None:
    for function in FLOWS:
        for action, resource, *_ in _grants(function, PARAMETERS):
            assert "*" not in action, (function, action)
            # An execution's name is its file's id: the reconcile function describes this machine's executions.
            executions = (function, action, resource) == ("ReconcileFunction", "states:DescribeExecution",
                                                          f"{_EXECUTIONS}:*")  # fmt: skip
            assert resource != "*" and (
                "*" not in resource or re.fullmatch(r"arn:aws:s3:::[a-z0-9.-]+/[^*]+/\*", resource) or executions
            ), (function, resource)


def test_without_the_local_processor_no_ledger_table_and_no_grant_on_it() -> None:
    parameters = PARAMETERS | {"Processor": ""}
    assert not _condition("UseLocalProcessor", parameters)
    with_ledger = {f for f in FLOWS if any("processor-ledger" in g[1] for g in _grants(f, PARAMETERS))}
    assert with_ledger == {"ProcessPaymentFunction", "PaymentActionsFunction", "ProcessorEventsFunction"}
    for function in FLOWS:
        grants = _grants(function, parameters)
        assert not any("processor-ledger" in grant[1] for grant in grants), function
        assert "PAYMENT_PROCESSOR" not in _environment(function, parameters), function
        ledger = _grants(function, PARAMETERS) - grants
        assert all(grant[1] == table_arn("stack-processor-ledger") for grant in ledger), function
        assert bool(ledger) == (function in with_ledger), function


def test_only_the_functions_that_need_keys_can_read_the_secret_and_only_that_secret() -> None:
    """The API functions (JWT and cursor keys), the processor's notifications (their signing secret) and the
    webhook deliverer (the field keys that bind the endpoints' encrypted secrets): no other function."""
    readers = {"ProcessPaymentFunction", "QueryPaymentsFunction", "PaymentActionsFunction", "ProcessorEventsFunction",
               "WebhookDeliveryFunction"}  # fmt: skip
    arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:payments/keys-??????"
    for function in FLOWS:
        secret_grants = {g for g in _grants(function, PARAMETERS) if g[0].startswith("secretsmanager:")}
        assert secret_grants == ({("secretsmanager:GetSecretValue", arn)} if function in readers else set()), function
        assert ("PAYMENT_SECRETS_ID" in _environment(function, PARAMETERS)) == (function in readers), function
    assert not any(g[0].startswith("secretsmanager:") for g in _grants(MACHINE, PARAMETERS))


def test_the_deliverer_alone_uses_the_field_key_and_only_to_decrypt_webhook_secrets(observed: dict) -> None:
    """The grant's encryption-context condition: a compromised deliverer (it calls URLs merchants choose) cannot
    decrypt the customers' emails or the card vault under the same key."""
    key = _arn("FieldEncryptionKey", PARAMETERS)
    purpose = ("kms:EncryptionContext:purpose", PURPOSE)
    for function in FLOWS:
        kms = {g for g in _grants(function, PARAMETERS) if g[0].startswith("kms:")}
        expected = {("kms:Decrypt", key, frozenset({purpose}))} if function == "WebhookDeliveryFunction" else set()
        assert kms == expected, function
    assert _environment("WebhookDeliveryFunction", PARAMETERS)["PAYMENT_KMS_KEY_ID"] == key
    decrypts = [n for n in observed["WebhookDeliveryFunction"] if n[0] == "kms:Decrypt"]
    assert decrypts and all(n[1] == key and purpose in n[2] for n in decrypts)
    grants = _grants("WebhookDeliveryFunction", PARAMETERS)
    merchant = ("kms:EncryptionContext:merchant_id", "merchant-1")
    for other in ("card", "email"):
        need = ("kms:Decrypt", key, frozenset({("kms:EncryptionContext:purpose", other), merchant}))
        assert _denied("WebhookDeliveryFunction", grants, {need}) == [need]
    bare = ("kms:Decrypt", key)  # no context at all
    assert _denied("WebhookDeliveryFunction", grants, {bare}) == [bare]
    encrypt = ("kms:GenerateDataKey", key, frozenset({purpose, merchant}))  # adding endpoints is the CLI's
    assert _denied("WebhookDeliveryFunction", grants, {encrypt}) == [encrypt]


# -- the state machine -----------------------------------------------------------------------------------------------


def test_only_the_reconcile_function_starts_executions_and_only_of_the_state_machine() -> None:
    machine = f"{_STATES}:stateMachine:{STACK}-reconcile"
    assert _ref("ReconcileStateMachine", PARAMETERS) == machine
    reconcile_states = {("states:StartExecution", machine), ("states:DescribeExecution", f"{_EXECUTIONS}:*")}
    for function in FLOWS:
        states = {g for g in _grants(function, PARAMETERS) if g[0].startswith("states:")}
        assert states == (reconcile_states if function == "ReconcileFunction" else set()), function
    # The file's executions (execution:<machine>:<file id>[-<attempt>]), not the Map Run's children.
    describe = ("states:DescribeExecution", f"{_EXECUTIONS}:{uuid.UUID(int=2)}-2")
    child = ("states:DescribeExecution", f"{_EXECUTIONS}/Ranges:{uuid.UUID(int=1)}")
    other = ("states:DescribeExecution", f"{_STATES}:execution:{STACK}-reconcile-other:{uuid.UUID(int=2)}")
    grants = _grants("ReconcileFunction", PARAMETERS)
    assert any(_allows(g, describe) for g in grants)
    assert not any(_allows(g, need) for g in grants for need in (child, other))
    # The queues: the reconcile function parks on its failure queue; the webhook producer sends to the delivery
    # queue, its worker sets backoffs there and moves what it gives up on to the dead letters. No one else.
    webhooks, dead_letters = _arn("WebhookQueue", PARAMETERS), _arn("WebhookDeadLetterQueue", PARAMETERS)
    expected = {
        "ReconcileFunction": {("sqs:SendMessage", _arn("ReconcileFailureQueue", PARAMETERS))},
        "WebhookEventsFunction": {("sqs:SendMessage", webhooks)},
        "WebhookDeliveryFunction": {("sqs:ChangeMessageVisibility", webhooks), ("sqs:SendMessage", dead_letters)},
    }
    for function in FLOWS:
        queues = {g for g in _grants(function, PARAMETERS) if g[0].startswith("sqs:")}
        assert queues == expected.get(function, set()), function
    environment = _environment("ReconcileFunction", PARAMETERS)
    assert environment["PAYMENT_RECON_FAILURE_QUEUE_URL"] == _ref("ReconcileFailureQueue", PARAMETERS)
    assert environment["PAYMENT_RECON_STATE_MACHINE_ARN"] == machine
    assert environment["PAYMENT_RECON_SETTLEMENT_PREFIX"] == _parameter("SettlementPrefix", PARAMETERS)
    assert environment["PAYMENT_RECON_DISTRIBUTED_BYTES"] == PARAMETERS["ReconDistributedBytes"]
    assert _environment("ReconcilePlanFunction", PARAMETERS)["PAYMENT_RECON_ROWS_PER_RANGE"] == "120"


def test_the_state_machine_role_grants_exactly_the_distributed_maps_needs() -> None:
    name, reports = f"{STACK}-reconcile", _REPORTS
    functions = {_arn(f, PARAMETERS) for f in ("ReconcilePlanFunction", "ReconcileBatchFunction",
                                               "ReconcileMergeFunction")}  # fmt: skip
    assert _grants(MACHINE, PARAMETERS) == (
        {("lambda:InvokeFunction", arn) for arn in functions}
        | {("states:StartExecution", f"{_STATES}:stateMachine:{name}")}
        | {
            (action, f"{_STATES}:execution:{name}{tail}")
            for action in ("states:DescribeExecution", "states:StopExecution")
            for tail in (":*", "/*")
        }
        | {("s3:GetObject", f"{reports}*")}
        | {
            (action, f"{reports}map-results/*")
            for action in ("s3:PutObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload")
        }
    )
    # The Map Run's children are executions named execution:<machine>/<map run label>:<id>.
    child = f"{_STATES}:execution:{name}/Ranges:{uuid.UUID(int=1)}"
    for action in ("states:DescribeExecution", "states:StopExecution"):
        assert any(_allows(grant, (action, child)) for grant in _grants(MACHINE, PARAMETERS)), action
    # Assumed by Step Functions only, in this account (the confused deputy).
    (trust,) = TEMPLATE["Resources"][MACHINE]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert (trust["Principal"], trust["Action"]) == ({"Service": "states.amazonaws.com"}, "sts:AssumeRole")
    assert _resolve(trust["Condition"], PARAMETERS) == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    assert TEMPLATE["Resources"][MACHINE]["Properties"].get("ManagedPolicyArns") is None
    assert _resolve(TEMPLATE["Resources"]["ReconcileStateMachine"]["Properties"]["RoleArn"], PARAMETERS) == _arn(
        MACHINE, PARAMETERS)  # fmt: skip


def test_the_state_machine_role_allows_what_an_execution_needed_and_nothing_else() -> None:
    needs = _run_reconciliation()[MACHINE]
    grants = _grants(MACHINE, PARAMETERS)
    assert _denied(MACHINE, grants, needs) == []
    unused = [g for g in grants if not any(_allows(g, need) for need in needs) and g not in MACHINE_UNOBSERVED]
    assert unused == [], f"the state machine's role grants what no execution step used: {unused}"
    assert set(MACHINE_UNOBSERVED) <= grants
    assert not any(_allows(grant, need) for grant in MACHINE_UNOBSERVED for need in needs), "now observed: drop it"
    assert {action.partition(":")[0] for action, _ in needs} == {"lambda", "s3", "states"}
