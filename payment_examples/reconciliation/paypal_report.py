"""PayPal's Settlement report (STL) read into canonical rows."""

from __future__ import annotations

from payment_examples.reconciliation.rows import Layout, Record


class PayPalLayout(Layout):
    name = "paypal"
    expected = "a PayPal settlement report (STL: the first record is RH)"
    payouts_close = True

    def matches(self, first: Record) -> bool:
        return bool(first.fields) and first.fields[0].strip() == "RH"


PAYPAL = PayPalLayout()
