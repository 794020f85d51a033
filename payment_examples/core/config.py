"""Settings: the only module that reads environment variables.

Settings are read once (``get_settings()``), are immutable, and are passed to whatever needs them. The embedded
engine (``payment_examples.engine.local.local_aws``) installs settings that point at its own endpoint for the duration
of its ``with`` block; ``use_settings`` is the same mechanism for tests.

Three ways to run, chosen by the environment:

* embedded (default): nothing is configured; ``local_aws()`` starts a local moto server process.
* endpoint: ``AWS_ENDPOINT_URL_DYNAMODB`` or ``AWS_ENDPOINT_URL`` is set; everything talks to that endpoint. With
  both set, DynamoDB talks to the first and every other service (S3, KMS, STS) to the second, as boto3 does.
* aws: ``PAYMENT_USE_AWS=1``; the standard credential chain and region are used and nothing local starts.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlparse

from payment_examples.core.errors import ConfigurationError

Mode = Literal["embedded", "endpoint", "aws"]

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{0,64}$")
_TRUE = {"1", "true", "yes", "on"}
ENGINES = ("moto", "dynalite")
PROCESSORS = (None, "local")
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    """Where the data lives and what the tables are called. Hashable: clients and models are cached per value."""

    region: str = "us-east-1"
    table_prefix: str = "payment-examples-"
    endpoint_url: str | None = None  # DynamoDB's endpoint (and every service's, unless aws_endpoint_url is set)
    aws_endpoint_url: str | None = None  # S3, KMS, STS... when they live elsewhere (dynalite + the moto server)
    use_aws: bool = False
    engine: str = "moto"  # the embedded engine: "moto" (default) or "dynalite" (DynamoDB; S3, KMS, STS on moto)
    # Explicit credentials (the embedded engine uses dummy ones); None means boto3's standard chain.
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)  # temporary credentials (accounts.py)
    # Request authentication (auth.py): HS256 secret and/or an RS256/ES256 public key (PEM); never a default.
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key: str | None = field(default=None, repr=False)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    # HMAC key that signs pagination cursors (pagination.py); no key -> no cursors are issued.
    cursor_secret: str | None = field(default=None, repr=False)
    # Settlement reconciliation (reconciliation.py, handlers/reconcile.py).
    recon_report_prefix: str = "reconciliation-reports/"  # S3 prefix of the reports, in the input's bucket
    recon_safety_ms: int = 10_000  # stop and checkpoint when a Lambda has less time left than this
    recon_grace_days: int = 2  # captured payments younger than this at the file's end are not missing_in_file
    # Where settlement files arrive: a key "<prefix><merchant>/<name>" names the file's merchant (for reports whose
    # rows may not: a Stripe report without connected_account_id).
    recon_settlement_prefix: str = "settlements/"
    # Files larger than this go to the Step Functions state machine (Distributed Map, distributed.py) when one is
    # configured; smaller ones, or all of them without one, are reconciled by the function itself. 0: always.
    recon_distributed_bytes: int = 64 * 1024 * 1024
    recon_state_machine_arn: str | None = None
    recon_rows_per_range: int = 10_000  # rows per range the plan cuts a distributed file into
    # Where a continuation that could not be invoked is parked (the failure queue of the reconcile function): a
    # re-drive of its message continues the file from its checkpoint.
    recon_failure_queue_url: str | None = None
    # Field encryption (encryption.py, customers.py): the KMS key that wraps data keys, and the versioned roots of
    # the keyed hashes (blind index, card fingerprint, field signatures): "v1:<base64>,v2:<base64>", at least 32
    # bytes each; the current version (default: the last) signs and indexes new writes.
    kms_key_id: str | None = None
    kms_previous_key_ids: tuple[str, ...] = ()  # still decrypt during a key rotation (PAYMENT_KMS_PREVIOUS_KEY_IDS)
    field_keys: str | None = field(default=None, repr=False)
    field_key_version: str | None = None
    # Audit checkpoints (utils/audit.py): the HMAC key that signs chain heads (at least 32 bytes), or an HMAC KMS
    # key that does (GenerateMac; preferred: the key never leaves KMS).
    audit_key: str | None = field(default=None, repr=False)
    audit_kms_key_id: str | None = None
    # The card processor the process handler authorises through (processor.py): "local" (the simulated processor,
    # the embedded engine's default) or None (none configured: a request with a payment_method is refused).
    processor: str | None = None
    # Processor notifications (POST /processor/events): the secret they are signed with (from the secret, deployed)
    # and how old a signature's timestamp may be.
    processor_webhook_secret: str | None = field(default=None, repr=False)
    processor_webhook_tolerance_s: int = 300
    # Merchant webhooks (webhooks/): the delivery queue (SQS FIFO) and its dead letters; locally None: the queues
    # named after the table prefix on the engine (webhooks.queues). Attempts per delivery, the backoff between them
    # (base * 2**(attempt-1) seconds, capped, with jitter) and each attempt's HTTP timeout.
    webhook_queue_url: str | None = None
    webhook_dead_letter_queue_url: str | None = None
    webhook_max_attempts: int = 5
    webhook_backoff_base_s: float = 30.0
    webhook_backoff_cap_s: float = 900.0
    webhook_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.region or not re.fullmatch(r"[a-z0-9-]+", self.region):
            raise ConfigurationError(f"region {self.region!r} is not a valid AWS region name")
        if not _PREFIX_RE.fullmatch(self.table_prefix):
            raise ConfigurationError(
                f"PAYMENT_TABLE_PREFIX {self.table_prefix!r} must be at most 64 characters of "
                "letters, digits, '_', '-' or '.'"
            )
        for endpoint in (self.endpoint_url, self.aws_endpoint_url):
            if endpoint is not None:
                url = urlparse(endpoint)
                if url.scheme not in ("http", "https") or not url.netloc:
                    raise ConfigurationError(f"endpoint URL {endpoint!r} must be an http(s) URL")
        if self.aws_endpoint_url is not None and self.endpoint_url is None:
            raise ConfigurationError(f"the services' endpoint {self.aws_endpoint_url!r} needs DynamoDB's endpoint too")
        if self.jwt_secret is not None and len(self.jwt_secret.encode()) < 32:
            raise ConfigurationError("PAYMENT_JWT_SECRET must be at least 32 bytes (RFC 7518 3.2: HS256 key size)")
        if self.cursor_secret is not None and len(self.cursor_secret.encode()) < 32:
            raise ConfigurationError("PAYMENT_CURSOR_SECRET must be at least 32 bytes")
        if self.engine not in ENGINES:
            raise ConfigurationError(f"PAYMENT_ENGINE {self.engine!r} must be one of {', '.join(ENGINES)}")
        if not 0 < len(self.recon_report_prefix) <= 512 or self.recon_report_prefix.startswith("/"):
            raise ConfigurationError("PAYMENT_RECON_REPORT_PREFIX must be 1-512 characters, not starting with '/'")
        if self.recon_safety_ms < 0:
            raise ConfigurationError("PAYMENT_RECON_SAFETY_MS must not be negative")
        if not 0 <= self.recon_grace_days <= 366:
            raise ConfigurationError("PAYMENT_RECON_GRACE_DAYS must be between 0 and 366")
        if self.recon_distributed_bytes < 0:
            raise ConfigurationError("PAYMENT_RECON_DISTRIBUTED_BYTES must not be negative")
        if not 1 <= self.recon_rows_per_range <= 10_000_000:
            raise ConfigurationError("PAYMENT_RECON_ROWS_PER_RANGE must be between 1 and 10000000")
        if self.field_keys is not None:
            # The format of versioned keys, not the keyring: encryption.fields.Keyring.parse builds on the same
            # function, so the core refuses what the keyring would refuse without importing the pattern.
            parse_key_versions(self.field_keys, self.field_key_version)
        elif self.field_key_version is not None:
            raise ConfigurationError("PAYMENT_FIELD_KEY_VERSION is set but PAYMENT_FIELD_KEYS is not")
        if self.audit_key is not None and len(self.audit_key.encode()) < 32:
            raise ConfigurationError("PAYMENT_AUDIT_KEY must be at least 32 bytes")
        if self.processor not in PROCESSORS:
            raise ConfigurationError(f"PAYMENT_PROCESSOR {self.processor!r} must be 'local' or unset")
        if self.use_aws and (self.endpoint_url or self.aws_endpoint_url):
            raise ConfigurationError("PAYMENT_USE_AWS=1 and an endpoint URL are both set; choose one")
        if self.processor_webhook_secret is not None and len(self.processor_webhook_secret.encode()) < 32:
            raise ConfigurationError("PAYMENT_PROCESSOR_WEBHOOK_SECRET must be at least 32 bytes")
        if not 1 <= self.processor_webhook_tolerance_s <= 86_400:
            raise ConfigurationError("PAYMENT_PROCESSOR_WEBHOOK_TOLERANCE_S must be between 1 and 86400")
        if not 1 <= self.webhook_max_attempts <= 100:
            raise ConfigurationError("PAYMENT_WEBHOOK_MAX_ATTEMPTS must be between 1 and 100")
        if not 0 <= self.webhook_backoff_base_s <= self.webhook_backoff_cap_s <= 43_200:
            raise ConfigurationError(
                "PAYMENT_WEBHOOK_BACKOFF_BASE_S and _CAP_S must satisfy 0 <= base <= cap <= 43200 (SQS's longest "
                "visibility timeout)"
            )
        if not 0 < self.webhook_timeout_s <= 60:
            raise ConfigurationError("PAYMENT_WEBHOOK_TIMEOUT_S must be above 0 and at most 60")

    @property
    def mode(self) -> Mode:
        if self.use_aws:
            return "aws"
        return "endpoint" if self.endpoint_url else "embedded"

    def endpoint_for(self, service: str) -> str | None:
        """The endpoint of ``service`` (a boto3 service name): DynamoDB's, or that of every other service."""
        if service in ("dynamodb", "dynamodbstreams"):
            return self.endpoint_url
        return self.aws_endpoint_url or self.endpoint_url

    def table_name(self, base: str) -> str:
        return f"{self.table_prefix}{base}"

    def with_endpoint(
        self,
        endpoint_url: str,
        *,
        access_key_id: str,
        secret_access_key: str,
        aws_endpoint_url: str | None = None,
    ) -> Settings:
        """These settings on a local endpoint (``aws_endpoint_url``: the other services', if not the same one)."""
        return replace(
            self,
            endpoint_url=endpoint_url,
            aws_endpoint_url=None if aws_endpoint_url == endpoint_url else aws_endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, secrets_provider: Any = None) -> Settings:
        """The settings the environment describes; with ``PAYMENT_SECRETS_ID`` (Secrets Manager) or
        ``PAYMENT_SECRETS_PARAMETER`` (SSM SecureString) set, the secret settings are read from there
        (``secrets.py``; ``secrets_provider`` replaces Powertools' provider in tests)."""
        env = os.environ if environ is None else environ
        use_aws_raw = env.get("PAYMENT_USE_AWS", "").strip().lower()
        if use_aws_raw not in _TRUE | _FALSE:
            raise ConfigurationError(f"PAYMENT_USE_AWS={use_aws_raw!r}: use 1/0, true/false, yes/no or on/off")
        settings = cls(
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            table_prefix=env.get("PAYMENT_TABLE_PREFIX", "payment-examples-"),
            endpoint_url=env.get("AWS_ENDPOINT_URL_DYNAMODB") or env.get("AWS_ENDPOINT_URL") or None,
            # Both set: boto3's rule, the service-specific variable wins for DynamoDB, the generic one is the rest's.
            aws_endpoint_url=(env.get("AWS_ENDPOINT_URL") or None) if env.get("AWS_ENDPOINT_URL_DYNAMODB") else None,
            use_aws=use_aws_raw in _TRUE,
            engine=env.get("PAYMENT_ENGINE") or "moto",
            jwt_secret=env.get("PAYMENT_JWT_SECRET") or None,
            jwt_public_key=env.get("PAYMENT_JWT_PUBLIC_KEY") or None,
            jwt_audience=env.get("PAYMENT_JWT_AUDIENCE") or None,
            jwt_issuer=env.get("PAYMENT_JWT_ISSUER") or None,
            cursor_secret=env.get("PAYMENT_CURSOR_SECRET") or None,
            recon_report_prefix=env.get("PAYMENT_RECON_REPORT_PREFIX") or "reconciliation-reports/",
            recon_safety_ms=_integer(env, "PAYMENT_RECON_SAFETY_MS", 10_000),
            recon_grace_days=_integer(env, "PAYMENT_RECON_GRACE_DAYS", 2),
            recon_settlement_prefix=env.get("PAYMENT_RECON_SETTLEMENT_PREFIX") or "settlements/",
            recon_distributed_bytes=_integer(env, "PAYMENT_RECON_DISTRIBUTED_BYTES", 64 * 1024 * 1024),
            recon_state_machine_arn=env.get("PAYMENT_RECON_STATE_MACHINE_ARN") or None,
            recon_rows_per_range=_integer(env, "PAYMENT_RECON_ROWS_PER_RANGE", 10_000),
            recon_failure_queue_url=env.get("PAYMENT_RECON_FAILURE_QUEUE_URL") or None,
            kms_key_id=env.get("PAYMENT_KMS_KEY_ID") or None,
            kms_previous_key_ids=tuple(
                k.strip() for k in env.get("PAYMENT_KMS_PREVIOUS_KEY_IDS", "").split(",") if k.strip()
            ),
            field_keys=env.get("PAYMENT_FIELD_KEYS") or None,
            field_key_version=env.get("PAYMENT_FIELD_KEY_VERSION") or None,
            audit_key=env.get("PAYMENT_AUDIT_KEY") or None,
            audit_kms_key_id=env.get("PAYMENT_AUDIT_KMS_KEY_ID") or None,
            processor=env.get("PAYMENT_PROCESSOR") or None,
            processor_webhook_secret=env.get("PAYMENT_PROCESSOR_WEBHOOK_SECRET") or None,
            processor_webhook_tolerance_s=_integer(env, "PAYMENT_PROCESSOR_WEBHOOK_TOLERANCE_S", 300),
            webhook_queue_url=env.get("PAYMENT_WEBHOOK_QUEUE_URL") or None,
            webhook_dead_letter_queue_url=env.get("PAYMENT_WEBHOOK_DEAD_LETTER_QUEUE_URL") or None,
            webhook_max_attempts=_integer(env, "PAYMENT_WEBHOOK_MAX_ATTEMPTS", 5),
            webhook_backoff_base_s=_number(env, "PAYMENT_WEBHOOK_BACKOFF_BASE_S", 30.0),
            webhook_backoff_cap_s=_number(env, "PAYMENT_WEBHOOK_BACKOFF_CAP_S", 900.0),
            webhook_timeout_s=_number(env, "PAYMENT_WEBHOOK_TIMEOUT_S", 5.0),
        )
        return _with_secrets(settings, env, secrets_provider)


