"""The embedded engine: local server *processes* that handle one request at a time.

moto in-process is not thread-safe (concurrent conditional writes were seen to succeed twice for one key), so
anything concurrent talks to a separate server process that serialises requests, like DynamoDB's own per-item
ordering does. ``local_aws()`` starts it on 127.0.0.1 (a free port chosen by the OS), waits until it answers,
points the package's clients and models at it, creates the tables, and always stops it: on exit from the block,
on an error or Ctrl-C in the block, at interpreter exit, and (the child watches its stdin) if the parent dies.

``PAYMENT_ENGINE=dynalite`` (or ``Settings(engine="dynalite")``) is the second whole engine: DynamoDB on dynalite
(from ``tools/dynalite``, installed by ``make setup``) and every other service (S3, KMS, STS) on a moto server
process started beside it, like AWS's service-specific endpoints (``AWS_ENDPOINT_URL_DYNAMODB`` for dynalite,
``AWS_ENDPOINT_URL`` for moto; ``Settings.endpoint_url`` and ``aws_endpoint_url``). dynalite's query costs scale
like DynamoDB's, so benchmarks judge query speed on it, and it lacks transactions, TTL and
``ReturnValuesOnConditionCheckFailure``, which exercises the fallbacks for real. Both processes start and stop
together, on every exit path above. dynalite has one account whatever the credentials, so ``local_accounts()``
keeps the accounts' tables on the moto server, which separates accounts (``accounts.py``).

On either engine ``local_aws()`` also makes, unless the settings give them, the fields' KMS key (on the moto
server) with random field keys, a random audit checkpoint key, and the simulated card processor; all live as long
as the engine. ``local_aws(jwt_secret=...)`` starts from the settings in force (the environment's, so
``PAYMENT_ENGINE`` chooses the engine) with some fields replaced; ``LocalAWS.description`` says what runs.

With a real endpoint or real AWS configured, ``local_aws()`` starts nothing and only ensures the tables exist.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from payment_examples.core import ConfigurationError, EngineError, Settings, get_settings, pop_settings, push_settings

HOST = "127.0.0.1"
LOCAL_ACCESS_KEY_ID = "testing"  # moto accepts any credentials; these map to its default account
LOCAL_SECRET_ACCESS_KEY = "testing"
_READY_PREFIX = "payment-examples-engine-ready "


# -- the child process -------------------------------------------------------------------------------------------


def serve(host: str = HOST, port: int = 0, *, watch_stdin: bool = False) -> None:
    """Run a single-threaded moto server in this process until killed (the child's entry point)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    from payment_examples.engine import moto_speedups

    moto_speedups.install()  # what grows with the table in moto: a key Query, the table sort, a transaction
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(host, port, app, threaded=False, processes=1)  # one request at a time
    if watch_stdin:
        # The parent holds our stdin open; EOF means it is gone (even if it was SIGKILLed), so stop too.
        threading.Thread(target=_exit_on_stdin_eof, daemon=True).start()
    print(f"{_READY_PREFIX}{server.server_port}", flush=True)
    server.serve_forever()


def _exit_on_stdin_eof() -> None:
    while sys.stdin.buffer.read(1024):
        pass
    os._exit(0)


# -- the parent side ---------------------------------------------------------------------------------------------

_running: weakref.WeakSet[ServerProcess] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.stop()


class ServerProcess:
    """One engine child process. ``start()`` returns its endpoint URL; ``stop()`` is idempotent."""

    name = "engine"

    def __init__(self, *, host: str = HOST, startup_timeout: float = 60.0) -> None:
        self.host = host
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoint_url: str | None = None
        self._stderr = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> str:
        self.launch()
        return self.wait_ready()

    def launch(self) -> None:
        """Start the child process without waiting for it (``wait_ready`` does): engines start side by side."""
        if self.process is not None:
            raise EngineError(f"this {self.name} server was already started")
        command = self.command()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,  # the child exits when this pipe closes, i.e. when we are gone
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,  # a terminal's Ctrl-C reaches the parent, which then stops us cleanly
        )
        _running.add(self)

    def wait_ready(self) -> str:
        """Wait until the launched child answers; its endpoint URL. On failure it is stopped and the error raised."""
        try:
            port = self._read_port()
            self.endpoint_url = f"http://{self.host}:{port}"
            self._wait_until_answering()
        except BaseException:
            self.stop()
            raise
        return self.endpoint_url

    def _read_port(self) -> int:
        assert self.process is not None and self.process.stdout is not None
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.startup_timeout)
        line = result[0].decode(errors="replace").strip() if result else ""
        if not line.startswith(_READY_PREFIX):
            raise EngineError(f"the {self.name} server did not start: {line or 'no answer'}\n{self._stderr_tail()}")
        return int(line.removeprefix(_READY_PREFIX))

    def _wait_until_answering(self) -> None:
        import boto3

        client = boto3.client(
            "dynamodb",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=LOCAL_ACCESS_KEY_ID,
            aws_secret_access_key=LOCAL_SECRET_ACCESS_KEY,
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                client.list_tables(Limit=1)
                return
            except Exception as error:  # connection refused while it binds, or a slow first import
                if self.process is None or self.process.poll() is not None or time.monotonic() > deadline:
                    raise EngineError(
                        f"the local {self.name} server does not answer: {error}\n{self._stderr_tail()}"
                    ) from None
                time.sleep(0.05)

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        process, self.process = self.process, None
        _running.discard(self)
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


class MotoServer(ServerProcess):
    """moto's server (every AWS service moto has), single-threaded: one request at a time."""

    name = "moto"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "payment_examples.engine.local", "--serve", "--host", self.host, "--port", "0"]


