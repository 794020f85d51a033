"""Customers and the card vault follow the one-write rule (moto in-process, its streams have real records): each
change is ONE conditional write carrying its record, the audit entries are projected from the tables' streams
(projection.py), a change made elsewhere is caught as unattributed, and decryptions stay entries appended in the
request, on the customer's access chain."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from payment_examples.audit.chain import UNATTRIBUTED
from payment_examples.audit.projection import Projector
from payment_examples.encryption.card_vault import PAYMENT_METHODS, PaymentMethodNotFoundError
from payment_examples.encryption.card_vault import audit_entity as card_entity
from payment_examples.encryption.customers import CUSTOMERS, access_entity, audit_entity
from payment_examples.handlers.stream import make_handler
from payment_examples.harness.consumer import drain
from payment_examples.tables.models import HISTORY_LIMIT, get_models
from tests.conftest import stream_records

VISA = "4111 1111 1111 1111"


@contextmanager
def dynamodb_calls(customers) -> Iterator[list[str]]:
    """The DynamoDB operations the service's shared client sends inside the block."""
    shared = customers.models.customer._get_connection().connection.client
    seen: list[str] = []

    def record(model, **_):
        seen.append(model.name)

    shared.meta.events.register("before-call.dynamodb", record)
    try:
        yield seen
    finally:
        shared.meta.events.unregister("before-call.dynamodb", record)


def chain(customers, entity: str) -> list[tuple[str, str, str | None]]:
    return [(e.action, e.actor, e.event_id) for e in customers.audit.history(entity)]


def test_a_customer_change_is_one_write_and_its_entry_comes_from_the_stream(customers) -> None:
    with dynamodb_calls(customers) as calls:
        created = customers.create_customer("merchant-a", "alice@example.com", actor="signup")
    assert calls == ["PutItem"]  # the customer and its change record, nothing else
    with dynamodb_calls(customers) as calls:
        customers.update_email("merchant-a", created.id, "alice@example.org", actor="support")
    assert calls == ["GetItem", "UpdateItem"]  # the read that plans it, one conditional update
    assert chain(customers, audit_entity(created.id)) == []  # nothing projected yet
    stats = drain()
    assert stats.failed == 0
    assert chain(customers, audit_entity(created.id)) == [("create", "signup", "v1"),
                                                          ("update-email", "support", "v2")]  # fmt: skip
    update = customers.audit.entry(audit_entity(created.id), 2)
    assert update is not None and update.changes == ({"field": "email", "changed": True},)  # shown only as changed
    drain()  # caught up: nothing twice
    assert len(chain(customers, audit_entity(created.id))) == 2
    assert customers.audit.verify(audit_entity(created.id)).ok


def test_a_decryption_is_appended_in_the_request_before_the_clear_value(customers) -> None:
    created = customers.create_customer("merchant-a", "alice@example.com", actor="signup")
    with dynamodb_calls(customers) as calls:
        customers.get_customer("merchant-a", created.id, actor="agent-7", purpose="support")
    assert calls == ["GetItem", "Query", "PutItem"]  # the item, the access chain's head, the entry
    assert chain(customers, access_entity(created.id)) == [("decrypt", "agent-7", None)]
    drain()  # reads leave no stream record: the change chain holds only the create
    assert chain(customers, audit_entity(created.id)) == [("create", "signup", "v1")]


def test_adding_and_removing_a_card_are_one_write_each_and_removal_deletes_the_number(
    customers, field_settings
) -> None:
    alice = customers.create_customer("merchant-a", "alice@example.com", actor="signup")
    bob = customers.create_customer("merchant-a", "bob@example.com", actor="signup")
    with dynamodb_calls(customers) as calls:
        method = customers.add_payment_method("merchant-a", alice.id, VISA, 12, 2030, actor="checkout").method
    assert calls.count("PutItem") == 1 and "UpdateItem" not in calls  # the reads find holders; one write
    with dynamodb_calls(customers) as calls:
        customers.remove_payment_method("merchant-a", alice.id, method.id, actor="alice")
    assert calls == ["GetItem", "UpdateItem"]
    table = get_models(field_settings).payment_method.Meta.table_name
    stored = boto3.client("dynamodb", region_name="us-east-1").get_item(TableName=table, Key={"id": {"S": method.id}})[
        "Item"
    ]
    assert "pan" not in stored and "card_index" not in stored and "removed_at" in stored  # the number is gone
    assert stored["last4"] == {"S": "1111"}  # the tombstone keeps what may be shown
    assert customers.payment_methods("merchant-a", alice.id) == []
    with pytest.raises(PaymentMethodNotFoundError):
        customers.reveal_card_number("merchant-a", method.id, actor="x", purpose="processor")
    with pytest.raises(PaymentMethodNotFoundError):  # removed twice: the second finds nothing to remove
        customers.remove_payment_method("merchant-a", alice.id, method.id, actor="alice")
    again = customers.add_payment_method("merchant-a", bob.id, VISA, 12, 2030, actor="checkout")
    assert again.same_card_customers == []  # the removed card left the by-card index
    drain()
    assert chain(customers, card_entity(method.id)) == [("add-card", "checkout", "v1"),
                                                        ("remove-card", "alice", "v2")]  # fmt: skip
    removal = customers.audit.entry(card_entity(method.id), 2)
    assert removal is not None and {"field": "pan", "changed": True} in removal.changes
    assert customers.audit.verify(card_entity(method.id)).ok


