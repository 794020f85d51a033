"""Several AWS accounts side by side: a registry of accounts whose credentials come from STS AssumeRole.

A payment flow that spans accounts (a platform account and a processor's, a ledger kept apart from card data)
names each account once: a role ARN, an optional external id and a region. ``AccountRegistry.settings(name)``
assumes the role and returns the base settings with the role's temporary credentials; ``models(name)`` and
``client(service, name)`` are bound to them.

* **Cached until shortly before expiry**: credentials are reused until ``Expiration - refresh_margin`` by the
  injected clock, then assumed again *before* use, so no call is made with credentials about to expire (a call
  and its retries have the margin to finish).
* **One AssumeRole per account at a time**: a lock per account, so concurrent callers for one account wait for
  one call, and accounts never wait on each other.
* **No global mutation**: Settings are values. Per-account model classes come from ``bind_models`` and clients from
  ``aws.client``, both cached per Settings; a refresh gives new Settings, hence new classes and clients (those
  caches are bounded, so the old ones age out).

On the embedded engine, ``local_accounts()`` gives real moto accounts: moto (in-process and the local server) maps
the credentials AssumeRole returns to the account id in the role ARN, so each account sees only its own tables.
moto needs no IAM role to exist, checks no external id and never refuses expired credentials: the refresh is
tested with an injected clock, not by the engine. dynalite has one account whatever the credentials, so on the
dynalite engine ``local_accounts()`` keeps the accounts' tables on the moto server beside it (its S3/KMS/STS
endpoint), where accounts are separate.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from payment_examples.core import Clock, Settings, SystemClock, aws, get_settings, logger
from payment_examples.core.errors import AccountAccessError, ConfigurationError, UnknownAccountError
from payment_examples.tables import BoundModels, bind_models
from payment_examples.tables import models as _models

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# IAM: partition aws / aws-cn / aws-us-gov / ...; a path of printable segments; a role name of [\w+=,.@-]{1,64}.
_ROLE_ARN_RE = re.compile(r"arn:aws(?:-[a-z]+)*:iam::(\d{12}):role/(?:[\x21-\x2e\x30-\x7e]+/)*[\w+=,.@-]{1,64}", re.A)
_EXTERNAL_ID_RE = re.compile(r"[\w+=,.@:/-]{2,1224}", re.A)  # STS AssumeRole ExternalId
_SESSION_NAME_RE = re.compile(r"[\w+=,.@-]{2,64}", re.A)  # STS AssumeRole RoleSessionName
_REGION_RE = re.compile(r"[a-z0-9-]+")
LOCAL_ROLE_NAME = "payment-examples"


@dataclass(frozen=True)
class Account:
    """One AWS account of the flow: its name here, the role to assume in it, and its region (default: the base
    settings' region). The external id guards against the confused deputy; it is kept out of ``repr``."""

    name: str
    role_arn: str
    external_id: str | None = field(default=None, repr=False)
    region: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise ConfigurationError(f"account name {self.name!r} must be 1-64 letters, digits, '-' or '_'")
        if not isinstance(self.role_arn, str) or not _ROLE_ARN_RE.fullmatch(self.role_arn):
            raise ConfigurationError(
                f"account {self.name!r}: role ARN {self.role_arn!r} is not arn:aws:iam::<12-digit account id>:role/"
                "<path/><name>"
            )
        if self.external_id is not None and not (
            isinstance(self.external_id, str) and _EXTERNAL_ID_RE.fullmatch(self.external_id)
        ):  # not echoed: the external id is not a credential, but nor is it for logs
            raise ConfigurationError(
                f"account {self.name!r}: the external id must be 2-1224 letters, digits or any of +=,.@:/-"
            )
        if self.region is not None and not (isinstance(self.region, str) and _REGION_RE.fullmatch(self.region)):
            raise ConfigurationError(f"account {self.name!r}: region {self.region!r} is not a valid AWS region name")

    @property
    def account_id(self) -> str:
        """The 12-digit account id in the role ARN."""
        return self.role_arn.split(":")[4]


@dataclass(frozen=True)
class _Assumed:
    base: Settings  # the settings the credentials were assumed under (a change of engine re-assumes)
    settings: Settings
    refresh_at: datetime


class AccountRegistry:
    """Accounts by name, with their assumed-role settings, model classes and clients (thread-safe).

    ``settings``: the base settings (endpoint, table prefix, region, and the caller's own credentials, used to call
    STS); default: the settings in force at each call. ``sts_client``: default ``aws.client("sts", base)``.
    Ask for ``settings``/``models``/``client`` at each use rather than keeping what they return: only the registry
    knows when credentials are due for refresh.
    """

    def __init__(
        self,
        accounts: Iterable[Account],
        *,
        settings: Settings | None = None,
        sts_client: Any | None = None,
        clock: Clock | None = None,
        refresh_margin: timedelta = timedelta(minutes=5),
        session_seconds: int = 900,
        session_name: str = "payment-examples",
    ) -> None:
        by_name: dict[str, Account] = {}
        for account in accounts:
            if not isinstance(account, Account):
                raise ConfigurationError(f"{account!r} is not an Account")
            if account.name in by_name:
                raise ConfigurationError(f"account name {account.name!r} is given more than once")
            by_name[account.name] = account
        if not by_name:
            raise ConfigurationError("an account registry needs at least one account")
        if not 900 <= session_seconds <= 43_200:
            raise ConfigurationError(f"session_seconds={session_seconds} must be 900-43200 (STS DurationSeconds)")
        if not timedelta(0) <= refresh_margin < timedelta(seconds=session_seconds):
            raise ConfigurationError(
                f"refresh_margin {refresh_margin} must be at least 0 and shorter than the session "
                f"({session_seconds} s), or every call would assume the role again"
            )
        if not _SESSION_NAME_RE.fullmatch(session_name):
            raise ConfigurationError(f"session name {session_name!r} must be 2-64 letters, digits or any of +=,.@-")
        self._accounts = by_name
        self._base = settings
        self._sts = sts_client
        self._clock = clock or SystemClock()
        self._margin = refresh_margin
        self._seconds = session_seconds
        self._session_name = session_name
        self._locks = {name: threading.Lock() for name in by_name}  # fixed with the accounts: no lock for the dict
        self._cache: dict[str, _Assumed] = {}
        self._calls = 0
        self._calls_lock = threading.Lock()

    def names(self) -> tuple[str, ...]:
        return tuple(self._accounts)

    def account(self, name: str) -> Account:
        try:
            return self._accounts[name]
        except (KeyError, TypeError):
            raise UnknownAccountError(name, self.names()) from None

    @property
    def assume_role_calls(self) -> int:
        """How many AssumeRole calls were made, failed ones included."""
        return self._calls

    def settings(self, name: str) -> Settings:
        """The base settings with the account's temporary credentials and region. From ``Expiration -
        refresh_margin`` on (by the injected clock) the next use assumes the role again before returning; a failed
        AssumeRole is raised and not cached."""
        account = self.account(name)
        base = self._base or get_settings()
        cached = self._cache.get(name)
        if cached is not None and cached.base == base and self._clock.now() < cached.refresh_at:
            return cached.settings
        with self._locks[name]:
            cached = self._cache.get(name)  # another thread may have assumed the role while this one waited
            if cached is None or cached.base != base or self._clock.now() >= cached.refresh_at:
                cached = self._assume(account, base)
                self._cache[name] = cached
            return cached.settings

    def models(self, name: str) -> BoundModels:
        """Model classes bound to the account's current credentials (cached per settings by ``bind_models``)."""
        return bind_models(self.settings(name))

    def client(self, service: str, name: str) -> Any:
        """The boto3 client for ``service`` in the account, with its current credentials (cached per settings)."""
        return aws.client(service, self.settings(name))

    def _assume(self, account: Account, base: Settings) -> _Assumed:
        request: dict[str, Any] = {
            "RoleArn": account.role_arn,
            "RoleSessionName": self._session_name,
            "DurationSeconds": self._seconds,
        }
        if account.external_id is not None:
            request["ExternalId"] = account.external_id
        with self._calls_lock:
            self._calls += 1
        try:
            response = (self._sts or aws.client("sts", base)).assume_role(**request)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code") or "Unknown"
            raise AccountAccessError(account.name, account.role_arn, code) from error
        except BotoCoreError as error:  # no credentials to call STS with, no connection, a rejected parameter
            raise AccountAccessError(account.name, account.role_arn, type(error).__name__) from error
        try:
            credentials = response["Credentials"]
            key_id, secret, token = (credentials[k] for k in ("AccessKeyId", "SecretAccessKey", "SessionToken"))
            expiration = credentials["Expiration"]
            if not all(isinstance(v, str) and v for v in (key_id, secret, token)) or expiration.utcoffset() is None:
                raise TypeError
        except (KeyError, TypeError, AttributeError):  # AttributeError: an Expiration that is not a datetime
            raise AccountAccessError(account.name, account.role_arn, "MalformedResponse") from None
        settings = replace(
            base,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=token,
            region=account.region or base.region,
        )
        logger.info("assumed role", account=account.name, account_id=account.account_id, expires=str(expiration))
        return _Assumed(base, settings, expiration - self._margin)


def local_accounts(
    names: Iterable[str] = ("account-a", "account-b"),
    *,
    settings: Settings | None = None,
    first_account_id: int = 111111111111,
    create_tables: bool = True,
    clock: Clock | None = None,
) -> AccountRegistry:
    """Accounts on the embedded engine (moto): role ARNs ``arn:aws:iam::<id>:role/payment-examples`` with
    consecutive account ids from ``first_account_id``, each with its own tables (when ``create_tables``).

    The registry is pinned to ``settings`` (default: the settings in force now), the engine the tables are in.
    moto assumes a role that does not exist, so no IAM role is created. dynalite does not separate accounts: on the
    dynalite engine the accounts' DynamoDB is the moto server that serves its other services.
    """
    base = settings or get_settings()
    if base.engine == "dynalite" and base.aws_endpoint_url:  # one account on dynalite; moto separates them
        base = replace(base, engine="moto", endpoint_url=base.aws_endpoint_url, aws_endpoint_url=None)
    if base.mode == "aws":
        raise ConfigurationError("local_accounts() makes moto accounts; on AWS, list your roles in an AccountRegistry")
    names = (names,) if isinstance(names, str) else tuple(names)
    if first_account_id < 0 or first_account_id + len(names) > 10**12:
        raise ConfigurationError(f"account ids from {first_account_id} do not fit in 12 digits")
    registry = AccountRegistry(
        [
            Account(name, f"arn:aws:iam::{first_account_id + offset:012d}:role/{LOCAL_ROLE_NAME}")
            for offset, name in enumerate(names)
        ],
        settings=base,
        clock=clock,
    )
    if create_tables:
        for name in registry.names():
            _models.create_tables(registry.settings(name))
    return registry
