"""The stream consumer run locally: the deployed Lambda handler (``handlers/stream.py``) over the engine's stream.

``drain()`` projects everything written so far and returns when the consumer has caught up: tests and notebooks
call it before they read Transactions or audit entries. ``Consumer.start()`` runs it in the background
(``payment-examples local``). One consumer is kept per settings (its position in the stream with it), so repeated
drains read only what is new.
"""

from __future__ import annotations

import threading

from payment_examples.config import Settings, get_settings
from payment_examples.handlers.stream import make_handler
from payment_examples.models import get_models
from payment_examples.projection import PaymentProjector
from payment_examples.stream import DeliveryStats, EventSourceConfig, FailureDestination, StreamPoller, stream_arn


class Consumer:
    """The payments table's stream, delivered to the projection's Lambda handler."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        projector: PaymentProjector | None = None,
        config: EventSourceConfig | None = None,
        on_failure: FailureDestination | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        models = get_models(self.settings)
        self.projector = projector or PaymentProjector(models=models, settings=self.settings)
        self.poller = StreamPoller(
            models.payment.Meta.table_name, make_handler(self.projector), settings=self.settings, config=config,
            on_failure=on_failure,
        )  # fmt: skip

    @property
    def stats(self) -> DeliveryStats:
        return self.poller.stats

    def drain(self) -> DeliveryStats:
        return self.poller.drain()

    def start(self, *, interval: float = 0.2) -> None:
        self.poller.start(interval=interval)

    def stop(self) -> None:
        self.poller.stop()


_lock = threading.Lock()
_consumers: dict[Settings, tuple[str, Consumer]] = {}


def consumer_for(settings: Settings | None = None) -> Consumer:
    """The consumer kept for ``settings`` (default: the settings in force), new when the table's stream is (the
    table was created again: its stream, the projection's position and what it remembers start over)."""
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
