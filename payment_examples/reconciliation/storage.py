"""Where a settlement file comes from (``S3Source``, ``LocalSource``: a ranged read from any byte offset) and where
its reports go (``S3ReportSink``, ``LocalReportSink``)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from botocore.exceptions import ClientError

from payment_examples.core import client as aws_client
from payment_examples.core import name_based_id
from payment_examples.reconciliation.run_store import SettlementFile


class SettlementSource(Protocol):
    file: SettlementFile
    layout: str | None
    merchant: str | None

    def open(self, offset: int) -> BinaryIO: ...


@dataclass
class S3Source:
    bucket: str
    key: str
    etag: str
    client: Any = None
    layout: str | None = None  # None: detected from the file's first record
    merchant: str | None = None  # the file's merchant, for layouts whose rows may not name one

    def __post_init__(self) -> None:
        self.etag = self.etag.strip('"')
        self.file = SettlementFile.for_s3(self.bucket, self.key, self.etag)

    def open(self, offset: int) -> BinaryIO:
        client = self.client or aws_client("s3")
        request = {"Bucket": self.bucket, "Key": self.key, "IfMatch": f'"{self.etag}"'}
        if offset:
            request["Range"] = f"bytes={offset}-"
        try:
            return client.get_object(**request)["Body"]
        except ClientError as error:
            if error.response["Error"]["Code"] == "InvalidRange":
                return io.BytesIO(b"")  # the checkpoint is at the end of the object
            raise


@dataclass
class LocalSource:
    """A settlement file on disk; its identity is its content's SHA-256 (read once, streamed)."""

    path: str
    layout: str | None = None  # None: detected from the file's first record
    merchant: str | None = None  # the file's merchant, for layouts whose rows may not name one

    def __post_init__(self) -> None:
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        self.file = SettlementFile(name_based_id("settlement-file", "local", digest.hexdigest()), str(self.path))

    def open(self, offset: int) -> BinaryIO:
        handle = open(self.path, "rb")  # noqa: SIM115 (closed by the run)
        handle.seek(offset)
        return handle


class ReportSink(Protocol):
    def write(self, name: str, body: BinaryIO, content_type: str) -> str: ...

    def read(self, name: str) -> bytes: ...


@dataclass
class S3ReportSink:
    bucket: str
    prefix: str
    client: Any = None

    def write(self, name: str, body: BinaryIO, content_type: str) -> str:
        key = f"{self.prefix}{name}"
        client = self.client or aws_client("s3")
        client.upload_fileobj(body, self.bucket, key, ExtraArgs={"ContentType": content_type})
        return f"s3://{self.bucket}/{key}"

    def read(self, name: str) -> bytes:
        client = self.client or aws_client("s3")
        return client.get_object(Bucket=self.bucket, Key=f"{self.prefix}{name}")["Body"].read()


@dataclass
class LocalReportSink:
    directory: str

    def write(self, name: str, body: BinaryIO, content_type: str) -> str:
        target = Path(self.directory) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            while chunk := body.read(1 << 20):
                handle.write(chunk)
        return str(target)

    def read(self, name: str) -> bytes:
        return (Path(self.directory) / name).read_bytes()
