"""The brief's utilities: idempotency middleware (more to come: audit tracker, cost estimator)."""
