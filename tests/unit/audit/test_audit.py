"""The hash-chained audit trail: appends, diffs, verification of every kind of tampering, checkpoints."""

from __future__ import annotations

import base64
import threading
from decimal import Decimal

import boto3
import pytest
from pynamodb.exceptions import PutError

from payment_examples.audit.chain import (
    GENESIS,
    AuditAppendError,
    AuditTracker,
    HmacSigner,
    KmsMacSigner,
    chain_hash,
    field_diff,
)
from payment_examples.core.clock import SeededIds
from payment_examples.core.errors import ConfigurationError, ValidationError
from payment_examples.tables.models import bind_models

ENTITY = "payment#p-1"
KEY = b"k" * 32


@pytest.fixture
def tracker(models, clock) -> AuditTracker:
    return AuditTracker(models=models, clock=clock, ids=SeededIds(3), signer=HmacSigner(KEY))


def _chain(tracker: AuditTracker, n: int = 6, entity: str = ENTITY) -> None:
    for i in range(1, n + 1):
        tracker.track(entity, "step", f"actor-{i}", before={"version": i - 1}, after={"version": i}, event_id=f"e{i}")


def _table(models) -> tuple:
    return boto3.client("dynamodb", region_name="us-east-1"), models.audit.Meta.table_name


def _items(models, entity: str = ENTITY) -> dict[int, dict]:
    dynamodb, table = _table(models)
    found = dynamodb.query(
        TableName=table, KeyConditionExpression="entity = :e", ExpressionAttributeValues={":e": {"S": entity}}
    )["Items"]
    return {int(item["seq"]["N"]): item for item in found}


def _put(models, item: dict, seq: int | str | None = None) -> None:
    dynamodb, table = _table(models)
    item = dict(item)
    if seq is not None:
        item["seq"] = {"N": str(seq)}
    dynamodb.put_item(TableName=table, Item=item)


def _delete(models, seq: int) -> None:
    dynamodb, table = _table(models)
    dynamodb.delete_item(TableName=table, Key={"entity": {"S": ENTITY}, "seq": {"N": str(seq)}})


def _problems(tracker: AuditTracker) -> list[tuple[str, int | float]]:
    return [(p.kind, p.position) for p in tracker.verify(ENTITY).problems]


# -- appending ----------------------------------------------------------------------------------------------------


def test_entries_are_numbered_and_each_hash_covers_the_previous_hash_and_the_entry(tracker, clock) -> None:
    _chain(tracker, 3)
    entries = list(tracker.history(ENTITY))
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev == GENESIS
    for previous, entry in zip(entries, entries[1:], strict=False):
        assert entry.prev == previous.hash
    for entry in entries:
        assert entry.hash == chain_hash(entry.prev, entry.body()) and len(entry.hash) == 64
    assert entries[1].changes == ({"field": "version", "from": 1, "to": 2},)
    assert (entries[2].actor, entries[2].action, entries[2].event_id) == ("actor-3", "step", "e3")
    assert tracker.verify(ENTITY).ok


def test_the_diff_shows_allowed_fields_and_only_that_other_fields_changed() -> None:
    before = {"status": "pending", "email": "alice@example.com", "amount": Decimal(100), "same": 1}
    after = {"status": "captured", "email": "bob@example.com", "amount": 250, "same": 1, "pan": "4111111111111111"}
    assert field_diff(before, after) == [
        {"field": "amount", "from": 100, "to": 250},
        {"field": "email", "changed": True},
        {"field": "pan", "changed": True},
        {"field": "status", "from": "pending", "to": "captured"},
    ]


def test_a_replayed_event_is_not_appended_twice(tracker) -> None:
    first = tracker.track(ENTITY, "capture", "m-1", event_id="v2")
    again = tracker.track(ENTITY, "capture", "m-1", event_id="v2")
    assert again == first and len(list(tracker.history(ENTITY))) == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"entity": "no-kind"}, "entity"),
        ({"entity": "x#" + "y" * 600}, "entity"),
        ({"action": ""}, "action"),
        ({"user": 7}, "user"),
        ({"after": {"amount": 1.5}}, "amount"),
        ({"after": {"status": b"bytes"}}, "status"),
        ({"detail": {"line": ["not", "text"]}}, "detail"),
        ({"detail": {"note": "x" * 300}}, "detail.note"),
        ({"request_id": ""}, "request_id"),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(tracker, kwargs, field) -> None:
    args = {"entity": ENTITY, "action": "capture", "user": "m-1", **kwargs}
    entity, action, user = args.pop("entity"), args.pop("action"), args.pop("user")
    with pytest.raises(ValidationError) as caught:
        tracker.track(entity, action, user, **args)
    assert caught.value.field == field
    assert list(tracker.models.audit.scan()) == []


