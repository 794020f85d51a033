"""Which AWS API calls a test run makes, and the IAM permissions they need
(tests/unit/handlers/test_template_policies.py).

``observed_calls()`` hooks every botocore client created inside it (the package's boto3 clients, PynamoDB's
connections, Powertools' providers: all go through ``botocore.session.Session.create_client``) with a
``provide-client-params`` handler, which fires before moto answers, and records ``(service, operation, params)``
while recording is on. ``permissions(call)`` turns a call into the ``(iam action, resource ARN)`` pairs IAM
authorises it by (a ``TransactWriteItems`` is one ``PutItem``/``UpdateItem``/... per item, ``HeadObject`` is
``s3:GetObject``, a ``Query`` on an index is authorised on the index's ARN).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import botocore.session

ACCOUNT, REGION, PARTITION = "123456789012", "us-east-1", "aws"  # moto's default account


@dataclass(frozen=True)
class Call:
    service: str  # the IAM prefix (botocore's signing name): dynamodb, s3, lambda, kms, secretsmanager, ssm
    operation: str
    params: dict = field(hash=False, compare=False)


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)
    recording: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Fixtures written inside the block (seeding, uploads) are not the code under test."""
        self.recording = False
        try:
            yield
        finally:
            self.recording = True


@contextmanager
def observed_calls(*, intercept: Callable[[Call], Any] | None = None) -> Iterator[Recorder]:
    """Record the calls of every botocore client created inside the block. ``intercept(call)`` may return a
    parsed response to answer a call without sending it (a ``before-call`` response, as botocore allows)."""
    recorder = Recorder()
    original = botocore.session.Session.create_client

    def record(params: dict, model: Any, **_: Any) -> None:
        if recorder.recording:
            with recorder._lock:
                call = Call(model.service_model.signing_name, model.name, dict(params))  # bodies may hold locks
                recorder.calls.append(call)

    def answer(model: Any, params: dict, **_: Any) -> Any:
        if intercept is None:
            return None
        parsed = intercept(Call(model.service_model.signing_name, model.name, params))
        return None if parsed is None else (mock.Mock(status_code=200), parsed)

    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)
        client.meta.events.register("provide-client-params", record)
        client.meta.events.register("before-call", answer)
        return client

    with mock.patch.object(botocore.session.Session, "create_client", create_client):
        yield recorder


def table_arn(name: str, index: str | None = None) -> str:
    arn = f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
    return f"{arn}/index/{index}" if index else arn


_TRANSACT = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem",
             "Get": "GetItem"}  # fmt: skip
_S3 = {"GetObject": "GetObject", "HeadObject": "GetObject", "PutObject": "PutObject",
       "CreateMultipartUpload": "PutObject", "UploadPart": "PutObject", "CompleteMultipartUpload": "PutObject",
       "AbortMultipartUpload": "AbortMultipartUpload"}  # fmt: skip


def permissions(call: Call) -> list[tuple[str, str]]:
    """The (action, resource ARN) pairs IAM checks for ``call``."""
    p, op = call.params, call.operation
    if call.service == "dynamodb":
        if op in ("BatchGetItem", "BatchWriteItem"):
            return [(f"dynamodb:{op}", table_arn(name)) for name in p["RequestItems"]]
        if op in ("TransactWriteItems", "TransactGetItems"):
            return [(f"dynamodb:{_TRANSACT[kind]}", table_arn(body["TableName"]))
                    for item in p["TransactItems"] for kind, body in item.items()]  # fmt: skip
        return [(f"dynamodb:{op}", table_arn(p["TableName"], p.get("IndexName")))]
    if call.service == "s3":
        if op in ("ListObjectsV2", "ListObjects"):
            return [("s3:ListBucket", f"arn:{PARTITION}:s3:::{p['Bucket']}")]
        if op == "CopyObject":
            source = p["CopySource"] if isinstance(p["CopySource"], str) else "{Bucket}/{Key}".format(**p["CopySource"])
            return [("s3:GetObject", f"arn:{PARTITION}:s3:::{source}"),
                    ("s3:PutObject", f"arn:{PARTITION}:s3:::{p['Bucket']}/{p['Key']}")]  # fmt: skip
        return [(f"s3:{_S3[op]}", f"arn:{PARTITION}:s3:::{p['Bucket']}/{p['Key']}")]
    if call.service == "lambda" and op == "Invoke":
        name = p["FunctionName"]
        arn = name if name.startswith("arn:") else f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{name}"
        return [("lambda:InvokeFunction", arn)]
    if call.service == "kms":
        key = p["KeyId"]
        arn = key if key.startswith("arn:") else f"arn:{PARTITION}:kms:{REGION}:{ACCOUNT}:key/{key}"
        return [(f"kms:{op}", arn)]
    if call.service == "secretsmanager":
        return [
            (f"secretsmanager:{op}", f"arn:{PARTITION}:secretsmanager:{REGION}:{ACCOUNT}:secret:{p['SecretId']}-AbCdEf")
        ]
    if call.service == "ssm":
        return [(f"ssm:{op}", f"arn:{PARTITION}:ssm:{REGION}:{ACCOUNT}:parameter/{p['Name'].lstrip('/')}")]
    raise AssertionError(f"no IAM mapping for {call.service}:{op}: add one before the code may call it")
