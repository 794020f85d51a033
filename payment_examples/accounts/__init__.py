"""Accounts (notebook 06): the registry of merchant accounts and their roles (``registry``) and transfers of a
payment between accounts with both audit chains kept (``transfers``).
"""

from __future__ import annotations

from payment_examples.accounts.registry import Account, AccountRegistry, local_accounts
from payment_examples.accounts.transfers import TransferConflictError, TransferResult, transfer_payment

__all__ = [
    "Account",
    "AccountRegistry",
    "TransferConflictError",
    "TransferResult",
    "local_accounts",
    "transfer_payment",
]
