"""What a payment flow left behind, counted: items per table and the simulated processor's requests it acted on."""

from __future__ import annotations

from payment_examples.aws import dynamodb
from payment_examples.models import BoundModels
from payment_examples.processor import LocalProcessor

NOTHING = {"payments": 0, "transactions": 0, "idempotency": 0, "audit": 0, "charges": 0}


def flow_counts(models: BoundModels, processor: LocalProcessor) -> dict[str, int]:
    client = dynamodb()
    tables = {"payments": models.payment, "transactions": models.transaction, "idempotency": models.idempotency,
              "audit": models.audit}  # fmt: skip
    counts = {name: client.scan(TableName=m.Meta.table_name, Select="COUNT")["Count"] for name, m in tables.items()}
    counts["charges"] = len(processor.charges(approved=None))
    return counts
