"""payment_examples: payment-platform patterns on AWS Lambda and DynamoDB, one folder per pattern.

Notebook NN -> ``payment_examples/<pattern>/`` -> ``tests/unit/<pattern>/``. Layers, lowest first (``make lint``
checks them: tests/layers.py): ``core`` (no payment knowledge) <- ``tables`` <- ``engine`` <- ``audit`` <-
``payments`` (the domain) <- the patterns (``idempotency``, ``cost``, ``encryption``, ``accounts``,
``reconciliation``, ``checkout``) <- ``handlers`` <- ``harness``, ``reports`` <- ``cli``. Each folder's
``__init__`` names its notebook and exports what a service imports; README.md maps every module.
"""
