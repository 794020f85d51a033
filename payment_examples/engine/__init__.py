"""The embedded engine: ``local_aws()`` starts a local moto server process (or dynalite for DynamoDB), creates the
tables and the fields' KMS key, and installs settings that point at it; ``StreamPoller`` is the local Lambda-like
event source over DynamoDB Streams. ``moto_speedups`` is applied inside the moto server process (by module path:
``engine/local.py``). Every notebook starts here (notebook 00 first). Imports the core and the tables only: the KMS
key is provisioned here (``create_kms_key``), not by the encryption pattern.
"""

from __future__ import annotations

from payment_examples.engine.local import (
    DESCRIPTIONS,
    ENGINE_LABELS,
    DynaliteServer,
    LocalAWS,
    MotoServer,
    create_kms_key,
    local_aws,
    other_engine,
    serve,
)
from payment_examples.engine.stream import DeliveryStats, EventSourceConfig, StreamPoller, stream_arn

__all__ = [
    "DESCRIPTIONS",
    "DeliveryStats",
    "DynaliteServer",
    "ENGINE_LABELS",
    "EventSourceConfig",
    "LocalAWS",
    "MotoServer",
    "StreamPoller",
    "create_kms_key",
    "local_aws",
    "other_engine",
    "serve",
    "stream_arn",
]
