"""`payment-examples reconcile`: the local distributed path (plan, ranges on threads, merge) on a fresh embedded
engine agrees with the file's answer key; a named format that is not the file's is refused before any change."""

from __future__ import annotations

import pytest

from payment_examples.cli import main

pytestmark = pytest.mark.slow  # an engine process: make test runs it, make test-fast does not


def test_a_generated_file_reconciled_distributed_agrees_with_its_answer_key(tmp_path, capsys) -> None:
    path = tmp_path / "s.csv"
    assert main(["gen-settlement", "--rows", "300", "--seed", "3", "--output", str(path)]) == 0
    code = main(["reconcile", str(path), "--create-payments", "--distributed", "3", "--rows-per-range", "40",
                 "--quiet"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "every outcome count agrees" in out and "layout: canonical" in out


def test_a_named_format_that_is_not_the_files_is_refused(tmp_path, capsys) -> None:
    path = tmp_path / "s.csv"
    assert main(["gen-settlement", "--rows", "5", "--output", str(path)]) == 0
    assert main(["reconcile", str(path), "--create-payments", "--format", "stripe", "--quiet"]) != 0
    assert "not a stripe file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reconcile", str(path), "--format", "square"])
