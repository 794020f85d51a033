"""`payment-examples create-tables` on a local endpoint: the tables, and the field-encryption KMS key (created once,
found again by its alias)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from payment_examples.cli import main
from payment_examples.core.config import Settings, get_settings, use_settings
from payment_examples.engine.local import local_aws

pytestmark = pytest.mark.slow  # engine processes, threads, subprocesses: make test runs it, make test-fast does not


def test_create_tables_creates_the_tables_and_the_kms_key_once(capsys: pytest.CaptureFixture[str]) -> None:
    with local_aws(Settings(table_prefix="cli-")):
        engine = get_settings()
        assert engine.kms_key_id and engine.kms_key_id.startswith("arn:aws:kms:")  # made by the embedded engine
        assert main(["create-tables"]) == 0
        out = capsys.readouterr().out
        assert "cli-payment-methods" in out and f"field encryption: KMS key {engine.kms_key_id}" in out
        with use_settings(replace(engine, kms_key_id=None)):  # an endpoint without a configured key
            assert main(["create-tables"]) == 0
            first = capsys.readouterr().out
            assert main(["create-tables"]) == 0
            second = capsys.readouterr().out
    exported = [line for line in first.splitlines() if line.startswith("field encryption: export")]
    assert exported == [f"field encryption: export PAYMENT_KMS_KEY_ID={engine.kms_key_id}"]  # the alias's key
    assert exported[0] in second
