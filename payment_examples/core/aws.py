"""boto3 clients, created on first use and cached per settings.

Nothing is created at import: a Lambda container builds its clients on the first invocation and reuses them,
and ``local_aws()`` can redirect everything by installing new settings, whatever was imported first. Each client
talks to its service's endpoint (``Settings.endpoint_for``): on the dynalite engine DynamoDB is dynalite's and
S3, KMS and STS are the moto server's.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config

from payment_examples.core.config import Settings, get_settings

_session_lock = threading.Lock()  # boto3 sessions are not thread-safe; clients are.


@lru_cache(maxsize=64)
def _client(service: str, settings: Settings) -> Any:
    with _session_lock:
        session = boto3.session.Session(
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key,
            aws_session_token=settings.aws_session_token,
            region_name=settings.region,
        )
        options: dict[str, Any] = {"retries": {"mode": "standard", "max_attempts": 5}, "max_pool_connections": 64}
        if service == "dynamodbstreams":
            # The regional endpoint, not botocore's account-based one (which moto in-process does not answer).
            options["account_id_endpoint_mode"] = "disabled"
        return session.client(
            service,
            endpoint_url=settings.endpoint_for(service),  # DynamoDB's, or the other services' (dynalite + moto)
            config=Config(**options),
        )


def client(service: str, settings: Settings | None = None) -> Any:
    """The cached boto3 client for ``service`` under ``settings`` (default: the settings in force)."""
    return _client(service, settings or get_settings())


def dynamodb(settings: Settings | None = None) -> Any:
    return client("dynamodb", settings)