def test_an_append_that_keeps_losing_the_race_gives_up_with_a_clear_error(tracker, monkeypatch) -> None:
    def always_taken(self, condition=None, **kwargs):
        raise PutError("taken", cause=_conditional_failure())

    monkeypatch.setattr(tracker.models.audit, "save", always_taken)
    tracker.max_attempts = 3
    with pytest.raises(AuditAppendError, match="after 3 attempts"):
        tracker.track(ENTITY, "capture", "m-1")
    assert tracker.retries == 3


def _conditional_failure() -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": "ConditionalCheckFailedException", "Message": "no"}}, "PutItem")


def test_history_pages_through_a_long_chain(tracker) -> None:
    _chain(tracker, 25)
    assert [e.seq for e in tracker.history(ENTITY, page_size=4)] == list(range(1, 26))
    with pytest.raises(ValidationError):
        list(tracker.history(ENTITY, page_size=0))


# -- verification: every kind of tampering, located -------------------------------------------------------------


def test_an_edited_entry_is_named(tracker, models) -> None:
    _chain(tracker)
    item = _items(models)[3]
    item["actor"] = {"S": "someone-else"}
    _put(models, item)
    assert _problems(tracker) == [("edited", 3)]


def test_an_entry_edited_and_re_hashed_is_named_by_its_successor(tracker, models) -> None:
    _chain(tracker)
    entries = list(tracker.history(ENTITY))
    forged = entries[2]
    body = {**forged.body(), "actor": "someone-else"}
    item = _items(models)[3]
    item["actor"] = {"S": "someone-else"}
    item["hash"] = {"S": chain_hash(forged.prev, body)}
    _put(models, item)
    assert _problems(tracker) == [("edited", 3)]


def test_a_deleted_entry_is_named(tracker, models) -> None:
    _chain(tracker)
    _delete(models, 4)
    assert _problems(tracker) == [("deleted", 4)]


def test_reordered_entries_are_named(tracker, models) -> None:
    _chain(tracker)
    items = _items(models)
    _put(models, items[2], seq=3)
    _put(models, items[3], seq=2)
    verification = tracker.verify(ENTITY)
    assert [(p.kind, p.position) for p in verification.problems] == [("reordered", 2), ("reordered", 3)]
    assert "entry #3 is stored here" in str(verification.problems[0])


def test_an_entry_inserted_between_two_is_named(tracker, models) -> None:
    _chain(tracker)
    items = _items(models)
    _put(models, items[3], seq="3.5")
    assert _problems(tracker) == [("inserted", 3.5)]


def test_an_entry_inserted_by_shifting_the_rest_is_named(tracker, models) -> None:
    """The forger writes a well-formed entry #3 after #2 and moves the old #3..#6 one place up."""
    _chain(tracker)
    items = _items(models)
    for seq in range(6, 2, -1):
        _put(models, items[seq], seq=seq + 1)
    third = list(tracker.history(ENTITY))[2]  # the original #3, now stored at 4
    forged = {**third.body(3), "actor": "forger", "event_id": "forged"}
    item = dict(items[3])
    item.update(actor={"S": "forger"}, event_id={"S": "forged"})
    item["hash"] = {"S": chain_hash(third.prev, forged)}
    _put(models, item, seq=3)
    assert _problems(tracker) == [("inserted", 3)]


# -- checkpoints --------------------------------------------------------------------------------------------------


def test_a_truncated_tail_is_caught_by_the_checkpoint(tracker, models) -> None:
    _chain(tracker)
    checkpoint = tracker.checkpoint([ENTITY])
    assert checkpoint.heads[ENTITY][0] == 6
    _delete(models, 6)
    _delete(models, 5)
    assert tracker.verify(ENTITY).checkpoint_seq == 6
    assert _problems(tracker) == [("truncated", 6)]  # the chain alone cannot see a cut tail


def test_a_re_hashed_tail_is_caught_by_the_checkpoint(tracker, models) -> None:
    _chain(tracker)
    tracker.checkpoint([ENTITY])
    entries = list(tracker.history(ENTITY))
    prev = entries[3].hash
    for entry in entries[4:]:  # the forger rewrites #5 and #6 with fresh, consistent hashes
        body = {**entry.body(), "actor": "forger"}
        item = _items(models)[entry.seq]
        new_hash = chain_hash(prev, body)
        item.update(actor={"S": "forger"}, prev={"S": prev}, hash={"S": new_hash})
        _put(models, item)
        prev = new_hash
    assert _problems(tracker) == [("rewritten", 6)]