DYNALITE_DIR = Path(__file__).resolve().parents[2] / "tools" / "dynalite"


class DynaliteServer(ServerProcess):
    """dynalite (DynamoDB only, in memory), from ``tools/dynalite`` with the node that ``make setup`` installs.
    The dynalite engine runs a ``MotoServer`` beside it for every other service."""

    name = "dynalite"

    def command(self) -> list[str]:
        node = Path(sys.executable).with_name("node")
        node_path = str(node) if node.exists() else shutil.which("node")
        script = DYNALITE_DIR / "serve.js"
        if node_path is None or not (DYNALITE_DIR / "node_modules" / "dynalite").is_dir():
            raise EngineError(f"dynalite is not installed: run `make setup` (needs node and {DYNALITE_DIR})")
        return [node_path, str(script)]


ENGINES: dict[str, type[ServerProcess]] = {"moto": MotoServer, "dynalite": DynaliteServer}


ENGINE_LABELS = {"moto": "moto server", "dynalite": "dynalite"}  # short names for tables and charts


def other_engine(engine: str) -> str:
    """The embedded engine that is not ``engine`` (notebooks compare the one in force with the other)."""
    return "dynalite" if engine == "moto" else "moto"


DESCRIPTIONS = {  # what each engine runs, as notebooks print it
    "moto": "local moto server process",
    "dynalite": "dynalite (DynamoDB) + local moto server (S3, KMS, STS)",
}


