"""Least privilege, proven by running the code: each function's policy in template.yaml allows every AWS call its
handler makes, and grants nothing beyond them plus a short allow-list of calls reached only on paths a test cannot
reach in-process (each with its reason).

The calls are collected from real flows on moto in-process through botocore event hooks (tests/aws_calls.py):
the settings are built from the function's environment *as the template sets it* (so the secret is read through
Secrets Manager as deployed), then the handler runs: process (create with and without a card, replay, a payload
reused under the key, a decline and its replay, processor timeouts before and after the charge and the retries),
query (list, filters, pages, total, one payment, a missing one),
reconcile (a settlement file that runs out of time, continues by invoking itself, and is delivered again).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
import yaml
from moto import mock_aws

from payment_examples.checkout.processor import Fault, LocalProcessor
from payment_examples.checkout.service import Checkout
from payment_examples.core import aws, secrets
from payment_examples.core.clock import FixedClock, SeededIds, SteppingClock
from payment_examples.core.config import Settings, use_settings
from payment_examples.encryption.customers import CustomerService
from payment_examples.engine.local import create_kms_key
from payment_examples.engine.stream import EventSourceConfig, StreamPoller
from payment_examples.handlers import process, query, reconcile, stream
from payment_examples.payments.seed import seed_payments
from payment_examples.payments.service import PaymentService
from payment_examples.reconciliation.generator import SettlementScenario, create_scenario_payments, settlement_bytes
from payment_examples.reconciliation.reconciler import Reconciler
from payment_examples.tables.models import bind_models, create_tables, get_models
from tests.api_events import api_event, token
from tests.aws_calls import ACCOUNT, PARTITION, REGION, Call, observed_calls, permissions, table_arn
from tests.conftest import V1

TEMPLATE = yaml.safe_load((Path(__file__).resolve().parents[3] / "template.yaml").read_text())
STACK = "teststack"
PARAMETERS = {"TablePrefix": "stack-", "SecretsName": "payments/keys", "SettlementBucketName": "settlements-test",
              "Processor": "local"}  # fmt: skip
KEYS = {"jwt_secret": "jwt-secret-held-in-secrets-manager-0123456789", "cursor_secret": "c" * 40}
AUDIENCE = "payments-api"

# Granted, though no flow here reaches them: (function, action, resource suffix) -> why. An entry needs a reason (a
# path only a failure reaches) and a test that it is still granted.
ALLOWED_UNOBSERVED: dict[tuple[str, str, str], str] = {
    ("ProcessPaymentFunction", "dynamodb:GetItem", "table/stack-payments"): (
        "a retry that loses the race to apply the processor's answer reads the payment as it is now "
        "(checkout.Checkout.resolve); replays are answered from the failed put's ALL_OLD image"
    ),
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
    return f"<{name}>"  # ids CloudFormation makes up (an API id, a queue URL)


def _arn(name: str, parameters: dict[str, str]) -> str:
    resource = TEMPLATE["Resources"][name]
    if resource["Type"] == "AWS::DynamoDB::Table":
        return table_arn(_ref(name, parameters))
    if resource["Type"] == "AWS::Serverless::Function":
        return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{_ref(name, parameters)}"
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
    statements = []
    for policy in TEMPLATE["Resources"][function]["Properties"]["Policies"]:
        assert set(policy) == {"Statement"}, f"{function}: only explicit statements, no SAM policy templates"
        statements += _resolve(policy["Statement"], parameters)
    return statements


def _grants(function: str, parameters: dict[str, str]) -> set[tuple[str, str]]:
    """Every (action, resource pattern) the function's policy allows."""
    grants = set()
    for statement in _statements(function, parameters):
        assert statement["Effect"] == "Allow" and "Condition" not in statement and "NotAction" not in statement
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        grants |= {(action, resource) for action in actions for resource in resources}
    return grants


def _allows(grant: tuple[str, str], need: tuple[str, str]) -> bool:
    # IAM wildcards: "*" any run of characters, "?" one; actions are case-insensitive.
    return fnmatch.fnmatchcase(need[0].lower(), grant[0].lower()) and fnmatch.fnmatchcase(need[1], grant[1])


