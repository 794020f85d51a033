"""What a payment flow left behind, counted: items per table and the simulated processor's requests it acted on."""

from __future__ import annotations

from payment_examples.checkout.processor import LocalProcessor
from payment_examples.core.aws import dynamodb
from payment_examples.harness.consumer import drain
from payment_examples.tables.models import BoundModels

NOTHING = {"payments": 0, "transactions": 0, "idempotency": 0, "audit": 0, "charges": 0}


PROJECTIONS = ("transactions", "audit")


def flow_counts(models: BoundModels, processor: LocalProcessor) -> dict[str, int]:
    """Counted once the stream's consumer has caught up (Transactions and audit entries are its projections). On
    an engine without streams (dynalite) nothing projects them: they are left out."""
    client = dynamodb()
    streams = "LatestStreamArn" in client.describe_table(TableName=models.payment.Meta.table_name)["Table"]
    if streams:
        drain()
    tables = {"payments": models.payment, "transactions": models.transaction, "idempotency": models.idempotency,
              "audit": models.audit}  # fmt: skip
    if not streams:
        tables = {name: model for name, model in tables.items() if name not in PROJECTIONS}
    counts = {name: client.scan(TableName=m.Meta.table_name, Select="COUNT")["Count"] for name, m in tables.items()}
    counts["charges"] = len(processor.charges(approved=None))
    return counts


def without_projections(counts: dict[str, int]) -> dict[str, int]:
    return {name: n for name, n in counts.items() if name not in PROJECTIONS}
