"""Conditions are sent as one flat AND: the same meaning as PynamoDB's nested pairs, without the nesting."""

from __future__ import annotations

from pynamodb.expressions.condition import And

from payment_examples.payments.service import AllOf, all_of
from payment_examples.tables.models import Payment


def _render(condition: object) -> tuple[str, dict[str, str], dict[str, object]]:
    names: dict[str, str] = {}
    values: dict[str, object] = {}
    return condition.serialize(names, values), names, values  # type: ignore[attr-defined]


def test_all_of_flattens_nested_ands_and_skips_none() -> None:
    a, b = Payment.merchant_id == "m", Payment.transfer.does_not_exist() | (Payment.transfer.state == "active")
    c, d = Payment.processor_call.does_not_exist(), Payment.version == 3
    nested = (a & b) & c
    flat = all_of(nested, None, d)

    assert isinstance(flat, AllOf) and len(flat.values) == 4
    text, names, values = _render(flat)
    assert text == "(#0 = :0 AND (attribute_not_exists (#1) OR #1.#2 = :1) AND attribute_not_exists (#3) AND #4 = :2)"
    assert names == {"merchant_id": "#0", "transfer": "#1", "state": "#2", "processor_call": "#3", "version": "#4"}
    # the nested form says the same with one more pair of parentheses per clause
    assert _render(nested & d)[0].count("(") > text.count("(")
    assert all_of(None, a) is a and all_of() is None and all_of(None) is None
    assert isinstance(a & b, And)
