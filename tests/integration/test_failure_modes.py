"""Failure modes on the local moto server process (the flow engine): DynamoDB throttling and lost responses (botocore
``before-send`` hooks: the request never leaves, or it lands and its answer is dropped), the engine unreachable (a
fault-injecting TCP proxy, then a stopped server process), and a worker SIGKILLed at every step of
create -> authorize -> capture, then ``recover``. The processor's ledger counts the charges."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session
from botocore.retries.standard import ExponentialBackoff

from payment_examples.checkout.processor import AUTHORIZE, CAPTURE, LocalProcessor
from payment_examples.checkout.recovery import recover
from payment_examples.checkout.service import Checkout
from payment_examples.core.aws import dynamodb
from payment_examples.core.config import Settings, get_settings, use_settings
from payment_examples.engine.local import local_aws
from payment_examples.handlers import process
from payment_examples.idempotency.middleware import IdempotencyMiddleware
from payment_examples.payments.service import PaymentService, audit_entity
from payment_examples.tables.models import BoundModels, bind_models, create_tables, payment_id_for
from tests.api_events import HS_SECRET, api_event, token
from tests.integration import kill_worker
from tests.ledger_counts import NOTHING, flow_counts, without_projections

# the rest of the flow: on the moto server alone (tests/conftest.py); engine processes: not in make test-fast
pytestmark = [pytest.mark.flow, pytest.mark.slow]

CARD = {"amount": 1250, "currency": "USD", "payment_method": "pm_card_visa"}


@pytest.fixture
def local(engine: Settings) -> Iterator[Settings]:
    settings = replace(engine, processor="local", jwt_secret=HS_SECRET)
    with use_settings(settings):
        create_tables(settings)
        yield settings


@dataclass
class Api:
    models: BoundModels
    processor: LocalProcessor
    handler: Any

    def post(self, key: str = "order-1", body: dict = CARD) -> dict:
        headers = {"Authorization": f"Bearer {token()}", "Idempotency-Key": key}
        return self.handler(api_event("2.0", "POST", "/payments", headers=headers, body=body), None)

    def counts(self) -> dict[str, int]:
        return flow_counts(self.models, self.processor)


def build_api(settings: Settings) -> Api:
    models = bind_models(settings)
    service = PaymentService(models=models)
    processor = LocalProcessor(models=models)
    checkout = Checkout(service, processor)
    return Api(models, processor, process.make_handler(service, checkout))


ONE = {"payments": 1, "transactions": 1, "idempotency": 0, "audit": 2, "charges": 1}


def status(response: dict, expected: int) -> dict:
    assert response["statusCode"] == expected, response
    return json.loads(response["body"])


# -- botocore hooks: throttling and lost responses ------------------------------------------------------------------


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


class Faults:
    """``before-send`` hooks on every DynamoDB client of ``models`` and the middleware's: a planned (operation,
    table, kind) answers "throttled" without sending, or sends for real and then loses the answer."""

    def __init__(self, models: BoundModels) -> None:
        self.clients = {dynamodb(), *(m._get_connection().connection.client for m in models.all())}
        self.plan: list[tuple[str, str, str]] = []
        self.fired: list[tuple[str, str, str]] = []
        self._http = URLLib3Session()
        for client in self.clients:
            client.meta.events.register_first("before-send.dynamodb", self._before_send, unique_id="failure-modes")

    def remove(self) -> None:
        for client in self.clients:
            client.meta.events.unregister("before-send.dynamodb", unique_id="failure-modes")

    def _before_send(self, request: Any, **_: Any) -> AWSResponse | None:
        operation = request.headers.get("X-Amz-Target", b"")
        operation = (operation.decode() if isinstance(operation, bytes) else operation).rpartition(".")[2]
        table = json.loads(request.body or b"{}").get("TableName", "")
        for planned in self.plan:
            if planned[0] == operation and table.endswith(planned[1]):
                self.plan.remove(planned)
                self.fired.append(planned)
                if planned[2] == "throttle":
                    body = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#"
                                       "ProvisionedThroughputExceededException", "message": "slow down"})  # fmt: skip
                    headers = {"x-amzn-RequestId": "throttled", "Content-Type": "application/x-amz-json-1.0"}
                    return AWSResponse(request.url, 400, headers, _Raw(body.encode()))
                self._http.send(request)  # the write lands...
                raise ReadTimeoutError(endpoint_url=request.url)  # ...and its answer is lost
        return None


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's own backoff (up to 1, 2, 4, 8 s after throttling), 50 times shorter: same retries, less waiting."""
    original = ExponentialBackoff.delay_amount
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: original(self, context) / 50)


@pytest.fixture
def faults(local: Settings, fast_backoff: None) -> Iterator[Faults]:
    hooks = Faults(bind_models(local))
    yield hooks
    hooks.remove()


def test_dynamodb_throttling_is_retried_with_backoff(local: Settings, faults: Faults) -> None:
    api = build_api(local)
    faults.plan = [("PutItem", "payments", "throttle")] * 2 + [("UpdateItem", "payments", "throttle")]
    assert status(api.post(), 201)["status"] == "authorized"
    assert len(faults.fired) == 3 and api.counts() == ONE


