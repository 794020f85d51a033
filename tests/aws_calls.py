"""Which AWS API calls a test run makes, and the IAM permissions they need
(tests/unit/handlers/test_template_policies.py).

``observed_calls()`` hooks every botocore client created inside it (the package's boto3 clients, PynamoDB's
connections, Powertools' providers: all go through ``botocore.session.Session.create_client``) with a
``provide-client-params`` handler, which fires before moto answers, and records ``(service, operation, params)``
while recording is on. ``permissions(call)`` turns a call into the ``(iam action, resource ARN)`` pairs IAM
authorises it by (a ``TransactWriteItems`` is one ``PutItem``/``UpdateItem``/... per item, ``HeadObject`` is
``s3:GetObject``, a ``Query`` on an index is authorised on the index's ARN, ``SendMessageBatch`` is
``sqs:SendMessage`` on the queue the URL names).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import botocore.loaders
import botocore.session

ACCOUNT, REGION, PARTITION = "123456789012", "us-east-1", "aws"  # moto's default account


@dataclass(frozen=True)
class Call:
    service: str  # the IAM prefix (botocore's signing name): dynamodb, s3, lambda, kms, secretsmanager, ssm, sqs
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
    parsed response to answer a call without sending it (a ``before-call`` response, as botocore allows), or
    ``(status, parsed)`` for an error response (status >= 300: the client raises it as a ``ClientError``)."""
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
        if parsed is None:
            return None
        status, parsed = parsed if isinstance(parsed, tuple) else (200, parsed)
        return mock.Mock(status_code=status), parsed

    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)
        client.meta.events.register("provide-client-params", record)
        client.meta.events.register("before-call", answer)
        return client

    # One data loader for every session made inside (Powertools and PynamoDB make their own): each would parse
    # botocore's service and endpoint JSON again, most of a flow's time on moto. What is recorded is unchanged.
    loaders: dict[Any, Any] = {}

    def create_loader(search_path_string: Any = None) -> Any:
        if search_path_string not in loaders:
            loaders[search_path_string] = botocore.loaders.create_loader(search_path_string)
        return loaders[search_path_string]

    with (
        mock.patch.object(botocore.session.Session, "create_client", create_client),
        mock.patch.object(botocore.session, "create_loader", create_loader),
    ):
        yield recorder


def table_arn(name: str, index: str | None = None) -> str:
    arn = f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
    return f"{arn}/index/{index}" if index else arn


_TRANSACT = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem",
             "Get": "GetItem"}  # fmt: skip
_S3 = {"GetObject": "GetObject", "HeadObject": "GetObject", "PutObject": "PutObject",
       "CreateMultipartUpload": "PutObject", "UploadPart": "PutObject", "CompleteMultipartUpload": "PutObject",
       "AbortMultipartUpload": "AbortMultipartUpload"}  # fmt: skip


# A batch call is authorised as its single call (SendMessageBatch is sqs:SendMessage, and so on).
_SQS = {"SendMessageBatch": "SendMessage", "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
        "DeleteMessageBatch": "DeleteMessage"}  # fmt: skip


def _queue_arn(url: str) -> str:
    """``https://sqs.<region>.<domain>/<account>/<name>`` -> the queue's ARN."""
    host, account, name = url.removeprefix("https://").split("/")
    return f"arn:{PARTITION}:sqs:{host.split('.')[1]}:{account}:{name}"


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
    if call.service == "sqs":
        if "QueueUrl" not in p:  # GetQueueUrl, CreateQueue: by name
            account = p.get("QueueOwnerAWSAccountId", ACCOUNT)
            return [(f"sqs:{op}", f"arn:{PARTITION}:sqs:{REGION}:{account}:{p['QueueName']}")]
        return [(f"sqs:{_SQS.get(op, op)}", _queue_arn(p["QueueUrl"]))]
    if call.service == "ssm":
        return [(f"ssm:{op}", f"arn:{PARTITION}:ssm:{REGION}:{ACCOUNT}:parameter/{p['Name'].lstrip('/')}")]
    raise AssertionError(f"no IAM mapping for {call.service}:{op}: add one before the code may call it")
