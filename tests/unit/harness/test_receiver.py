"""The local webhook receiver (harness/receiver.py): each behaviour over real HTTP on 127.0.0.1, the ``received``
log, signatures checked when secrets are given, ``down()`` refusing connections, and no thread left after exit."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest

from payment_examples.core.clock import FixedClock
from payment_examples.core.signatures import SIGNATURE_HEADER, sign
from payment_examples.harness.receiver import Receiver

SECRET = "whsec_test_0123456789abcdef0123456789abcdef"
AT = datetime(2026, 1, 1, tzinfo=UTC)
T = int(AT.timestamp())


def event(n: int = 1) -> bytes:
    return json.dumps({"id": f"evt_{n}", "type": "payment.captured"}, separators=(",", ":")).encode()


def post(url: str, body: bytes = b"{}", headers: dict[str, str] | None = None, timeout: float = 2.0) -> int:
    """One POST on a fresh connection (no pool, no retries): the status, or the exception it raised."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("POST", parts.path, body, {"Content-Type": "application/json", **(headers or {})})
        return connection.getresponse().status
    finally:
        connection.close()


def signed(body: bytes, secrets: list[str] | None = None, t: int = T) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(body, secrets or [SECRET], t), "Payment-Event-Id": json.loads(body)["id"]}


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert set(threading.enumerate()) <= before, "the receiver left a thread running"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(AT)


def test_ok_without_secrets_records_every_request(clock: FixedClock) -> None:
    with Receiver(clock=clock) as receiver:
        assert receiver.url.startswith("http://127.0.0.1:") and receiver.url.endswith("/webhooks")
        assert post(receiver.url, event(1), {"Payment-Event-Id": "evt_1"}) == 200
        assert post(receiver.url, event(2)) == 200
        first, second = receiver.received
    assert (first.at, first.body, first.status, first.error) == (AT, event(1), 200, None)
    assert first.headers["Payment-Event-Id"] == "evt_1" and first.headers["Content-Type"] == "application/json"
    assert second.body == event(2)
    assert receiver.events() == [json.loads(event(1)), json.loads(event(2))]
    assert receiver.ids() == ["evt_1", "evt_2"]  # still readable after exit


def test_ok_with_secrets_verifies_the_signature(clock: FixedClock) -> None:
    with Receiver([SECRET], clock=clock) as receiver:
        assert post(receiver.url, event(1), signed(event(1))) == 200
        assert post(receiver.url, event(2), signed(event(2), ["whsec_wrong_0123456789abcdef0123456789ab"])) == 400
        assert post(receiver.url, event(3), signed(event(4))) == 400  # a body the signature is not for
        assert post(receiver.url, event(5)) == 400  # no header
        assert post(receiver.url, event(6), {SIGNATURE_HEADER: "v1=abc"}) == 400
        assert post(receiver.url, event(7), signed(event(7), t=T - 301)) == 400
    assert [(r.status, r.error) for r in receiver.received] == [
        (200, None),
        (400, "mismatch"),
        (400, "mismatch"),
        (400, "missing"),
        (400, "malformed"),
        (400, "stale"),
    ]
    assert receiver.ids() == ["evt_1"]  # only what was delivered with a 2xx


def test_either_secret_verifies_during_a_rotation_and_the_tolerance_is_the_receivers(clock: FixedClock) -> None:
    new = "whsec_new_0123456789abcdef0123456789abcdef"
    with Receiver([SECRET], tolerance=5, clock=clock) as receiver:
        assert post(receiver.url, event(1), signed(event(1), [new, SECRET])) == 200
        assert post(receiver.url, event(2), signed(event(2), t=T + 5)) == 200
        assert post(receiver.url, event(3), signed(event(3), t=T + 6)) == 400
    assert receiver.received[-1].error == "future"


def test_signatures_are_checked_against_the_injected_clock() -> None:
    """A deliverer on a fixed clock signs with its time: a receiver on the system clock finds that stale."""
    with Receiver([SECRET]) as receiver:
        assert post(receiver.url, event(1), signed(event(1))) == 400
    assert receiver.received[0].error == "stale"


@pytest.mark.parametrize(("behaviour", "status"), [("fail", 400), ("error", 500)])
def test_fail_and_error_answer_without_looking(behaviour: str, status: int) -> None:
    with Receiver([SECRET], behaviour=behaviour) as receiver:  # type: ignore[arg-type]
        assert post(receiver.url, event(1), signed(event(1))) == status
        assert post(receiver.url, event(2)) == status
    assert [r.status for r in receiver.received] == [status, status]
    assert receiver.events() == [] and receiver.ids() == []


def test_timeout_never_answers_and_exit_does_not_wait_for_it() -> None:
    exited = threading.Event()
    receiver = Receiver(behaviour="timeout")  # holds each request 30 s
    with receiver:
        with pytest.raises(TimeoutError):
            post(receiver.url, event(1), timeout=0.2)
        assert [r.status for r in receiver.received] == [None]

        def leave() -> None:
            receiver.__exit__(None, None, None)
            exited.set()

        leaving = threading.Thread(target=leave)
        leaving.start()
        leaving.join(timeout=5)  # a bound for a broken build, far below the 30 s hold
        assert exited.is_set(), "__exit__ waited for the sleeping request"
    assert receiver.received[0].status is None and receiver.events() == []


