"""The embedded engine starts a real server process, answers, and never leaves that process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from botocore.exceptions import EndpointConnectionError

from payment_examples.aws import dynamodb
from payment_examples.config import Settings, get_settings
from payment_examples.errors import EngineError
from payment_examples.local import MotoServer, local_aws


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """True once ``pid`` no longer exists (or is a zombie nobody waits for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(") ", 1)[1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("kind", ["moto", "dynalite"])
def test_local_aws_serves_tables_and_stops_its_process(kind: str) -> None:
    engine = local_aws(Settings(table_prefix="engine-", engine=kind))
    with engine as endpoint:
        assert endpoint is not None and endpoint.startswith("http://127.0.0.1:")
        assert get_settings().endpoint_url == endpoint  # the package now points at it
        tables = dynamodb().list_tables()["TableNames"]
        assert "engine-payments" in tables and "engine-idempotency" in tables
        process = engine.server.process
        assert process.poll() is None
    assert process.poll() is not None, "the server process outlived the with-block"
    assert get_settings().endpoint_url != endpoint  # previous settings restored


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_process_is_stopped_when_the_body_raises(error: BaseException) -> None:
    engine = local_aws(Settings(), create_tables=False)
    with pytest.raises(type(error)), engine:
        process = engine.server.process
        raise error
    assert process.poll() is not None


@pytest.mark.parametrize("server_class", ["MotoServer", "DynaliteServer"])
def test_child_exits_when_its_parent_is_killed(server_class: str) -> None:
    script = (
        f"from payment_examples.local import {server_class}\n"
        f"server = {server_class}(); server.start()\n"
        "print(server.process.pid, flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        assert not _gone(child_pid, timeout=0.2)
    finally:
        parent.send_signal(signal.SIGKILL)  # no atexit, no finally: only the stdin watch can save us
        parent.wait()
    assert _gone(child_pid), "the moto server process survived its killed parent"


def test_child_exits_when_its_parent_exits_without_stopping_it() -> None:
    script = (
        "from payment_examples.local import local_aws\n"
        "engine = local_aws(create_tables=False); engine.start()\n"
        "print(engine.server.process.pid, flush=True)\n"  # and exit without engine.stop(): atexit must do it
    )
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert parent.returncode == 0, parent.stderr
    assert _gone(int(parent.stdout))


def test_stop_is_idempotent_and_restart_is_refused() -> None:
    server = MotoServer()
    server.start()
    pid = server.process.pid
    server.stop()
    server.stop()
    assert _gone(pid)
    with pytest.raises(EngineError, match="already started"):
        engine = local_aws(Settings(), create_tables=False)
        engine.start()
        try:
            engine.start()
        finally:
            engine.stop()


def test_configured_endpoint_starts_nothing_and_only_creates_tables(engine_session: Settings) -> None:
    configured = Settings(
        table_prefix="configured-",
        endpoint_url=engine_session.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    engine = local_aws(configured)
    with engine as endpoint:
        assert engine.server is None
        assert endpoint == engine_session.endpoint_url
        pages = dynamodb().get_paginator("list_tables").paginate()  # the shared engine holds 100s of tables
        assert "configured-payments" in [name for page in pages for name in page["TableNames"]]


def test_cli_local_runs_in_the_foreground_until_interrupted() -> None:
    cli = subprocess.Popen([sys.executable, "-m", "payment_examples.cli", "local"], stdout=subprocess.PIPE, text=True)
    try:
        first = cli.stdout.readline()
        assert "embedded engine" in first and "http://127.0.0.1:" in first
        endpoint = first.split(" at ", 1)[1].strip()
        import boto3

        client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
        assert "payment-examples-payments" in client.list_tables()["TableNames"]
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=60) == 0  # a liveness bound, generous for a loaded 2-core machine
    finally:
        if cli.poll() is None:
            cli.kill()
    time.sleep(0.2)
    with pytest.raises(EndpointConnectionError):  # nothing listens any more
        boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1", config=_no_retries()).list_tables()


def _no_retries():
    from botocore.config import Config

    return Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1)


def test_environment_variables_select_the_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env({}).mode == "embedded"
    assert Settings.from_env({"AWS_ENDPOINT_URL": "http://localhost:8000"}).mode == "endpoint"
    assert Settings.from_env({"PAYMENT_USE_AWS": "1"}).mode == "aws"
    assert os.environ.get("PAYMENT_USE_AWS") is None  # tests never run against real AWS
