"""Cost estimation (notebook 04): item sizes as DynamoDB counts them (``item_size``), the capacity rules per call
(``capacity``), the tracker that records every call's units (``tracker``) and the estimator that prices a workload
(``estimator``). Pure functions over sizes and prices: it imports only the core. The measured workload that drives
the handlers is harness code (``payment_examples.harness.cost_workload``).
"""

from __future__ import annotations

from payment_examples.cost.capacity import IndexSpec, TableSpec, read_units, write_units
from payment_examples.cost.estimator import CostBreakdown, CostEstimator, Pricing, WorkloadMetrics
from payment_examples.cost.item_size import ItemSizeError, as_dynamodb_json, number_size
from payment_examples.cost.tracker import CallRecord, CapacityTracker

__all__ = [
    "CallRecord",
    "CapacityTracker",
    "CostBreakdown",
    "CostEstimator",
    "IndexSpec",
    "ItemSizeError",
    "Pricing",
    "TableSpec",
    "WorkloadMetrics",
    "as_dynamodb_json",
    "number_size",
    "read_units",
    "write_units",
]
