"""template.yaml deploys what the code expects: the same tables and indexes as models.py, handlers that exist,
and a template that cfn-lint (with the SAM transform) accepts."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from payment_examples.config import Settings
from payment_examples.models import bind_models

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


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


def test_every_model_has_a_table_with_the_same_keys_indexes_and_ttl(template: dict) -> None:
    models = bind_models(Settings(table_prefix=""))
    tables = _tables(template)
    assert sorted(tables) == sorted(model.Meta.table_name for model in models.all())
    for model in models.all():
        table = tables[model.Meta.table_name]
        schema = model._get_schema()
        assert table["BillingMode"] == "PAY_PER_REQUEST"
        assert _keys(table["KeySchema"]) == _keys(schema["key_schema"])
        assert {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]} == {
            (a["AttributeName"], a["AttributeType"]) for a in schema["attribute_definitions"]
        }
        expected = {
            index["index_name"]: (_keys(index["key_schema"]), index["projection"]["ProjectionType"])
            for index in schema["global_secondary_indexes"]
        }
        actual = {
            index["IndexName"]: (_keys(index["KeySchema"]), index["Projection"]["ProjectionType"])
            for index in table.get("GlobalSecondaryIndexes", [])
        }
        assert actual == expected, model.Meta.table_name
        ttl = model._ttl_attribute()
        if ttl is None:
            assert "TimeToLiveSpecification" not in table
        else:
            assert table["TimeToLiveSpecification"] == {"AttributeName": ttl.attr_name, "Enabled": True}


def test_every_function_handler_exists(template: dict) -> None:
    functions = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    assert len(functions) == 2
    for function in functions:
        module, _, name = function["Properties"]["Handler"].rpartition(".")
        assert callable(getattr(importlib.import_module(module), name))


def test_functions_read_the_settings_the_code_reads(template: dict) -> None:
    variables = set(template["Globals"]["Function"]["Environment"]["Variables"])
    assert {"PAYMENT_USE_AWS", "PAYMENT_TABLE_PREFIX", "PAYMENT_JWT_SECRET", "PAYMENT_CURSOR_SECRET"} <= variables
    config = (Path(__file__).resolve().parents[2] / "payment_examples" / "config.py").read_text()
    assert all(f'"{name}"' in config for name in variables if name.startswith("PAYMENT_"))


def test_cfn_lint_accepts_the_template() -> None:
    from cfnlint.api import lint_all

    matches = lint_all(TEMPLATE.read_text())
    assert [str(m) for m in matches if m.rule.id[0] in "EW"] == []  # errors and warnings; not informational