def test_throttling_that_outlasts_the_retries_is_503_and_leaves_nothing_half_written(
    local: Settings, faults: Faults
) -> None:
    api = build_api(local)
    faults.plan = [("PutItem", "payments", "throttle")] * 6  # PynamoDB's client: 1 try + 5 retries, then gives up
    response = api.post()
    assert status(response, 503)["type"].endswith("/engine-unavailable") and response["headers"]["Retry-After"]
    assert len(faults.fired) == 6 and api.counts() == NOTHING  # the claim was released; no payment, no charge
    assert status(api.post(), 201)["status"] == "authorized" and api.counts() == ONE


def test_a_write_that_landed_but_whose_answer_was_lost_is_retried_into_one_payment(
    local: Settings, faults: Faults
) -> None:
    api = build_api(local)
    # The payment's put and its authorisation both land; the SDK retries each, finds its own write, goes on.
    faults.plan = [("PutItem", "payments", "lose"), ("UpdateItem", "payments", "lose")]
    response = api.post()
    first = status(response, 201)
    assert "Idempotent-Replayed" not in response["headers"]  # the retry found its own put, not another request's
    assert len(faults.fired) == 2 and first["status"] == "authorized"
    assert api.counts() == ONE
    assert status(api.post(), 201) == first


def test_a_lost_answer_that_reaches_the_client_is_retried_by_it_into_one_charge(
    local: Settings, faults: Faults
) -> None:
    api = build_api(local)
    faults.plan = [("UpdateItem", "payments", "lose")] * 6  # the authorisation lands, every answer to it is lost
    assert status(api.post(), 503)["type"].endswith("/engine-unavailable")
    retry = api.post()  # the client's retry: the payment itself says it is authorised
    assert status(retry, 201)["status"] == "authorized" and retry["headers"]["Idempotent-Replayed"] == "true"
    assert api.counts() == ONE


# -- the engine unreachable ------------------------------------------------------------------------------------------


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of the engine that can cut every connection and refuse new ones."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.up = True
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        self.up = False
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            self._sockets.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.mark.parametrize("cut_after", [0, 1])  # before anything, or after the payment's put
def test_an_unreachable_engine_is_503_and_the_next_request_after_it_returns_works(
    local: Settings, cut_after: int
) -> None:
    proxy = Proxy(local.endpoint_url)
    through = replace(local, endpoint_url=proxy.url)
    try:
        with use_settings(through):
            api = build_api(through)
            calls = {"n": 0}

            def maybe_cut(**_: Any) -> None:
                calls["n"] += 1
                if calls["n"] == cut_after:
                    proxy.cut()

            clients = {dynamodb(through), *(m._get_connection().connection.client for m in api.models.all())}
            for client in clients:
                client.meta.events.register("after-call.dynamodb", maybe_cut, unique_id="cut")
            if cut_after == 0:
                proxy.cut()
            started = time.monotonic()
            response = api.post()
            elapsed = time.monotonic() - started
            for client in clients:
                client.meta.events.unregister("after-call.dynamodb", unique_id="cut")
            assert status(response, 503)["type"].endswith("/engine-unavailable"), elapsed
            assert response["headers"]["Retry-After"] == "1"
            proxy.restore()
        counts = build_api(local).counts()
        # Nothing half-written: no charge; a payment cut off after its put holds its call until the lease ends.
        assert counts == {**NOTHING, "payments": cut_after, "audit": cut_after}  # the pending payment's create
        with use_settings(through):
            retry = api.post()
            if cut_after:  # the cut-off attempt's call is its own until its lease ends (recover resolves it after)
                assert (
                    status(retry, 409)["type"].endswith("/idempotency-in-progress") and retry["headers"]["Retry-After"]
                )
            else:
                assert status(retry, 201)["status"] == "authorized"
    finally:
        proxy.close()


@pytest.mark.parametrize("kind", ["moto", "dynalite"])
def test_a_stopped_engine_process_is_503_and_a_restarted_one_serves_the_next_request(kind: str) -> None:
    base = Settings(engine=kind, table_prefix="stop-", jwt_secret=HS_SECRET)
    with local_aws(base):
        stopped = get_settings()  # what local_aws installed: its endpoint, the processor, the tables
        api = build_api(stopped)
        assert status(api.post("before"), 201)["status"] == "authorized"
    # local_aws() stopped its server process on exit: the same endpoint now refuses connections.
    with use_settings(stopped):
        response = api.post("during")
        assert status(response, 503)["type"].endswith("/engine-unavailable") and response["headers"]["Retry-After"]
    with local_aws(base):
        api = build_api(get_settings())
        assert status(api.post("after"), 201)["status"] == "authorized"
        assert api.counts() == (ONE if kind == "moto" else without_projections(ONE))  # dynalite: no stream


# -- a worker process killed at every step, then recover ---------------------------------------------------------------


