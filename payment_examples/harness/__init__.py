"""Harness code that drives the handlers, above them and not inside a pattern: the local stream consumer
(``consumer``: ``drain()`` projects what the streams hold, as the stream Lambda would), the load test (``load``,
``make test-load``, notebook 07), the measured cost workload (``cost_workload``, notebook 04), and for the
webhooks of notebook 08 the local pipeline (``webhooks``: the producer over the payments stream and the delivery
worker over the queue, as their Lambda event sources would run them) and a merchant's endpoint (``receiver``).
"""

from __future__ import annotations

from payment_examples.harness.consumer import Consumer, consumer_for, drain
from payment_examples.harness.cost_workload import STEPS, WorkloadMeasurement, measure_workload, model_units
from payment_examples.harness.load import LoadResult, round_trips, run_load
from payment_examples.harness.receiver import Received, Receiver
from payment_examples.harness.webhooks import PipelineStats, QueueWorker, WebhookPipeline

__all__ = [
    "Consumer",
    "LoadResult",
    "PipelineStats",
    "QueueWorker",
    "Received",
    "Receiver",
    "STEPS",
    "WebhookPipeline",
    "WorkloadMeasurement",
    "consumer_for",
    "drain",
    "measure_workload",
    "model_units",
    "round_trips",
    "run_load",
]
