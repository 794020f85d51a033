"""template.yaml deploys what the code expects: the same tables and indexes as models.py (the processor's ledger only
where the simulated processor is configured), protected and encrypted; handlers that exist, with the settings they
read and no secret in their configuration; the settlement bucket wired to the reconcile function; the optional JWT
authorizer, throttling and access logs; and a template that cfn-lint (with the SAM transform) accepts.
Each function's policy is checked against the calls its handler makes in
tests/unit/handlers/test_template_policies.py."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import yaml

from payment_examples.core.config import Settings
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
    function has an event source on it; no other table's stream is consumed."""
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
    for event in events:
        assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert event["Properties"]["BisectBatchOnFunctionError"] is True
        assert "OnFailure" in event["Properties"]["DestinationConfig"]


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
        "payment_examples.handlers.process.handler",
        "payment_examples.handlers.query.handler",
        "payment_examples.handlers.reconcile.handler",
        "payment_examples.handlers.stream.handler",
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
    for api in ("ProcessPaymentFunction", "QueryPaymentsFunction"):
        variables = _variables(template, functions[api])
        assert variables["PAYMENT_SECRETS_ID"] == {"Ref": "SecretsName"}
        assert variables["PAYMENT_JWT_AUDIENCE"] == {"Ref": "JwtAudience"}
    assert template["Parameters"]["JwtAudience"]["MinLength"] == 1  # the handlers fail closed without one
    reconcile = _variables(template, functions["ReconcileFunction"])
    assert reconcile["PAYMENT_RECON_REPORT_PREFIX"] == {"Ref": "ReportPrefix"} and "PAYMENT_SECRETS_ID" not in reconcile


def test_the_settlement_bucket_triggers_reconcile_under_its_prefix_with_a_failure_queue(template: dict) -> None:
    resources = template["Resources"]
    reconcile = resources["ReconcileFunction"]["Properties"]
    (event,) = reconcile["Events"].values()
    assert event["Type"] == "S3" and event["Properties"]["Bucket"] == {"Ref": "SettlementBucket"}
    assert event["Properties"]["Events"] == "s3:ObjectCreated:*"
    assert event["Properties"]["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": {"Ref": "SettlementPrefix"}}]
    on_failure = reconcile["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure == {"Type": "SQS", "Destination": {"Fn::GetAtt": ["ReconcileFailureQueue", "Arn"]}}
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


def test_the_kms_keys_are_administered_by_the_account_and_grant_the_functions_nothing(template: dict) -> None:
    keys = {name: r["Properties"] for name, r in template["Resources"].items() if r["Type"] == "AWS::KMS::Key"}
    assert {(k["KeySpec"], k["KeyUsage"]) for k in keys.values()} == {
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"),
        ("HMAC_256", "GENERATE_VERIFY_MAC"),
    }
    assert keys["FieldEncryptionKey"]["EnableKeyRotation"] is True
    for key in keys.values():
        (statement,) = key["KeyPolicy"]["Statement"]
        assert statement["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
    assert "kms:" not in yaml.safe_dump([f["Policies"] for f in _functions(template).values()])


def test_the_http_api_has_an_optional_jwt_authorizer_throttling_and_access_logs(template: dict) -> None:
    resources = template["Resources"]
    authorizer = resources["JwtAuthorizer"]
    assert authorizer["Condition"] == "HasIssuer"
    assert authorizer["Properties"]["JwtConfiguration"] == {"Issuer": {"Ref": "JwtIssuer"},
                                                             "Audience": [{"Ref": "JwtAudience"}]}  # fmt: skip
    routes = {r["Properties"]["RouteKey"]: r["Properties"] for r in resources.values()
              if r["Type"] == "AWS::ApiGatewayV2::Route"}  # fmt: skip
    assert sorted(routes) == ["GET /payments", "GET /payments/{id}", "POST /payments"]
    for route in routes.values():
        assert route["AuthorizationType"] == {"Fn::If": ["HasIssuer", "JWT", "NONE"]}
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


@pytest.mark.slow  # seconds: make test runs it, make test-fast does not
def test_cfn_lint_accepts_the_template() -> None:
    from cfnlint.api import lint_all

    matches = lint_all(TEMPLATE.read_text())
    assert [str(m) for m in matches if m.rule.id[0] in "EW"] == []  # errors and warnings; not informational
