"""The embedded engine starts real server processes (moto; or dynalite with a moto server beside it for S3, KMS and
STS), answers, and never leaves a process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError

from payment_examples.core.aws import dynamodb
from payment_examples.core.config import Settings, get_settings
from payment_examples.core.errors import EngineError
from payment_examples.engine.local import MotoServer, ServerProcess, local_aws
from payment_examples.payments.service import PaymentService

pytestmark = pytest.mark.slow  # engine processes, threads, subprocesses: make test runs it, make test-fast does not


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


@pytest.mark.parametrize("kind", ["moto", "dynalite"])
@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_processes_are_stopped_when_the_body_raises(kind: str, error: BaseException) -> None:
    engine = local_aws(Settings(engine=kind), create_tables=False)
    with pytest.raises(type(error)), engine:
        processes = [server.process for server in engine.servers]
        assert len(processes) == {"moto": 1, "dynalite": 2}[kind]
        raise error
    assert all(process.poll() is not None for process in processes)
    assert engine.servers == [] and engine.server is None


def test_dynalite_engine_is_dynalite_for_dynamodb_and_a_moto_server_for_s3_kms_and_sts() -> None:
    from payment_examples.core.aws import client
    from payment_examples.encryption.customers import CustomerService

    engine = local_aws(Settings(engine="dynalite", table_prefix="whole-"))
    with engine as endpoint:
        settings = get_settings()
        services = engine.services_endpoint_url
        assert [server.name for server in engine.servers] == ["dynalite", "moto"]
        assert services.startswith("http://127.0.0.1:") and services != endpoint
        assert (settings.endpoint_url, settings.aws_endpoint_url) == (endpoint, services)
        # DynamoDB is dynalite's: the tables are there, not on the moto server
        assert "whole-payments" in dynamodb().list_tables()["TableNames"]
        on_moto = boto3.client("dynamodb", endpoint_url=services, region_name="us-east-1").list_tables()
        assert "whole-payments" not in on_moto["TableNames"]
        # S3, KMS and STS answer on the moto server
        s3 = client("s3")
        assert s3.meta.endpoint_url == services
        s3.create_bucket(Bucket="whole-bucket")
        s3.put_object(Bucket="whole-bucket", Key="k", Body=b"settlement")
        assert s3.get_object(Bucket="whole-bucket", Key="k")["Body"].read() == b"settlement"
        assert client("sts").get_caller_identity()["Account"].isdigit()
        # the engine made its KMS key and field keys, so field encryption works on dynalite too
        assert settings.kms_key_id and settings.field_keys and settings.audit_key
        assert client("kms").describe_key(KeyId=settings.kms_key_id)["KeyMetadata"]["Enabled"]
        customers = CustomerService(settings)
        created = customers.create_customer("merchant-1", "Ada@Example.com", actor="test")
        found = customers.find_customer_by_email("merchant-1", "ada@example.com", actor="test", purpose="support")
        assert found is not None and found.id == created.id
        processes = [server.process for server in engine.servers]
        assert all(process.poll() is None for process in processes)
        assert engine.description == "dynalite (DynamoDB) + local moto server (S3, KMS, STS)"
    assert all(process.poll() is not None for process in processes), "a server process outlived the with-block"


@pytest.mark.parametrize("fail", ["moto server start", "KMS key"])
def test_dynalite_is_stopped_when_the_engine_beside_it_cannot_start(monkeypatch: pytest.MonkeyPatch, fail: str) -> None:
    launched: list[subprocess.Popen] = []
    real_launch = ServerProcess.launch

    def launch(self: ServerProcess) -> None:
        real_launch(self)
        launched.append(self.process)

    monkeypatch.setattr(ServerProcess, "launch", launch)
    if fail == "moto server start":  # the moto server's child dies at once
        monkeypatch.setattr(MotoServer, "command", lambda self: [sys.executable, "-c", "raise SystemExit(3)"])
        expected: type[BaseException] = EngineError
    else:  # both answer, then creating the engine's KMS key fails
        import payment_examples.engine.local

        def no_kms(settings: Settings) -> str:
            raise RuntimeError("KMS is down")

        monkeypatch.setattr(payment_examples.engine.local, "create_kms_key", no_kms)
        expected = RuntimeError
    engine = local_aws(Settings(engine="dynalite"), create_tables=False)
    before = get_settings()
    with pytest.raises(expected):
        engine.start()
    assert len(launched) == 2
    assert all(_gone(process.pid) for process in launched), "a process outlived the failed start"
    assert engine.servers == [] and get_settings() == before


@pytest.mark.parametrize("server_class", ["MotoServer", "DynaliteServer"])
def test_child_exits_when_its_parent_is_killed(server_class: str) -> None:
    script = (
        f"from payment_examples.engine.local import {server_class}\n"
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


@pytest.mark.parametrize("kind", ["moto", "dynalite"])
def test_children_exit_when_their_parent_exits_without_stopping_them(kind: str) -> None:
    script = (
        "from payment_examples.core.config import Settings\n"
        "from payment_examples.engine.local import local_aws\n"
        f"engine = local_aws(Settings(engine={kind!r}), create_tables=False); engine.start()\n"
        "print(*[server.process.pid for server in engine.servers], flush=True)\n"  # no engine.stop(): atexit must
    )
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert parent.returncode == 0, parent.stderr
    pids = [int(pid) for pid in parent.stdout.split()]
    assert len(pids) == {"moto": 1, "dynalite": 2}[kind]
    assert all(_gone(pid) for pid in pids)


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
        aws_endpoint_url=engine_session.aws_endpoint_url,  # dynalite: S3, KMS, STS on the moto server beside it
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    engine = local_aws(configured)
    with engine as endpoint:
        assert engine.server is None and engine.description == "configured endpoint / AWS"
        assert endpoint == engine_session.endpoint_url
        assert engine.services_endpoint_url == engine_session.endpoint_for("s3")
        pages = dynamodb().get_paginator("list_tables").paginate()  # the shared engine holds 100s of tables
        assert "configured-payments" in [name for page in pages for name in page["TableNames"]]


def _ctrl_c_as_in_a_terminal() -> None:
    # A shell that starts a job in the background hands it SIGINT ignored, and its children inherit that (Python
    # keeps an inherited SIG_IGN); these tests are about what Ctrl-C does in a terminal, so the child gets the
    # default disposition back whatever started pytest.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_cli_local_runs_in_the_foreground_until_interrupted() -> None:
    command = [sys.executable, "-m", "payment_examples.cli", "local"]
    cli = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_in_a_terminal)
    try:
        first = cli.stdout.readline()
        assert "embedded engine" in first and "http://127.0.0.1:" in first
        endpoint = first.split(" at ", 1)[1].strip()
        client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
        assert "payment-examples-payments" in client.list_tables()["TableNames"]
        lines = [cli.stdout.readline() for _ in range(4)]
        assert lines[-1].startswith("stream consumer running"), lines
        # a payment created through the package from another process is projected by the background consumer
        service = PaymentService(settings=Settings(endpoint_url=endpoint))
        payment = service.create_payment("m-local", "k-1", 1_000, "USD").payment
        deadline = time.monotonic() + 60  # a liveness bound, generous for a loaded 2-core machine
        while not service.audit_trail("m-local", payment.id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [e.action for e in service.audit_trail("m-local", payment.id)] == ["create"]
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=60) == 0  # a liveness bound, generous for a loaded 2-core machine
    finally:
        if cli.poll() is None:
            cli.kill()
    time.sleep(0.2)
    with pytest.raises(EndpointConnectionError):  # nothing listens any more
        boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1", config=_no_retries()).list_tables()


def test_cli_local_on_dynalite_prints_both_endpoints_and_stops_both() -> None:
    env = {**os.environ, "PAYMENT_ENGINE": "dynalite"}
    command = [sys.executable, "-m", "payment_examples.cli", "local"]
    cli = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=_ctrl_c_as_in_a_terminal)
    try:
        lines: list[str] = []
        while len(lines) < 6:  # the engine's JSON log lines (dynalite "cannot enable TTL") come first
            line = cli.stdout.readline()
            if not line.startswith("{"):
                lines.append(line)
        assert "dynalite (DynamoDB) at http://127.0.0.1:" in lines[0], lines
        assert "moto server (S3, KMS, STS) at http://127.0.0.1:" in lines[1], lines
        dynalite, moto = (line.split(" at ", 1)[1].strip() for line in lines[:2])
        assert f"AWS_ENDPOINT_URL_DYNAMODB={dynalite} AWS_ENDPOINT_URL={moto}" in lines[3], lines
        assert lines[5].startswith("no DynamoDB Streams on this engine"), lines
        ddb = boto3.client("dynamodb", endpoint_url=dynalite, region_name="us-east-1")
        assert "payment-examples-payments" in ddb.list_tables()["TableNames"]
        assert boto3.client("kms", endpoint_url=moto, region_name="us-east-1").list_keys()["Keys"]  # the field key
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=60) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
    time.sleep(0.2)
    for endpoint in (dynalite, moto):  # nothing listens on either any more
        with pytest.raises(EndpointConnectionError):
            boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1", config=_no_retries()).list_tables()


def _no_retries():
    from botocore.config import Config

    return Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1)


def test_environment_variables_select_the_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env({}).mode == "embedded"
    assert Settings.from_env({"AWS_ENDPOINT_URL": "http://localhost:8000"}).mode == "endpoint"
    assert Settings.from_env({"PAYMENT_USE_AWS": "1"}).mode == "aws"
    assert os.environ.get("PAYMENT_USE_AWS") is None  # tests never run against real AWS
