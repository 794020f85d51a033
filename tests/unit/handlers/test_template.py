"""template.yaml deploys what the code expects: the same tables and indexes as models.py (the processor's ledger only
where the simulated processor is configured), protected and encrypted; handlers that exist, with the settings they
read and no secret in their configuration; the settlement bucket wired to the reconcile function; the optional JWT
authorizer, throttling and access logs; and a template that cfn-lint (with the SAM transform) accepts.
Each function's policy is checked against the calls its handler makes in
tests/unit/handlers/test_template_policies.py."""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from payment_examples.core.config import Settings
from payment_examples.reconciliation.reconciler import Reconciler
from payment_examples.tables.models import bind_models

TEMPLATE = Path(__file__).resolve().parents[3] / "template.yaml"


@pytest.fixture(scope="module")
def template() -> dict:
    return yaml.safe_load(TEMPLATE.read_text())


def _tables(template: dict) -> dict[str, dict]:
    tables = {}
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::DynamoDB::Table":
            properties = resource["Properties"]
            tables[properties["TableName"]["Fn::Sub"].removeprefix("${TablePrefix}")] = properties
    return tables


def _keys(key_schema: list[dict]) -> dict[str, str]:
    return {k["KeyType"]: k["AttributeName"] for k in key_schema}


def _projection(projection: dict) -> tuple[str, tuple[str, ...]]:
    return projection["ProjectionType"], tuple(sorted(projection.get("NonKeyAttributes", [])))


def test_every_model_has_a_table_with_the_same_keys_indexes_and_ttl(template: dict) -> None:
    models = bind_models(Settings(table_prefix=""))
    tables = _tables(template)
    every = (*models.all(), models.processor_ledger)
    assert sorted(tables) == sorted(model.Meta.table_name for model in every)
    for model in every:
        table = tables[model.Meta.table_name]
        schema = model._get_schema()
        assert table["BillingMode"] == "PAY_PER_REQUEST"
        assert _keys(table["KeySchema"]) == _keys(schema["key_schema"])
        assert {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]} == {
            (a["AttributeName"], a["AttributeType"]) for a in schema["attribute_definitions"]
        }
        expected = {
            index["index_name"]: (_keys(index["key_schema"]), _projection(index["projection"]))
            for index in schema["global_secondary_indexes"]
        }
        actual = {
            index["IndexName"]: (_keys(index["KeySchema"]), _projection(index["Projection"]))
            for index in table.get("GlobalSecondaryIndexes", [])
        }
        assert actual == expected, model.Meta.table_name
        assert "LocalSecondaryIndexes" not in table and not schema.get("local_secondary_indexes")
        ttl = model._ttl_attribute()
        if ttl is None:
            assert "TimeToLiveSpecification" not in table
        else:
            assert table["TimeToLiveSpecification"] == {"AttributeName": ttl.attr_name, "Enabled": True}