def _environment(function: str, parameters: dict[str, str]) -> dict[str, str]:
    variables = dict(TEMPLATE["Globals"]["Function"]["Environment"]["Variables"])
    variables |= TEMPLATE["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
    return {"AWS_REGION": REGION, **_resolve(variables, parameters)}


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


def _run_reconcile() -> list[Call]:
    invoked: list[dict] = []

    def lambda_accepts(call: Call) -> dict | None:  # Lambda queues an asynchronous invocation: 202
        if (call.service, call.operation) == ("lambda", "Invoke"):
            invoked.append(json.loads(call.params["body"]))  # before-call: the serialised request
            return {"StatusCode": 202}
        return None

    with mock_aws(), observed_calls(intercept=lambda_accepts) as recorder:
        settings = _deployed_settings("ReconcileFunction", recorder)
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
        # No eTag in the record: the handler asks S3 (HeadObject). Two batches, then it runs out of time.
        first = handler({"Records": [record]}, _Context(remaining_ms=28_000, per_call=6_000))["files"][0]
        assert (first["complete"], first["rows"]) == (False, 200) and len(invoked) == 1
        last = handler(invoked[0], _Context())["files"][0]  # the continuation, as Lambda delivers it
        assert (last["complete"], last["rows"]) == (True, 251) and last["report"], last
        assert handler(invoked[0], _Context())["files"][0] == last  # delivered again: the stored result
        return recorder.calls


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


# The module's fixture runs every handler's flows under a recording of its calls: seconds, not in make test-fast.
pytestmark = pytest.mark.slow

FLOWS = {"ProcessPaymentFunction": _run_process, "QueryPaymentsFunction": _run_query,
         "ReconcileFunction": _run_reconcile, "StreamConsumerFunction": _run_stream_consumer}  # fmt: skip


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
        result[function] = {need for call in flow() for need in permissions(call)}
    return result


# -- the checks ------------------------------------------------------------------------------------------------------


def _denied(function: str, grants: set[tuple[str, str]], needs: set[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted(need for need in needs if not any(_allows(grant, need) for grant in grants))


def _unused(function: str, grants: set[tuple[str, str]], needs: set[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted(
        grant
        for grant in grants
        if not any(_allows(grant, need) for need in needs)
        and (function, grant[0], grant[1].rpartition(":")[2]) not in ALLOWED_UNOBSERVED
    )


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
    services = {f: {action.partition(":")[0] for action, _ in needs} for f, needs in observed.items()}
    assert services == {
        "ProcessPaymentFunction": {"secretsmanager", "dynamodb"},
        "QueryPaymentsFunction": {"secretsmanager", "dynamodb"},
        "ReconcileFunction": {"dynamodb", "s3", "lambda"},
        "StreamConsumerFunction": {"dynamodb"},
    }


def test_no_wildcard_actions_or_resources_beyond_object_prefixes() -> None:
    for function in FLOWS:
        for action, resource in _grants(function, PARAMETERS):
            assert "*" not in action, (function, action)
            assert resource != "*" and (
                "*" not in resource or re.fullmatch(r"arn:aws:s3:::[a-z0-9.-]+/[^*]+/\*", resource)
            ), (function, resource)


def test_without_the_local_processor_no_ledger_table_and_no_grant_on_it() -> None:
    parameters = PARAMETERS | {"Processor": ""}
    assert not _condition("UseLocalProcessor", parameters)
    grants = _grants("ProcessPaymentFunction", parameters)
    assert not any("processor-ledger" in resource for _, resource in grants)
    assert "PAYMENT_PROCESSOR" not in _environment("ProcessPaymentFunction", parameters)
    ledger = _grants("ProcessPaymentFunction", PARAMETERS) - grants
    assert ledger and all(r == table_arn("stack-processor-ledger") for _, r in ledger)


def test_only_the_api_functions_can_read_the_secret_and_only_that_secret() -> None:
    for function in FLOWS:
        secret_grants = {g for g in _grants(function, PARAMETERS) if g[0].startswith("secretsmanager:")}
        if function in ("ReconcileFunction", "StreamConsumerFunction"):
            assert secret_grants == set()
        else:
            arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:payments/keys-??????"
            assert secret_grants == {("secretsmanager:GetSecretValue", arn)}
