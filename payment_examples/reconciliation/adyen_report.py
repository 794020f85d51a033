"""Adyen's Settlement details report read into canonical rows."""

from __future__ import annotations

from payment_examples.reconciliation.rows import Layout, Record


class AdyenLayout(Layout):
    name = "adyen"
    expected = "an Adyen Settlement details report (a header with Merchant Account, Psp Reference, Type, Batch Number)"
    payouts_close = True

    def matches(self, first: Record) -> bool:
        names = {f.strip() for f in first.fields}
        return {"Merchant Account", "Psp Reference", "Type"} <= names


ADYEN = AdyenLayout()