def test_every_projected_table_has_a_stream_read_by_the_consumer(template: dict) -> None:
    """A model that declares a stream (its audit chain is projected) has one in the template, and the consumer
    function has an event source on it; no other table's stream is consumed. The webhook producer is a second
    consumer of the payments stream, and only of it."""
    models = bind_models(Settings(table_prefix=""))
    tables = _tables(template)
    resources = {r["Properties"].get("TableName", {}).get("Fn::Sub", "").removeprefix("${TablePrefix}"): name
                 for name, r in template["Resources"].items() if r["Type"] == "AWS::DynamoDB::Table"}  # fmt: skip
    projected = {m.Meta.table_name for m in models.all() if getattr(m.Meta, "stream_view_type", None)}
    assert projected == {"payments", "customers", "payment-methods"}
    for name, table in tables.items():
        spec = table.get("StreamSpecification")
        assert spec == ({"StreamViewType": "NEW_AND_OLD_IMAGES"} if name in projected else None), name
    events = template["Resources"]["StreamConsumerFunction"]["Properties"]["Events"].values()
    consumed = {e["Properties"]["Stream"]["Fn::GetAtt"][0] for e in events if e["Type"] == "DynamoDB"}
    assert consumed == {resources[name] for name in projected}
    stream_sources = {name: [e for e in f.get("Events", {}).values() if e["Type"] == "DynamoDB"]
                      for name, f in _functions(template).items()}  # fmt: skip
    assert {name for name, sources in stream_sources.items() if sources} == {"StreamConsumerFunction",
                                                                             "WebhookEventsFunction"}  # fmt: skip
    producer = stream_sources["WebhookEventsFunction"]
    assert [e["Properties"]["Stream"] for e in producer] == [{"Fn::GetAtt": ["PaymentsTable", "StreamArn"]}]
    for name, sources in stream_sources.items():
        for event in sources:  # partial batch responses, bisect, bounded retries and age, a queue for the rest
            properties = event["Properties"]
            assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"], name
            assert properties["BisectBatchOnFunctionError"] is True, name
            assert 0 <= properties["MaximumRetryAttempts"] <= 10, name
            assert 60 <= properties["MaximumRecordAgeInSeconds"] <= 86_400, name  # inside the stream's 24 hours
            on_failure = properties["DestinationConfig"]["OnFailure"]
            assert on_failure["Type"] == "SQS", name
            assert template["Resources"][on_failure["Destination"]["Fn::GetAtt"][0]]["Type"] == "AWS::SQS::Queue"
    # DynamoDB Streams: no more than two readers per shard, or they are throttled (a third needs a fan-out).
    readers = [e["Properties"]["Stream"]["Fn::GetAtt"][0] for sources in stream_sources.values() for e in sources]
    assert max(readers.count(table) for table in readers) == readers.count("PaymentsTable") == 2
    # Each consumer gives up into its own queue: their recoveries differ (re-project, or re-publish the events).
    (webhook_failures,) = {e["Properties"]["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
                           for e in producer}  # fmt: skip
    assert webhook_failures == "WebhookStreamFailureQueue"
    assert all(e["Properties"]["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0] == "StreamFailureQueue"
               for e in events)  # fmt: skip


def test_the_card_vaults_index_projects_what_the_model_declares(template: dict) -> None:
    by_card = _tables(template)["payment-methods"]["GlobalSecondaryIndexes"][1]
    assert by_card["Projection"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["customer_id"]}


def test_every_table_is_protected_recoverable_and_encrypted(template: dict) -> None:
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::DynamoDB::Table":
            continue
        properties = resource["Properties"]
        assert properties["DeletionProtectionEnabled"] is True
        assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert properties["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS"}
        assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"


def test_the_processor_ledger_exists_only_where_the_local_processor_is_configured(template: dict) -> None:
    ledgers = [
        r
        for r in template["Resources"].values()
        if r["Type"] == "AWS::DynamoDB::Table" and r["Properties"]["TableName"]["Fn::Sub"].endswith("ledger")
    ]
    assert [r.get("Condition") for r in ledgers] == ["UseLocalProcessor"]
    assert template["Conditions"]["UseLocalProcessor"] == {"Fn::Equals": [{"Ref": "Processor"}, "local"]}
    assert template["Parameters"]["Processor"]["AllowedValues"] == ["", "local"]
    assert template["Parameters"]["Processor"]["Default"] == ""  # a real deployment has no simulated processor


def _functions(template: dict) -> dict[str, dict]:
    return {
        name: r["Properties"] for name, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"
    }


def test_every_function_handler_exists(template: dict) -> None:
    functions = _functions(template)
    assert sorted(f["Handler"] for f in functions.values()) == [
        "payment_examples.handlers.actions.handler",
        "payment_examples.handlers.process.handler",
        "payment_examples.handlers.processor_events.handler",
        "payment_examples.handlers.query.handler",
        "payment_examples.handlers.reconcile.handler",
        "payment_examples.handlers.settlement_map.batch_handler",
        "payment_examples.handlers.settlement_map.merge_handler",
        "payment_examples.handlers.settlement_map.plan_handler",
        "payment_examples.handlers.stream.handler",
        "payment_examples.handlers.webhook_delivery.handler",
        "payment_examples.handlers.webhook_events.handler",
    ]
    for function in functions.values():
        module, _, name = function["Handler"].rpartition(".")
        assert callable(getattr(importlib.import_module(module), name))


def _variables(template: dict, function: dict) -> dict:
    return template["Globals"]["Function"]["Environment"]["Variables"] | function.get("Environment", {}).get(
        "Variables", {}
    )


def test_functions_read_the_settings_the_code_reads_and_no_secret_is_in_their_configuration(template: dict) -> None:
    config = (Path(__file__).resolve().parents[3] / "payment_examples" / "core" / "config.py").read_text()
    text = TEMPLATE.read_text()
    assert "resolve:secretsmanager" not in text and "resolve:ssm" not in text
    for name, function in _functions(template).items():
        variables = _variables(template, function)
        assert variables["PAYMENT_USE_AWS"] == "1" and "PAYMENT_TABLE_PREFIX" in variables
        assert all(f'"{v}"' in config for v in variables if v.startswith("PAYMENT_")), name
        assert not {"PAYMENT_JWT_SECRET", "PAYMENT_CURSOR_SECRET", "PAYMENT_FIELD_KEYS", "PAYMENT_AUDIT_KEY",
                    "PAYMENT_JWT_PUBLIC_KEY"} & set(variables), name  # fmt: skip
    functions = _functions(template)
    for api in ("ProcessPaymentFunction", "QueryPaymentsFunction", "PaymentActionsFunction"):
        variables = _variables(template, functions[api])
        assert variables["PAYMENT_SECRETS_ID"] == {"Ref": "SecretsName"}
        assert variables["PAYMENT_JWT_AUDIENCE"] == {"Ref": "JwtAudience"}
        assert variables["PAYMENT_JWT_ISSUER"] == {
            "Fn::If": ["HasIssuer", {"Ref": "JwtIssuer"}, {"Ref": "AWS::NoValue"}]
        }
    # The processor's notifications: its signing secret from the secret, no merchant tokens.
    processor_events = _variables(template, functions["ProcessorEventsFunction"])
    assert processor_events["PAYMENT_SECRETS_ID"] == {"Ref": "SecretsName"}
    assert not {"PAYMENT_JWT_AUDIENCE", "PAYMENT_JWT_ISSUER"} & set(processor_events)
    local = {"Fn::If": ["UseLocalProcessor", "local", {"Ref": "AWS::NoValue"}]}
    for name in ("ProcessPaymentFunction", "PaymentActionsFunction", "ProcessorEventsFunction"):
        assert _variables(template, functions[name])["PAYMENT_PROCESSOR"] == local, name
    # The webhook settings: the queue URLs only where they are used, the delivery's parameters, the field key.
    queue, dead_letter = {"Ref": "WebhookQueue"}, {"Ref": "WebhookDeadLetterQueue"}
    using = {name: {v for v in _variables(template, f) if v.startswith(("PAYMENT_WEBHOOK_", "PAYMENT_KMS_"))}
             for name, f in functions.items()}  # fmt: skip
    assert {name: used for name, used in using.items() if used} == {
        "WebhookEventsFunction": {"PAYMENT_WEBHOOK_QUEUE_URL"},
        "WebhookDeliveryFunction": {"PAYMENT_WEBHOOK_QUEUE_URL", "PAYMENT_WEBHOOK_DEAD_LETTER_QUEUE_URL",
                                    "PAYMENT_WEBHOOK_MAX_ATTEMPTS", "PAYMENT_WEBHOOK_BACKOFF_BASE_S",
                                    "PAYMENT_WEBHOOK_TIMEOUT_S", "PAYMENT_KMS_KEY_ID"},
    }  # fmt: skip
    assert _variables(template, functions["WebhookEventsFunction"])["PAYMENT_WEBHOOK_QUEUE_URL"] == queue
    assert "PAYMENT_SECRETS_ID" not in _variables(template, functions["WebhookEventsFunction"])  # no key needed
    delivery = _variables(template, functions["WebhookDeliveryFunction"])
    assert delivery["PAYMENT_WEBHOOK_QUEUE_URL"] == queue
    assert delivery["PAYMENT_WEBHOOK_DEAD_LETTER_QUEUE_URL"] == dead_letter
    assert delivery["PAYMENT_WEBHOOK_MAX_ATTEMPTS"] == {"Ref": "WebhookMaxAttempts"}
    assert delivery["PAYMENT_WEBHOOK_BACKOFF_BASE_S"] == {"Ref": "WebhookBackoffBaseSeconds"}
    assert delivery["PAYMENT_WEBHOOK_TIMEOUT_S"] == {"Ref": "WebhookTimeoutSeconds"}
    assert delivery["PAYMENT_KMS_KEY_ID"] == {"Fn::GetAtt": ["FieldEncryptionKey", "Arn"]}  # an ARN: strict provider
    assert delivery["PAYMENT_SECRETS_ID"] == {"Ref": "SecretsName"}  # the field keys
    assert template["Parameters"]["JwtAudience"]["MinLength"] == 1  # the handlers fail closed without one
    reconcile = _variables(template, functions["ReconcileFunction"])
    assert reconcile["PAYMENT_RECON_REPORT_PREFIX"] == {"Ref": "ReportPrefix"} and "PAYMENT_SECRETS_ID" not in reconcile
    assert reconcile["PAYMENT_RECON_SETTLEMENT_PREFIX"] == {"Ref": "SettlementPrefix"}  # <prefix><merchant>/<file>
    assert reconcile["PAYMENT_RECON_DISTRIBUTED_BYTES"] == {"Ref": "ReconDistributedBytes"}
    assert reconcile["PAYMENT_RECON_STATE_MACHINE_ARN"] == {"Ref": "ReconcileStateMachine"}
    # A continuation it cannot invoke is parked where Lambda's destination puts failed invocations (Ref: the URL).
    assert reconcile["PAYMENT_RECON_FAILURE_QUEUE_URL"] == {"Ref": "ReconcileFailureQueue"}
    for step in STEPS:  # the state machine's steps write where a single run writes
        variables = _variables(template, functions[step])
        assert variables["PAYMENT_RECON_REPORT_PREFIX"] == {"Ref": "ReportPrefix"}, step
        assert "PAYMENT_SECRETS_ID" not in variables and "PAYMENT_RECON_STATE_MACHINE_ARN" not in variables, step
    plan = _variables(template, functions["ReconcilePlanFunction"])
    assert plan["PAYMENT_RECON_ROWS_PER_RANGE"] == {"Ref": "ReconRowsPerRange"}


def test_the_settlement_bucket_triggers_reconcile_under_its_prefix_with_a_failure_queue(template: dict) -> None:
    resources = template["Resources"]
    reconcile = resources["ReconcileFunction"]["Properties"]
    (event,) = reconcile["Events"].values()
    assert event["Type"] == "S3" and event["Properties"]["Bucket"] == {"Ref": "SettlementBucket"}
    assert event["Properties"]["Events"] == "s3:ObjectCreated:*"
    assert event["Properties"]["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": {"Ref": "SettlementPrefix"}}]
    on_failure = reconcile["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure == {"Type": "SQS", "Destination": {"Fn::GetAtt": ["ReconcileFailureQueue", "Arn"]}}
    # The handler parks unsent continuations on the same queue itself: its own grant, not only SAM's.
    (park,) = [s for s in reconcile["Policies"][0]["Statement"] if s.get("Action") == "sqs:SendMessage"]
    assert park["Resource"] == on_failure["Destination"]
    assert reconcile["Timeout"] == 900  # long files continue in new invocations (invoke_self), not in this one
    bucket = resources["SettlementBucket"]["Properties"]
    assert bucket["BucketName"] == {"Ref": "SettlementBucketName"}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    (tls,) = resources["SettlementBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert (tls["Effect"], tls["Action"], tls["Condition"]) == (
        "Deny",
        "s3:*",
        {"Bool": {"aws:SecureTransport": "false"}},
    )
    # A report written into the watched prefix would be reconciled as a settlement file.
    assert template["Parameters"]["SettlementPrefix"]["Default"] != template["Parameters"]["ReportPrefix"]["Default"]
    assert "ReportsOutsideTheSettlementPrefix" in template["Rules"]


def test_the_kms_keys_are_administered_by_the_account_and_only_the_delivery_decrypts_webhook_secrets(
    template: dict,
) -> None:
    keys = {name: r["Properties"] for name, r in template["Resources"].items() if r["Type"] == "AWS::KMS::Key"}
    assert {(k["KeySpec"], k["KeyUsage"]) for k in keys.values()} == {
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"),
        ("HMAC_256", "GENERATE_VERIFY_MAC"),
    }
    assert keys["FieldEncryptionKey"]["EnableKeyRotation"] is True
    for key in keys.values():
        (statement,) = key["KeyPolicy"]["Statement"]
        assert statement["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
    functions = _functions(template)
    assert "kms:" not in yaml.safe_dump([f["Policies"] for n, f in functions.items() if n != "WebhookDeliveryFunction"])
    kms = [s for s in functions["WebhookDeliveryFunction"]["Policies"][0]["Statement"] if "kms:" in yaml.safe_dump(s)]
    assert kms == [{"Sid": "DecryptSigningSecretsOnly", "Effect": "Allow", "Action": "kms:Decrypt",
                    "Resource": {"Fn::GetAtt": ["FieldEncryptionKey", "Arn"]},
                    "Condition": {"StringEquals": {"kms:EncryptionContext:purpose": "webhook-secret"}}}]  # fmt: skip


def test_the_http_api_has_an_optional_jwt_authorizer_throttling_and_access_logs(template: dict) -> None:
    resources = template["Resources"]
    authorizer = resources["JwtAuthorizer"]
    assert authorizer["Condition"] == "HasIssuer"
    assert authorizer["Properties"]["JwtConfiguration"] == {"Issuer": {"Ref": "JwtIssuer"},
                                                             "Audience": [{"Ref": "JwtAudience"}]}  # fmt: skip
    routes = {r["Properties"]["RouteKey"]: r["Properties"] for r in resources.values()
              if r["Type"] == "AWS::ApiGatewayV2::Route"}  # fmt: skip
    assert sorted(routes) == sorted(ROUTES)
    for key, route in routes.items():
        if key == "POST /processor/events":  # signed by the processor: never a merchant's token
            assert route["AuthorizationType"] == "NONE" and "AuthorizerId" not in route
            continue
        assert route["AuthorizationType"] == {"Fn::If": ["HasIssuer", "JWT", "NONE"]}, key
        assert route["AuthorizerId"] == {"Fn::If": ["HasIssuer", {"Ref": "JwtAuthorizer"}, {"Ref": "AWS::NoValue"}]}
    stage = resources["PaymentsApiStage"]["Properties"]
    assert stage["DefaultRouteSettings"] == {"ThrottlingRateLimit": {"Ref": "ApiRateLimit"},
                                             "ThrottlingBurstLimit": {"Ref": "ApiBurstLimit"}}  # fmt: skip
    assert stage["AccessLogSettings"]["DestinationArn"] == {"Fn::GetAtt": ["PaymentsApiAccessLogs", "Arn"]}
    json.loads(stage["AccessLogSettings"]["Format"])  # one JSON object per request
    assert resources["PaymentsApiAccessLogs"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    permissions = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::Permission"]
    for permission in permissions:  # this API's routes only
        parts = permission["SourceArn"]["Fn::Join"][1]
        assert parts[-2] == {"Ref": "PaymentsApi"} and parts[-1].startswith("/*/"), parts


ROUTES = {"POST /payments": "ProcessPaymentFunction", "GET /payments": "QueryPaymentsFunction",
          "GET /payments/{id}": "QueryPaymentsFunction", "POST /payments/{id}/capture": "PaymentActionsFunction",
          "POST /payments/{id}/refunds": "PaymentActionsFunction", "POST /payments/{id}/void": "PaymentActionsFunction",
          "POST /processor/events": "ProcessorEventsFunction"}  # fmt: skip


def test_each_route_reaches_its_function_and_each_function_is_invocable_on_its_own_routes_only(template: dict) -> None:
    """Route -> integration -> function as ROUTES says; the Lambda permissions' source ARNs (stage/method/path, a
    path parameter as *) let the API invoke a function for its own routes, and for no other route."""
    resources = template["Resources"]
    integrations = {name: r["Properties"]["IntegrationUri"]["Fn::GetAtt"][0] for name, r in resources.items()
                    if r["Type"] == "AWS::ApiGatewayV2::Integration"}  # fmt: skip
    routes = {r["Properties"]["RouteKey"]: r["Properties"] for r in resources.values()
              if r["Type"] == "AWS::ApiGatewayV2::Route"}  # fmt: skip
    target = {key: integrations[re.fullmatch(r"integrations/\$\{(\w+)\}", r["Target"]["Fn::Sub"])[1]]
              for key, r in routes.items()}  # fmt: skip
    assert target == ROUTES
    permissions = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::Permission"]
    assert {(p["Principal"], p["Action"]) for p in permissions} == {
        ("apigateway.amazonaws.com", "lambda:InvokeFunction")
    }
    patterns = [(p["FunctionName"]["Ref"], p["SourceArn"]["Fn::Join"][1][-1]) for p in permissions]

    def request(key: str) -> str:  # the end of the source ARN of a request on this route: /<stage>/<method><path>
        method, path = key.split(" ")
        return f"/$default/{method}" + re.sub(r"\{[^}]+\}", "pay_123", path)

    def invoked(source: str) -> set[str]:  # the functions such a request may invoke (IAM's * matches "/" too)
        return {function for function, pattern in patterns if fnmatch.fnmatchcase(source, pattern)}

    for key, function in ROUTES.items():
        assert invoked(request(key)) == {function}, key
    for function, pattern in patterns:  # each permission serves one of its own function's routes
        assert any(ROUTES[key] == function and fnmatch.fnmatchcase(request(key), pattern) for key in ROUTES), pattern
    for stray in ("POST /payments/{id}", "GET /processor/events", "PUT /payments", "POST /payments/{id}/captures"):
        assert invoked(request(stray)) == set(), stray  # no route, no function
    outputs = template["Outputs"]
    assert outputs["ProcessorEventsUrl"]["Value"]["Fn::Sub"].endswith("/processor/events")


def test_every_function_has_a_log_group_with_the_retention(template: dict) -> None:
    groups = {r["Properties"]["LogGroupName"]["Fn::Sub"]: r["Properties"] for r in template["Resources"].values()
              if r["Type"] == "AWS::Logs::LogGroup"}  # fmt: skip
    for name in _functions(template):
        assert groups[f"/aws/lambda/${{{name}}}"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name


# -- merchant webhooks: the FIFO delivery queue and its dead letters -------------------------------------------------


def test_the_webhook_queues_are_fifo_with_the_dead_letter_queue_as_a_backstop_after_the_workers_last_attempt(
    template: dict,
) -> None:
    resources, parameters = template["Resources"], template["Parameters"]
    queue, dead_letter = resources["WebhookQueue"]["Properties"], resources["WebhookDeadLetterQueue"]["Properties"]
    for properties in (queue, dead_letter):
        assert properties["FifoQueue"] is True and properties["ContentBasedDeduplication"] is False  # explicit ids
        assert properties["SqsManagedSseEnabled"] is True
        assert "QueueName" not in properties  # CloudFormation names it (with the .fifo suffix)
    assert dead_letter["MessageRetentionPeriod"] == 1_209_600  # 14 days
    assert queue["MessageRetentionPeriod"] >= 4 * 86_400
    # High throughput: a deduplication id never leaves its message group (<endpoint>:<payment>).
    assert (queue["DeduplicationScope"], queue["FifoThroughputLimit"]) == ("messageGroup", "perMessageGroupId")
    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["WebhookDeadLetterQueue", "Arn"]}
    index, counts = redrive["maxReceiveCount"]["Fn::Select"]
    assert index == {"Ref": "WebhookMaxAttempts"}
    attempts = parameters["WebhookMaxAttempts"]
    assert (attempts["Type"], attempts["Default"]) == ("Number", 5)
    assert attempts["MinValue"] >= 1 and len(counts) == attempts["MaxValue"] + 1  # every allowed value selects one
    # The worker gives up itself at attempt n, counted in its log; SQS counts receives, and a message is received
    # unattempted behind its group's failing messages in a batch (up to batch size - 1 of them, n attempts each):
    # the redrive must wait for more than all of those, and 5 receives Lambda may return unprocessed (throttling).
    batch = _functions(template)["WebhookDeliveryFunction"]["Events"]["Deliveries"]["Properties"]["BatchSize"]
    for n in range(attempts["MinValue"], attempts["MaxValue"] + 1):
        receives = n + (batch - 1) * n  # its own attempts and its blocked receives, every attempt failing
        assert counts[n] == receives + 5 <= 1000, n  # SQS's maximum maxReceiveCount is 1000
    # The delivery function on the queue: batches of 10, partial batch responses; the queue's visibility timeout at
    # least 6 x the function's timeout (AWS's advice), which fits a batch of the slowest allowed attempts.
    functions = _functions(template)
    delivery = functions["WebhookDeliveryFunction"]
    (source,) = delivery["Events"].values()
    assert source == {"Type": "SQS", "Properties": {"Queue": {"Fn::GetAtt": ["WebhookQueue", "Arn"]}, "BatchSize": 10,
                                                    "FunctionResponseTypes": ["ReportBatchItemFailures"]}}  # fmt: skip
    assert queue["VisibilityTimeout"] >= 6 * delivery["Timeout"]
    timeout = parameters["WebhookTimeoutSeconds"]
    assert delivery["Timeout"] >= source["Properties"]["BatchSize"] * timeout["MaxValue"] + 10
    # The parameters' defaults are the settings', and their ranges are ones the settings accept.
    fields = {"WebhookMaxAttempts": "webhook_max_attempts", "WebhookBackoffBaseSeconds": "webhook_backoff_base_s",
              "WebhookTimeoutSeconds": "webhook_timeout_s"}  # fmt: skip
    for name, field in fields.items():
        assert parameters[name]["Type"] == "Number" and parameters[name]["Default"] == getattr(Settings(), field)
        for value in (parameters[name]["MinValue"], parameters[name]["MaxValue"]):
            Settings(**{field: value})  # accepted (raises ConfigurationError otherwise)
    # Nothing but the delivery function consumes the queue; only the producer and the worker know its URL.
    consumers = {n for n, f in functions.items() for e in f.get("Events", {}).values() if e["Type"] == "SQS"}
    assert consumers == {"WebhookDeliveryFunction"}
    outputs = template["Outputs"]
    assert outputs["WebhookQueueUrl"]["Value"] == {"Ref": "WebhookQueue"}
    assert outputs["WebhookDeadLetterQueueUrl"]["Value"] == {"Ref": "WebhookDeadLetterQueue"}


# -- the distributed reconciliation (ReconcileStateMachine) ------------------------------------------------------------

STEPS = ("ReconcilePlanFunction", "ReconcileBatchFunction", "ReconcileMergeFunction")
PARAMETER_DEFAULTS = {"ReconDistributedBytes": 67108864, "ReconRowsPerRange": 10000, "ReconRangesPerBatch": 1,
                      "ReconMaxConcurrency": 40, "ReconToleratedFailurePercentage": 0}  # fmt: skip


def _definition(template: dict, parameters: dict[str, Any] | None = None) -> dict:
    """The state machine's definition as CloudFormation's Fn::Sub makes it: parameters (their defaults unless
    given), pseudo parameters, and "<Name.Arn>" for a resource's ARN."""
    properties = template["Resources"]["ReconcileStateMachine"]["Properties"]
    values = {name: p.get("Default", f"<{name}>") for name, p in template["Parameters"].items()} | (parameters or {})
    values |= {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}

    def substitute(match: re.Match) -> str:
        name = match[1]
        if name.endswith(".Arn"):
            assert template["Resources"][name.removesuffix(".Arn")]["Type"] == "AWS::Serverless::Function", name
            return f"<{name}>"
        return str(values[name])

    return json.loads(re.sub(r"\$\{([^}!]+)\}", substitute, properties["DefinitionString"]["Fn::Sub"]))


def test_the_distributed_steps_are_functions_sized_for_their_work(template: dict) -> None:
    resources = template["Resources"]
    functions = _functions(template)
    sizes = {name: (functions[name]["Timeout"], functions[name]["MemorySize"]) for name in STEPS}
    # The plan keeps one digest per distinct payment id of the file (~1 GB at 10 million).
    assert sizes == {"ReconcilePlanFunction": (900, 3008), "ReconcileBatchFunction": (900, 1024),
                     "ReconcileMergeFunction": (900, 1024)}  # fmt: skip
    for name in STEPS:
        assert functions[name]["FunctionName"]["Fn::Sub"].startswith("${AWS::StackName}-reconcile-"), name
        assert "Events" not in functions[name], name  # invoked by the state machine only
        (logs,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Logs::LogGroup"
                   and r["Properties"]["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{name}}}"}]  # fmt: skip
        assert logs["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    parameters = template["Parameters"]
    assert {name: parameters[name]["Default"] for name in PARAMETER_DEFAULTS} == PARAMETER_DEFAULTS
    assert all(parameters[name]["Type"] == "Number" for name in PARAMETER_DEFAULTS)
    assert (parameters["ReconToleratedFailurePercentage"]["MinValue"],
            parameters["ReconToleratedFailurePercentage"]["MaxValue"]) == (0, 100)  # fmt: skip
    outputs = template["Outputs"]
    assert outputs["ReconcileStateMachineArn"]["Value"] == {"Ref": "ReconcileStateMachine"}


def test_the_state_machine_is_a_distributed_map_over_the_plans_ranges_between_plan_and_merge(template: dict) -> None:
    machine = template["Resources"]["ReconcileStateMachine"]["Properties"]
    assert machine["StateMachineType"] == "STANDARD"
    assert machine["StateMachineName"] == {"Fn::Sub": "${AWS::StackName}-reconcile"}
    assert machine["RoleArn"] == {"Fn::GetAtt": ["ReconcileStateMachineRole", "Arn"]}
    definition = _definition(template)
    states = definition["States"]
    assert definition["StartAt"] == "Plan" and list(states) == ["Plan", "Ranges", "Merge"]
    plan, ranges, merge = states["Plan"], states["Ranges"], states["Merge"]
    invoke = "arn:aws:states:::lambda:invoke"
    assert (plan["Type"], plan["Resource"], plan["OutputPath"], plan["Next"]) == ("Task", invoke, "$.Payload", "Ranges")
    assert plan["Parameters"] == {"FunctionName": "<ReconcilePlanFunction.Arn>", "Payload.$": "$"}
    # The Map: distributed, over the JSON array of ranges the plan wrote (not the CSV: see template.yaml).
    assert ranges["Type"] == "Map" and ranges["Next"] == "Merge"
    processor = ranges["ItemProcessor"]
    assert processor["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert ranges["ItemReader"] == {"Resource": "arn:aws:states:::s3:getObject", "ReaderConfig": {"InputType": "JSON"},
                                    "Parameters": {"Bucket.$": "$.bucket", "Key.$": "$.ranges_key"}}  # fmt: skip
    assert ranges["ItemBatcher"] == {
        "MaxItemsPerBatch": 1,
        "BatchInput": {"bucket.$": "$.bucket", "key.$": "$.key", "etag.$": "$.etag", "merchant.$": "$.merchant",
                       "deferred_key.$": "$.deferred_key"},
    }  # fmt: skip
    assert (ranges["MaxConcurrency"], ranges["ToleratedFailurePercentage"]) == (40, 0)
    assert ranges["ResultWriter"] == {
        "Resource": "arn:aws:states:::s3:putObject",
        "Parameters": {"Bucket": "<SettlementBucketName>", "Prefix": "reconciliation-reports/map-results"},
    }  # the merge reads its manifest.json; the default format (no WriterConfig) is the one it parses
    assert ranges["ResultPath"] == "$.map_run"
    # The numbers are the parameters', as numbers.
    given = _definition(template, {"ReconRangesPerBatch": 3, "ReconMaxConcurrency": 250,
                                   "ReconToleratedFailurePercentage": 5})["States"]["Ranges"]  # fmt: skip
    assert (given["ItemBatcher"]["MaxItemsPerBatch"], given["MaxConcurrency"], given["ToleratedFailurePercentage"]) == (
        3, 250, 5)  # fmt: skip
    # Each batch: the batch function, retried with backoff on Lambda's transient errors and on its own failure
    # (a re-run range counts what it counted before).
    (batch,) = processor["States"].values()
    assert processor["StartAt"] == "ReconcileBatch" and batch["End"] is True
    assert (batch["Type"], batch["Resource"], batch["OutputPath"]) == ("Task", invoke, "$.Payload")
    assert batch["Parameters"] == {"FunctionName": "<ReconcileBatchFunction.Arn>", "Payload.$": "$"}
    (retry,) = batch["Retry"]
    # Both the batch and the merge are safe to re-run, also after one that timed out (Sandbox.Timedout).
    rerun = {"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
             "Lambda.TooManyRequestsException", "Sandbox.Timedout", "States.TaskFailed"}  # fmt: skip
    assert set(retry["ErrorEquals"]) == rerun and "Sandbox.Timedout" in retry["Comment"]
    assert retry["MaxAttempts"] >= 3 and retry["BackoffRate"] > 1 and retry["JitterStrategy"] == "FULL"
    # The merge: the plan's fields and where the Map's results are.
    assert (merge["Type"], merge["Resource"], merge["OutputPath"], merge["End"]) == ("Task", invoke, "$.Payload", True)
    payload = merge["Parameters"]["Payload"]
    assert merge["Parameters"]["FunctionName"] == "<ReconcileMergeFunction.Arn>"
    assert payload["results.$"] == f"{ranges['ResultPath']}.ResultWriterDetails"
    assert {k: v for k, v in payload.items() if k != "results.$"} == {
        f"{field}.$": f"$.{field}"
        for field in ("bucket", "key", "etag", "merchant", "ranges", "rows", "ranges_key", "deferred_key")
    }
    for step in (plan, merge):
        assert step["Retry"] and all("Lambda.TooManyRequestsException" in r["ErrorEquals"] for r in step["Retry"])
    # A merge that died holding the run's lease makes the attempts inside the lease fail ("another invocation holds
    # the run"): the retries (no jitter, so the delays are as written) reach past it, with one attempt to spare.
    (retry,) = merge["Retry"]
    assert set(retry["ErrorEquals"]) == rerun and "Sandbox.Timedout" in retry["Comment"]
    assert (retry["IntervalSeconds"], retry["BackoffRate"], retry["MaxAttempts"], retry["JitterStrategy"]) == (
        30, 2, 4, "NONE")  # fmt: skip
    delays = [retry["IntervalSeconds"] * retry["BackoffRate"] ** n for n in range(retry["MaxAttempts"])]
    lease = inspect.signature(Reconciler).parameters["lease"].default.total_seconds()
    assert lease == 120 and sum(delays[:-1]) > lease and "MaxDelaySeconds" not in retry


def _references(node: Any, resources: dict) -> set[str]:
    """The resources a template node refers to (Ref, Fn::GetAtt, Fn::Sub)."""
    if isinstance(node, list):
        return set().union(*(_references(v, resources) for v in node))
    if not isinstance(node, dict):
        return set()
    found = set()
    for key, value in node.items():
        if key == "Ref" and value in resources:
            found.add(value)
        elif key == "Fn::GetAtt":
            found.add(value[0])
        elif key == "Fn::Sub" and isinstance(value, str):
            found |= {m.partition(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", value)} & set(resources)
        else:
            found |= _references(value, resources)
    return found


def test_the_state_machine_and_the_reconcile_function_do_not_depend_on_each_other_in_a_circle(template: dict) -> None:
    """The reconcile function refers to the state machine; the machine to its role and the three steps; the role
    to the three steps, and to the machine's own ARN by its name."""
    resources = template["Resources"]
    assert "ReconcileStateMachine" in _references(resources["ReconcileFunction"], resources)
    assert _references(resources["ReconcileStateMachine"], resources) == {"ReconcileStateMachineRole", *STEPS}
    assert _references(resources["ReconcileStateMachineRole"], resources) == set(STEPS)
    for step in STEPS:
        assert not {"ReconcileFunction", "ReconcileStateMachine"} & _references(resources[step], resources), step
    role = json.dumps(resources["ReconcileStateMachineRole"])
    assert ':stateMachine:${AWS::StackName}-reconcile"' in role  # = StateMachineName


@pytest.mark.slow  # a second or two: make test runs it, make test-fast does not
def test_cfn_lint_validates_the_state_machine_definition() -> None:
    """cfn-lint's Amazon States Language check (E3601: field names, state types, required fields, StartAt targets)
    skips a DefinitionString made by Fn::Sub, and every DefinitionString in a template with the SAM transform:
    lint the definition as CloudFormation resolves it, alone, in a template without the transform (and check that
    the rule runs at all)."""
    from cfnlint.api import lint_all

    template = yaml.safe_load(TEMPLATE.read_text())

    def lint(definition: dict) -> list[str]:
        alone = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"Machine": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {"RoleArn": "arn:aws:iam::123456789012:role/machine",
                           "DefinitionString": json.dumps(definition)}}}}  # fmt: skip
        return [str(m) for m in lint_all(json.dumps(alone)) if m.rule.id[0] in "EW"]

    definition = json.loads(json.dumps(_definition(template)).replace("<", "").replace(">", ""))
    assert lint(definition) == []
    # What it catches (not types: "40" for 40 passes; the test above checks the numbers): a misspelt field.
    definition["States"]["Ranges"]["MaxConcurency"] = definition["States"]["Ranges"].pop("MaxConcurrency")
    assert any("E3601" in m and "MaxConcurency" in m for m in lint(definition))


@pytest.mark.slow  # seconds: make test runs it, make test-fast does not
def test_cfn_lint_accepts_the_template() -> None:
    from cfnlint.api import lint_all

    matches = lint_all(TEMPLATE.read_text())
    assert [str(m) for m in matches if m.rule.id[0] in "EW"] == []  # errors and warnings; not informational
