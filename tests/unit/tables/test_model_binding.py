"""Model classes bound to one settings share one DynamoDB client, created once even when threads race to it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import botocore.session

from payment_examples.core.config import Settings
from payment_examples.tables.models import bind_models


def test_bound_models_share_one_client_created_once_by_racing_threads() -> None:
    settings = Settings(table_prefix="shared-client-test-", endpoint_url="http://127.0.0.1:9")  # never called
    models = bind_models(settings)
    created, original, lock = [], botocore.session.Session.create_client, threading.Lock()
    start = threading.Barrier(8)

    def counting(session: botocore.session.Session, *args: object, **kwargs: object) -> object:
        with lock:
            created.append(args[0] if args else kwargs.get("service_name"))
        return original(session, *args, **kwargs)

    def first_use(model: type) -> object:
        start.wait()  # all at once, as a fresh container's thread pool does
        return model._get_connection().connection.client

    with mock.patch.object(botocore.session.Session, "create_client", counting), ThreadPoolExecutor(8) as pool:
        clients = list(pool.map(first_use, [*models.all(), *models.all()][:8]))

    assert created == ["dynamodb"]
    assert all(client is clients[0] for client in clients)
    assert all(m._get_connection().connection.client is clients[0] for m in (*models.all(), models.processor_ledger))
    # other settings (another account, another endpoint) get classes and a client of their own
    other = bind_models(Settings(table_prefix="shared-client-other-", endpoint_url="http://127.0.0.1:9"))
    assert other.payment._get_connection().connection.client is not clients[0]
