"""Stripe's itemized reports (``payout_reconciliation.itemized.5``, ``balance_change_from_activity.itemized.3``)
read into canonical rows."""

from __future__ import annotations

from payment_examples.reconciliation.rows import Layout, Record


class StripeLayout(Layout):
    name = "stripe"
    expected = "a Stripe itemized report (a header with balance_transaction_id, reporting_category, gross, fee, net)"

    def matches(self, first: Record) -> bool:
        names = {f.strip() for f in first.fields}
        return {"balance_transaction_id", "reporting_category", "gross", "currency"} <= names


STRIPE = StripeLayout()