class LocalAWS:
    """``with local_aws() as endpoint:``; notebooks may call ``start()`` and ``stop()`` across cells instead."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        create_tables: bool = True,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self._base = settings
        self._overrides = dict(overrides or {})
        self._create_tables = create_tables
        self.servers: list[ServerProcess] = []  # DynamoDB's first, then the other services' (dynalite only)
        self.settings: Settings | None = None

    @property
    def server(self) -> ServerProcess | None:
        """The process serving DynamoDB (None when nothing local runs, or after ``stop()``)."""
        return self.servers[0] if self.servers else None

    @property
    def endpoint_url(self) -> str | None:
        """DynamoDB's endpoint."""
        return self.settings.endpoint_url if self.settings else None

    @property
    def services_endpoint_url(self) -> str | None:
        """The endpoint of every other service (S3, KMS, STS): the moto server beside dynalite, else DynamoDB's."""
        return self.settings.endpoint_for("s3") if self.settings else None

    @property
    def description(self) -> str:
        """What runs: e.g. "local moto server process", or "configured endpoint / AWS" when nothing local does."""
        if not self.servers or self.settings is None:
            return "configured endpoint / AWS"
        return DESCRIPTIONS[self.settings.engine]

    def start(self) -> str | None:
        from payment_examples.tables.models import create_tables

        if self.settings is not None:
            raise EngineError("local_aws() is already started")
        base = self._base or get_settings()
        if self._overrides:
            base = dataclasses.replace(base, **self._overrides)
        if base.mode == "embedded":
            try:
                settings = self._start_servers(base)
            except BaseException:
                self._stop_servers()
                raise
        else:
            settings = base  # a real endpoint or AWS: start nothing
        push_settings(settings)
        self.settings = settings
        try:
            if self._create_tables:
                create_tables(settings)
        except BaseException:
            self.stop()
            raise
        return settings.endpoint_url

    def _start_servers(self, base: Settings) -> Settings:
        """Start the engine's processes side by side (dynalite: dynalite and a moto server) and wait for both."""
        self.servers = [ENGINES[base.engine]()]
        if base.engine != "moto":
            self.servers.append(MotoServer())  # S3, KMS, STS: every service but DynamoDB
        for server in self.servers:
            server.launch()
        endpoints = [server.wait_ready() for server in self.servers]
        settings = base.with_endpoint(
            endpoints[0],
            aws_endpoint_url=endpoints[-1],
            access_key_id=LOCAL_ACCESS_KEY_ID,
            secret_access_key=LOCAL_SECRET_ACCESS_KEY,
        )
        settings = _with_audit_key(settings)
        if settings.processor is None:  # the simulated card processor, its ledger in the engine
            settings = dataclasses.replace(settings, processor="local")
        return _with_field_keys(settings)  # KMS is the moto server's on both engines

    def _stop_servers(self) -> None:
        servers, self.servers = self.servers, []
        try:
            for server in servers[1:]:
                server.stop()
        finally:
            if servers:
                servers[0].stop()

    def stop(self) -> None:
        if self.settings is not None:
            pop_settings(self.settings)
            self.settings = None
        self._stop_servers()

    def __enter__(self) -> str | None:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _with_audit_key(settings: Settings) -> Settings:
    """Unless given, a random audit checkpoint key that lives as long as the engine does (never a default)."""
    import dataclasses
    import secrets

    if settings.audit_key or settings.audit_kms_key_id:
        return settings
    return dataclasses.replace(settings, audit_key=secrets.token_urlsafe(32))


def create_kms_key(settings: Any) -> str:
    """The ARN of the fields' KMS key on ``settings``' endpoint (alias ``alias/<table prefix>fields``), created
    if missing: provisioning, like the tables, so the engine's and not the encryption pattern's. Not for real
    accounts: there the key is managed outside and named by ``PAYMENT_KMS_KEY_ID``."""
    from payment_examples.core.aws import client

    if settings.mode == "aws":
        raise ConfigurationError("on AWS the KMS key is not created here: set PAYMENT_KMS_KEY_ID")
    kms = client("kms", settings)
    alias = f"alias/{settings.table_prefix}fields".replace(".", "-")
    for page in kms.get_paginator("list_aliases").paginate():
        for entry in page["Aliases"]:
            if entry["AliasName"] == alias and entry.get("TargetKeyId"):
                return kms.describe_key(KeyId=entry["TargetKeyId"])["KeyMetadata"]["Arn"]
    arn = kms.create_key(Description="payment_examples field encryption")["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName=alias, TargetKeyId=arn)
    return arn


def _with_field_keys(settings: Settings) -> Settings:
    """The embedded engine's KMS key (created in the engine) and, unless given, random field keys that live as long
    as the engine does (never a built-in default)."""
    import base64
    import dataclasses
    import secrets

    field_keys = settings.field_keys or f"local:{base64.b64encode(secrets.token_bytes(32)).decode()}"
    return dataclasses.replace(
        settings, kms_key_id=settings.kms_key_id or create_kms_key(settings), field_keys=field_keys
    )


def local_aws(settings: Settings | None = None, *, create_tables: bool = True, **overrides: Any) -> LocalAWS:
    """The embedded engine as a context manager yielding DynamoDB's endpoint URL (None when real AWS is configured).

    ``settings`` default to those in force (the environment's: ``PAYMENT_ENGINE`` chooses the engine); keyword
    ``overrides`` replace some of their fields, e.g. ``local_aws(jwt_secret=...)``."""
    return LocalAWS(settings, create_tables=create_tables, overrides=overrides)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="internal: the embedded engine's child process")
    parser.add_argument("--serve", action="store_true", required=True)
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    serve(args.host, args.port, watch_stdin=True)
