"""Thin Lambda adapters: parse the event, call the package, map results and errors to HTTP responses.

``process`` (POST /payments, notebooks 01 and 07), ``query`` (GET /payments, notebook 02), ``reconcile`` (S3
ObjectCreated, notebook 03), ``stream`` (the tables' streams: the audit and Transactions projections), over
``http`` (events, problem+json) and ``auth`` (merchant identity). template.yaml deploys
``payment_examples.handlers.<name>.handler``. Nothing is exported here, so a function's cold start imports its own
handler's dependencies only; the harness (``payment_examples.harness``) drives them locally.
"""
