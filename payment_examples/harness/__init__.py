"""Harness code that drives the handlers, above them and not inside a pattern: the local stream consumer
(``consumer``: ``drain()`` projects what the streams hold, as the stream Lambda would), the load test (``load``,
``make test-load``, notebook 07) and the measured cost workload (``cost_workload``, notebook 04).
"""

from __future__ import annotations

from payment_examples.harness.consumer import Consumer, consumer_for, drain
from payment_examples.harness.cost_workload import STEPS, WorkloadMeasurement, measure_workload, model_units
from payment_examples.harness.load import LoadResult, round_trips, run_load

__all__ = [
    "Consumer",
    "LoadResult",
    "STEPS",
    "WorkloadMeasurement",
    "consumer_for",
    "drain",
    "measure_workload",
    "model_units",
    "round_trips",
    "run_load",
]
