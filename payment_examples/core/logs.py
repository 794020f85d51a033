"""The package's structured JSON logger (Powertools Logger). Never log card numbers, emails, secrets or tokens."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aws_lambda_powertools import Logger

logger = Logger(service="payment_examples")


@contextmanager
def log_level(level: str) -> Iterator[None]:
    """Run a block with the package logger at ``level`` (a CLI quietening a demo run), then put it back."""
    previous = logger.log_level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)