def test_a_change_made_outside_the_package_is_caught_as_unattributed(customers, field_settings) -> None:
    alice = customers.create_customer("merchant-a", "alice@example.com", actor="signup")
    method = customers.add_payment_method("merchant-a", alice.id, VISA, 12, 2030, actor="checkout").method
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    models = get_models(field_settings)
    dynamodb.update_item(
        TableName=models.customer.Meta.table_name,
        Key={"id": {"S": alice.id}},
        UpdateExpression="SET merchant_id = :m",
        ExpressionAttributeValues={":m": {"S": "other"}},
    )
    dynamodb.delete_item(TableName=models.payment_method.Meta.table_name, Key={"id": {"S": method.id}})
    stats = drain()
    assert stats.failed == 0
    edit = customers.audit.entry(audit_entity(alice.id), 2)
    assert edit is not None and (edit.action, edit.actor) == (f"{UNATTRIBUTED}-change", UNATTRIBUTED)
    assert edit.changes == ({"field": "merchant_id", "from": "merchant-a", "to": "other"},)
    assert customers.audit.verify(audit_entity(alice.id)).unattributed == (2,)
    delete = customers.audit.entry(card_entity(method.id), 2)
    assert delete is not None and delete.action == f"{UNATTRIBUTED}-delete"
    assert customers.audit.verify(card_entity(method.id)).unattributed == (2,)


def test_records_missed_by_a_stopped_consumer_are_written_from_the_kept_history(customers, field_settings) -> None:
    """Only the last record reaches the consumer (the earlier ones outlived the stream): the versions before it
    come from the customer's kept changes, in order; a change older than the kept history is a gap entry."""
    created = customers.create_customer("merchant-a", "alice@example.com", actor="signup")
    for i in range(HISTORY_LIMIT):
        customers.update_email("merchant-a", created.id, f"alice{i}@example.com", actor=f"agent-{i}")
    models = get_models(field_settings)
    last = stream_records(field_settings, models.customer.Meta.table_name)[-1]
    projector = Projector(CUSTOMERS, models=models, settings=field_settings)
    assert make_handler(projector)({"Records": [last]}, None) == {"batchItemFailures": []}
    entries = list(customers.audit.history(audit_entity(created.id)))
    assert [e.event_id for e in entries] == [f"v{n}" for n in range(1, HISTORY_LIMIT + 2)]
    assert entries[0].action == "projection-gap"  # v1 is no longer kept: the chain says so
    assert [e.actor for e in entries[1:]] == [f"agent-{i}" for i in range(HISTORY_LIMIT)]
    assert entries[1].detail["rebuilt"] == "from the customer's kept history"
    assert list(projector.rebuild()) and len(list(customers.audit.history(audit_entity(created.id)))) == 9
    assert customers.audit.verify(audit_entity(created.id)).ok


def test_the_function_routes_each_record_to_its_tables_projector(customers, field_settings) -> None:
    created = customers.create_customer("merchant-a", "alice@example.com", actor="signup")
    models = get_models(field_settings)
    [record] = stream_records(field_settings, models.customer.Meta.table_name)
    cards_only = make_handler(Projector(PAYMENT_METHODS, models=models, settings=field_settings))
    with pytest.raises(BatchProcessingError, match="not of 'cust-payment-methods'"):  # not its table's record
        cards_only({"Records": [record]}, None)
    stray = {**record, "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/elsewhere/stream/x"}
    with pytest.raises(BatchProcessingError, match="no projector for the stream of table 'elsewhere'"):
        make_handler()({"Records": [stray]}, None)
    assert make_handler()({"Records": [record]}, None) == {"batchItemFailures": []}
    assert chain(customers, audit_entity(created.id)) == [("create", "signup", "v1")]