def _with_secrets(settings: Settings, env: Mapping[str, str], provider: Any) -> Settings:
    """``settings`` with the secret settings read from the secret or parameter the environment names (if any).
    A setting given both in the environment and in the secret is refused: one place, no precedence puzzle."""
    secret_id = env.get("PAYMENT_SECRETS_ID") or None
    parameter_name = env.get("PAYMENT_SECRETS_PARAMETER") or None
    if secret_id is None and parameter_name is None:
        return settings
    from payment_examples.core.secrets import DEFAULT_MAX_AGE, SECRET_FIELDS, load_secrets

    values = load_secrets(
        secret_id=secret_id,
        parameter_name=parameter_name,
        provider=provider,
        region=settings.region,
        max_age=_integer(env, "PAYMENT_SECRETS_MAX_AGE", DEFAULT_MAX_AGE),
    )
    for name in values:
        if getattr(settings, name) is not None:
            raise ConfigurationError(f"{SECRET_FIELDS[name]} is set and the secret holds {name!r} too; keep one")
    return replace(settings, **values)


def parse_key_versions(text: str, current: str | None = None) -> tuple[dict[str, bytes], str]:
    """``"v1:<base64>,v2:<base64>"`` (the format of ``PAYMENT_FIELD_KEYS``) as (roots by version, current
    version: the last, by default); refuses short, malformed or unknown versions (``check_key_versions``)."""
    roots: dict[str, bytes] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        version, _, encoded = part.partition(":")
        try:
            roots[version] = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise ConfigurationError(f"key version {version!r} is not base64") from None
    if not roots:
        raise ConfigurationError("no field keys given (expected 'v1:<base64>,...')")
    current = current or list(roots)[-1]
    check_key_versions(roots, current)
    return roots, current