def test_a_forged_checkpoint_is_refused(tracker, models) -> None:
    """The forger cuts #6 and replaces the checkpoint that would show it with one of their own (another key)."""
    _chain(tracker)
    tracker.checkpoint([ENTITY])
    _delete(models, 6)
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    table = models.audit_checkpoint.Meta.table_name
    dynamodb.delete_item(TableName=table, Key={"entity": {"S": ENTITY}, "seq": {"N": "6"}})
    AuditTracker(models=models, signer=HmacSigner(b"f" * 32)).checkpoint([ENTITY])
    verification = tracker.verify(ENTITY)
    assert [(p.kind, p.position) for p in verification.problems] == [("forged-checkpoint", 5)]
    assert verification.checkpoint_seq is None and not verification.ok


def test_checkpoint_without_a_key_is_a_configuration_error(models) -> None:
    from payment_examples.core.config import Settings

    tracker = AuditTracker(models=models, settings=Settings(table_prefix="unit-"))
    tracker.track(ENTITY, "create", "m-1")
    with pytest.raises(ConfigurationError, match="PAYMENT_AUDIT_KEY"):
        tracker.checkpoint([ENTITY])
    assert tracker.verify(ENTITY).ok  # no checkpoint stored, so none is needed to verify
    with pytest.raises(ConfigurationError, match="32 bytes"):
        HmacSigner(b"short")


def test_checkpoint_of_every_chain_and_kms_signatures(aws, models, clock) -> None:
    kms = boto3.client("kms", region_name="us-east-1")
    key_id = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    tracker = AuditTracker(models=models, clock=clock, signer=KmsMacSigner(kms, key_id))
    _chain(tracker, 2, "payment#a")
    _chain(tracker, 3, "customer#b")
    checkpoint = tracker.checkpoint()  # every chain
    assert {e: seq for e, (seq, _) in checkpoint.heads.items()} == {"payment#a": 2, "customer#b": 3}
    stored = list(models.audit_checkpoint.query("customer#b"))
    assert stored[0].signer == f"kms:{key_id}" and len(base64.b64decode(stored[0].mac)) == 32
    assert tracker.verify("customer#b").ok and tracker.verify("customer#b").checkpoint_seq == 3
    other_key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    wrong = AuditTracker(models=models, signer=KmsMacSigner(kms, other_key))
    assert [p.kind for p in wrong.verify("customer#b").problems] == ["forged-checkpoint"]


# -- concurrency (the local server process) ---------------------------------------------------------------------


@pytest.mark.slow  # the engine processes: make test runs it, make test-fast does not
def test_twenty_concurrent_appends_make_one_unbroken_chain(engine) -> None:
    tracker = AuditTracker(models=bind_models(engine))
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []

    def append(i: int) -> None:
        try:
            barrier.wait()
            tracker.track(ENTITY, "touch", f"writer-{i}", event_id=f"w{i}")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=append, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    entries = list(tracker.history(ENTITY))
    assert [e.seq for e in entries] == list(range(1, 21))
    assert sorted(e.event_id for e in entries) == sorted(f"w{i}" for i in range(20))  # none lost, none twice
    assert tracker.verify(ENTITY).ok
    assert tracker.retries > 0  # they did race


# -- the command line -----------------------------------------------------------------------------------------------


def test_the_cli_checkpoints_and_verifies_every_chain_and_fails_on_tampering(aws, models, capsys) -> None:
    from dataclasses import replace

    from payment_examples.cli import main
    from payment_examples.core.config import use_settings

    tracker = AuditTracker(models=models)
    _chain(tracker, 3)
    _chain(tracker, 2, "customer#c-1")
    assert main(["audit-checkpoint"]) == 2  # no key configured: refused, with the setting to use
    assert "PAYMENT_AUDIT_KEY" in capsys.readouterr().err
    with use_settings(replace(aws, audit_key="an audit key of at least 32 bytes!")):
        assert main(["audit-checkpoint"]) == 0
        assert "2 chain heads signed" in capsys.readouterr().out
        assert main(["audit-verify"]) == 0
        assert "2 chains verified, 0 with problems" in capsys.readouterr().out
        _delete(models, 3)
        assert main(["audit-verify", ENTITY]) == 1
        out = capsys.readouterr().out
        assert "truncated at #3" in out and "1 chains verified, 1 with problems" in out
        assert main(["audit-verify", "not-an-entity"]) == 2