def process_env(settings: Settings) -> dict[str, str]:
    """The environment of a child process (a worker, the CLI) pointed at the engine and tables of ``settings``."""
    return {
        **os.environ,
        "AWS_ENDPOINT_URL_DYNAMODB": settings.endpoint_url,
        "AWS_ENDPOINT_URL": settings.endpoint_for("s3"),  # S3, KMS, STS (dynalite: the moto server beside it)
        "PAYMENT_ENGINE": settings.engine,
        "AWS_ACCESS_KEY_ID": settings.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key,
        "PAYMENT_TABLE_PREFIX": settings.table_prefix,
        "PAYMENT_PROCESSOR": "local",
        "PAYMENT_JWT_SECRET": HS_SECRET,
        "POWERTOOLS_LOG_LEVEL": "ERROR",
    }


def worker(settings: Settings, key: str, kill_at: str) -> subprocess.Popen:
    env = process_env(settings)
    command = [sys.executable, "-m", "tests.integration.kill_worker", "--key", key, "--kill-at", kill_at]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcome(local: Settings, key: str) -> tuple:
    """What the tables and the ledger hold for the payment of ``key``."""
    models = bind_models(local)
    service = PaymentService(models=models)
    payment_id = payment_id_for(kill_worker.MERCHANT, key)
    payment = service.read_payment(kill_worker.MERCHANT, payment_id)
    transactions = [(t.type, int(t.amount), int(t.payment_version)) for t in service.transactions(
        kill_worker.MERCHANT, payment_id)]  # fmt: skip
    charges = [
        (c.operation, c.amount) for c in LocalProcessor(models=models).charges(None) if c.payment_id == payment_id
    ]
    return (payment.status, int(payment.captured_amount), payment.processor_call is None, int(payment.version),
            transactions, sorted(charges), service.audit.verify(audit_entity(payment_id)).ok)  # fmt: skip


# What an uninterrupted create -> authorize -> capture leaves: payment, Transactions, charges, an intact chain.
AMOUNT = kill_worker.AMOUNT
EXPECTED = ("captured", AMOUNT, True, 3, [("authorize", AMOUNT, 2), ("capture", AMOUNT, 3)],
            [(AUTHORIZE, AMOUNT), (CAPTURE, AMOUNT)], True)  # fmt: skip


def test_workers_killed_at_every_step_are_recovered_into_the_uninterrupted_state(local: Settings) -> None:
    # One real process per kill point, all at once (and one left alone), each SIGKILLed by itself at its point.
    workers = {point: worker(local, point, point) for point in ("none", *kill_worker.POINTS)}
    results = {point: (process.wait(timeout=180), process.communicate()) for point, process in workers.items()}
    assert results["none"][0] == 0, results["none"]
    assert outcome(local, "none") == EXPECTED
    killed = {point: code for point, (code, _) in results.items() if point != "none"}
    assert killed == dict.fromkeys(kill_worker.POINTS, -9), results  # each died by SIGKILL, mid-flow

    time.sleep(kill_worker.LEASE.total_seconds() + 0.2)  # the killed workers' calls are now past their lease
    models = bind_models(local)
    checkout = Checkout(PaymentService(models=models), LocalProcessor(models=models))
    report = recover(checkout, IdempotencyMiddleware(), older_than=timedelta(0))
    in_flight = ("payment-put", "created", "authorize-sent", "capture-marked", "capture-sent")
    assert sorted(report.resolved_calls) == sorted(
        (payment_id_for(kill_worker.MERCHANT, point), CAPTURE if "capture" in point else AUTHORIZE, "approved")
        for point in in_flight
    ), report  # fmt: skip
    assert report.released_claims == 0, report  # the payment is the request's record: no claim to release
    assert recover(checkout, IdempotencyMiddleware(), older_than=timedelta(0)).fixed == 0, "a second run: nothing"

    for point in kill_worker.POINTS:  # the clients go on as clients do: retry the request, then capture
        kill_worker.client_flow(models, point)
    states = {point: outcome(local, point) for point in kill_worker.POINTS}
    assert states == dict.fromkeys(kill_worker.POINTS, EXPECTED)
    charges = LocalProcessor(models=models).charges(AUTHORIZE)
    assert len(charges) == len({c.payment_id for c in charges}) == len(kill_worker.POINTS) + 1  # one each


def test_recover_on_the_command_line(local: Settings) -> None:
    killed = worker(local, "cli", "authorize-sent")
    assert killed.wait(timeout=180) == -9, killed.communicate()
    time.sleep(kill_worker.LEASE.total_seconds() + 0.2)  # its processor call is past its lease
    env = process_env(local)
    command = [sys.executable, "-m", "payment_examples.cli", "recover", "--older-than", "0"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    payment_id = payment_id_for(kill_worker.MERCHANT, "cli")
    assert f"resolved authorize of payment {payment_id}: approved" in done.stdout
    assert "released 0 stale idempotency claims, resolved 1 processor calls" in done.stdout
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert "resolved 0 processor calls" in again.stdout and "released 0" in again.stdout
    unconfigured = subprocess.run(command, env={**env, "PAYMENT_PROCESSOR": ""}, capture_output=True, text=True,
                                  timeout=120)  # fmt: skip
    assert unconfigured.returncode == 2 and "PAYMENT_PROCESSOR" in unconfigured.stderr
