"""The package's structured JSON logger (Powertools Logger). Never log card numbers, emails, secrets or tokens."""

from __future__ import annotations

from aws_lambda_powertools import Logger

logger = Logger(service="payment_examples")