def test_timeout_with_a_delay_drops_the_connection_unanswered() -> None:
    dropped = (http.client.RemoteDisconnected, ConnectionResetError)
    with Receiver(behaviour="timeout", delay=0.05) as receiver, pytest.raises(dropped):
        post(receiver.url, event(1), timeout=2)
    assert receiver.received[0].status is None


def test_slow_answers_after_its_delay(clock: FixedClock) -> None:
    with Receiver([SECRET], behaviour="slow", delay=0.3, clock=clock) as receiver:
        with pytest.raises(TimeoutError):  # the delay is real: a shorter client timeout gives up first
            post(receiver.url, event(1), signed(event(1)), timeout=0.1)
        receiver.delay = 0.05
        assert post(receiver.url, event(2), signed(event(2))) == 200
        assert post(receiver.url, event(3)) == 400  # slow still checks the signature
    assert receiver.received[1].status == 200 and "evt_2" in receiver.ids()


def test_flaky_fails_its_first_requests_then_answers_as_ok(clock: FixedClock) -> None:
    with Receiver([SECRET], behaviour="flaky", fail_first=2, clock=clock) as receiver:
        statuses = [post(receiver.url, event(n), signed(event(n))) for n in range(1, 5)]
        assert post(receiver.url, event(5)) == 400  # once ok, it verifies
        receiver.behaviour = "flaky"  # setting it again counts again
        assert post(receiver.url, event(6), signed(event(6))) == 500
    assert statuses == [500, 500, 200, 200]
    assert receiver.ids() == ["evt_3", "evt_4"]


def test_behaviour_can_change_while_running_and_unknown_ones_are_refused() -> None:
    with Receiver() as receiver:
        assert post(receiver.url) == 200
        receiver.behaviour = "error"
        assert post(receiver.url) == 500
        receiver.behaviour = "ok"
        assert post(receiver.url) == 200
        with pytest.raises(ValueError, match="unknown behaviour 'down'"):
            receiver.behaviour = "down"  # type: ignore[assignment]
    assert [r.status for r in receiver.received] == [200, 500, 200]
    with pytest.raises(ValueError, match="one of ok, fail, error, timeout, slow, flaky"):
        Receiver(behaviour="broken")  # type: ignore[arg-type]


def test_concurrent_requests_are_all_recorded() -> None:
    with Receiver() as receiver:
        statuses: list[int] = []
        threads = [threading.Thread(target=lambda n=n: statuses.append(post(receiver.url, event(n)))) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [200] * 8
    assert sorted(receiver.ids()) == sorted(f"evt_{n}" for n in range(8))


def test_down_refuses_connections() -> None:
    url = Receiver.down()
    assert url.startswith("http://127.0.0.1:")
    with pytest.raises(ConnectionRefusedError):
        post(url, event(1), timeout=0.2)


def test_a_stopped_receiver_refuses_connections_and_has_no_url() -> None:
    receiver = Receiver()
    with pytest.raises(RuntimeError, match="not running"):
        receiver.url  # noqa: B018
    with receiver:
        url = receiver.url
        with pytest.raises(RuntimeError, match="already running"):
            receiver.__enter__()
    with pytest.raises(ConnectionRefusedError):
        post(url, timeout=0.2)
    with pytest.raises(RuntimeError, match="not running"):
        receiver.url  # noqa: B018


def test_exit_hangs_up_on_a_connection_that_never_sends_a_request() -> None:
    with Receiver() as receiver, socket.create_connection(_address(receiver.url), timeout=2) as idle:
        idle.sendall(b"POST /webhooks HTTP/1.1\r\n")  # and nothing more
        for _ in range(100):  # until the server has accepted it (its thread waits for the headers)
            if receiver._server and receiver._server.connections:  # type: ignore[union-attr]
                break
            threading.Event().wait(0.01)
    # Nothing complete arrived, so nothing was answered (a busy machine may log the cut request, unanswered); the
    # autouse fixture checks the thread is gone.
    assert all(r.status is None for r in receiver.received)


def test_exit_while_a_request_is_slow_leaves_no_thread() -> None:
    receiver = Receiver(behaviour="slow", delay=30)
    outcome: list[object] = []
    with receiver:
        client = threading.Thread(target=lambda: outcome.append(_attempt(receiver.url)))
        client.start()
        for _ in range(100):
            if receiver.received:
                break
            threading.Event().wait(0.01)
    client.join(timeout=5)
    assert not client.is_alive()
    assert receiver.received[0].status is None  # stopped while waiting: never answered
    assert isinstance(outcome[0], http.client.RemoteDisconnected | ConnectionResetError)


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or 0


def _attempt(url: str) -> object:
    try:
        return post(url, event(1), timeout=5)
    except Exception as error:
        return error


def test_the_clock_stamps_arrivals() -> None:
    clock = FixedClock(AT)
    with Receiver(clock=clock) as receiver:
        post(receiver.url)
        clock.advance(timedelta(seconds=7))
        post(receiver.url)
    assert [r.at for r in receiver.received] == [AT, AT + timedelta(seconds=7)]


def test_an_endpoint_that_was_down_comes_up_on_its_own_port() -> None:
    url = Receiver.down()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=0.5).close()
    with Receiver(port=urlsplit(url).port) as receiver:
        assert urlsplit(receiver.url).port == urlsplit(url).port
        socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=0.5).close()
    with pytest.raises(ValueError, match="port"):
        Receiver(port=70_000)
