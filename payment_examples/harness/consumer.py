"""The stream consumer run locally: the deployed Lambda handler (``handlers/stream.py``) over the engine's streams.

``drain()`` projects everything written so far and returns when the consumer has caught up: tests and notebooks
call it before they read Transactions or audit entries. ``Consumer.start()`` runs it in the background
(``payment-examples local``). One consumer is kept per settings (its position in each stream with it), so repeated
drains read only what is new. One poller per table whose changes are projected (payments, customers, payment
methods), as the deployed function has one event source per table.
"""

from __future__ import annotations

import threading

from payment_examples.audit import Projectors
from payment_examples.core import Settings, get_settings
from payment_examples.engine.stream import (
    DeliveryStats,
    EventSourceConfig,
    FailureDestination,
    StreamPoller,
    stream_arn,
)
from payment_examples.handlers.stream import make_handler, stream_projectors
from payment_examples.tables import get_models


class Consumer:
    """The projected tables' streams, delivered to the projection's Lambda handler."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        projectors: Projectors | None = None,
        config: EventSourceConfig | None = None,
        on_failure: FailureDestination | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.projectors = projectors or stream_projectors(self.settings)
        handler = make_handler(self.projectors)
        self.pollers = [
            StreamPoller(table, handler, settings=self.settings, config=config, on_failure=on_failure)
            for table in self.projectors.by_table
        ]

    @property
    def stats(self) -> DeliveryStats:
        """What the pollers have done, added up."""
        total = DeliveryStats()
        for poller in self.pollers:
            stats = poller.stats
            total.records += stats.records
            total.invocations += stats.invocations
            total.retries += stats.retries
            total.failed += stats.failed
            total.lag_ms += stats.lag_ms
        return total

    @property
    def reads(self) -> int:
        """GetRecords calls so far (each one read request unit of DynamoDB Streams)."""
        return sum(poller.reads for poller in self.pollers)

    def drain(self) -> DeliveryStats:
        for poller in self.pollers:
            poller.drain()
        return self.stats

    def start(self, *, interval: float = 0.2) -> None:
        for poller in self.pollers:
            poller.start(interval=interval)

    def stop(self) -> None:
        for poller in self.pollers:
            poller.stop()


_lock = threading.Lock()
_consumers: dict[Settings, tuple[str, Consumer]] = {}


def consumer_for(settings: Settings | None = None) -> Consumer:
    """The consumer kept for ``settings`` (default: the settings in force), new when the payments table's stream is
    (the tables were created again: the streams, the projection's positions and what it remembers start over; each
    poller also follows its own table's stream)."""
    settings = settings or get_settings()
    arn = stream_arn(get_models(settings).payment.Meta.table_name, settings)
    with _lock:
        kept = _consumers.get(settings)
        if kept is None or kept[0] != arn:
            if len(_consumers) >= 64:
                _consumers.pop(next(iter(_consumers)))
            kept = _consumers[settings] = (arn, Consumer(settings))
        return kept[1]


def drain(settings: Settings | None = None) -> DeliveryStats:
    """Project every change written so far (under ``settings``, default the settings in force) and return."""
    return consumer_for(settings).drain()