def check_key_versions(roots: Mapping[str, bytes], current: str) -> None:
    """Versioned root secrets: ``current`` among them, names without ':' or ',', each at least 32 bytes."""
    if current not in roots:
        raise ConfigurationError(f"the current key version {current!r} is not in the keyring")
    for version, root in roots.items():
        if not version or ":" in version or "," in version:
            raise ConfigurationError(f"key version {version!r} must be non-empty, without ':' or ','")
        if len(root) < 32:
            raise ConfigurationError(f"key version {version!r} must be at least 32 bytes")


def require_api_settings(settings: Settings, *, cursors: bool) -> Settings:
    """Fail closed on AWS: an API handler with ``PAYMENT_USE_AWS=1`` refuses to start without a JWT audience
    (tokens minted for any audience would be accepted), a JWT key, or (``cursors``: it pages) a cursor secret.
    Raises ``ConfigurationError`` naming everything missing; the local modes keep their per-request 401s."""
    if not settings.use_aws:
        return settings
    missing = []
    if not settings.jwt_audience:
        missing.append("PAYMENT_JWT_AUDIENCE")
    if not (settings.jwt_secret or settings.jwt_public_key):
        missing.append("a JWT key (jwt_secret or jwt_public_key in PAYMENT_SECRETS_ID / PAYMENT_SECRETS_PARAMETER)")
    if cursors and not settings.cursor_secret:
        missing.append("the cursor secret (cursor_secret in PAYMENT_SECRETS_ID / PAYMENT_SECRETS_PARAMETER)")
    if missing:
        raise ConfigurationError(f"PAYMENT_USE_AWS=1 and this handler is missing: {'; '.join(missing)}")
    return settings


def _integer(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer") from None


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigurationError(f"{name}={raw!r} is not a finite number")
    return value


_lock = threading.Lock()
_from_env: Settings | None = None
_override: list[Settings] = []


def get_settings() -> Settings:
    """The settings in force: the innermost ``use_settings`` block, else the environment (read once)."""
    global _from_env
    with _lock:
        if _override:
            return _override[-1]
        if _from_env is None:
            _from_env = Settings.from_env()
        return _from_env


def push_settings(settings: Settings) -> None:
    """Make ``settings`` the process-wide settings until ``pop_settings`` (prefer ``use_settings``)."""
    with _lock:
        _override.append(settings)


def pop_settings(settings: Settings) -> None:
    with _lock:
        if settings in _override:
            # Remove the innermost occurrence: blocks may nest with equal settings.
            del _override[len(_override) - 1 - _override[::-1].index(settings)]


@contextmanager
def use_settings(settings: Settings) -> Iterator[Settings]:
    """Make ``settings`` the process-wide settings inside the block (the embedded engine and tests use this)."""
    push_settings(settings)
    try:
        yield settings
    finally:
        pop_settings(settings)
