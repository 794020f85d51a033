"""Merchants' webhook endpoints and their signing secrets.

An endpoint is a URL, the event types it wants (None: every type) and at most two active signing secrets. Why two:
a merchant rotating its secret cannot switch its receiver at the exact instant we switch our signer, so during a
rotation every event is signed with both (one ``v1=`` per secret, newest first, ``core.signatures``) until the
previous secret's ``expires_at``; the receiver accepts either and moves to the new one in its own time.

* A secret is shown in clear once, when it is made (``add``, ``rotate_secret``), and stored only encrypted
  (``encryption.FieldEncryptor``, bound to the endpoint and the secret's id: a ciphertext copied to another
  endpoint or merchant fails to decrypt). It is never logged; ``Endpoint`` carries the ciphertexts only
  (``active_secrets`` decrypts, for the deliverer's signer).
* The producer asks for a merchant's endpoints once per stream record (``for_merchant``): one query, cached per
  merchant on the instance for ``cache_ttl`` (a merchant without endpoints, most of them, costs one query per
  ttl). A change made through this instance clears its merchant's entry; another container sees it within the ttl.
* URLs must be https (an event carries payment data); plain http only to 127.0.0.1 / localhost, and only off AWS
  (the local receiver of notebooks and tests).
"""

from __future__ import annotations

import secrets as _secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from payment_examples.core import (
    Clock,
    ConflictError,
    IdFactory,
    NotFoundError,
    RandomIds,
    Settings,
    SystemClock,
    ValidationError,
    get_settings,
    identifier,
    logger,
)
from payment_examples.core.errors import CONDITIONAL_CHECK_FAILED, error_code
from payment_examples.encryption.fields import Binding, FieldEncryptor, encryptor_for
from payment_examples.tables.models import BoundModels, get_models, sortable_time
from payment_examples.webhooks.events import EVENT_TYPES

SECRET_PREFIX = "whsec_"
PURPOSE = "webhook-secret"
MAX_URL_LENGTH = 2048
MIN_SECRET_LENGTH = 32  # characters of the random part (token_urlsafe(32) gives 43)
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})


class WebhookEndpointNotFoundError(NotFoundError):
    """No such endpoint for this merchant (another merchant's endpoint reads as not found too)."""

    def __init__(self, merchant_id: str, endpoint_id: str) -> None:
        super().__init__(f"webhook endpoint {endpoint_id!r} not found")
        self.merchant_id = merchant_id
        self.endpoint_id = endpoint_id


class EndpointChangedError(ConflictError):
    """The endpoint changed between the read and the write (a concurrent rotation or disable); nothing was written."""

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"webhook endpoint {endpoint_id!r} changed concurrently; re-read and retry")
        self.endpoint_id = endpoint_id


@dataclass(frozen=True)
class StoredSecret:
    """One signing secret as stored: its id, the encrypted field (``{"c", "v", "s"}``), when it was made and until
    when it signs (None: the current one)."""

    id: str
    encrypted: Mapping[str, Any] = field(repr=False)
    created_at: datetime
    expires_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at

    def item(self) -> dict[str, Any]:
        return {"id": self.id, "secret": dict(self.encrypted), "created_at": sortable_time(self.created_at),
                "expires_at": sortable_time(self.expires_at) if self.expires_at else None}  # fmt: skip

    @classmethod
    def from_item(cls, value: Mapping[str, Any]) -> StoredSecret:
        expires = value.get("expires_at")
        return cls(str(value["id"]), dict(value["secret"]), _parse_time(value["created_at"]),
                   _parse_time(expires) if expires else None)  # fmt: skip


@dataclass(frozen=True)
class Endpoint:
    """A merchant's endpoint as the producer and the deliverer read it (ciphertexts only, never a clear secret)."""

    merchant_id: str
    endpoint_id: str
    url: str
    events: frozenset[str] | None  # None: every event type
    enabled: bool
    secret_ids: tuple[str, ...]  # the stored secrets, newest first (at most two; see active_secrets for the time)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 0
    stored_secrets: tuple[StoredSecret, ...] = field(default=(), repr=False, compare=False)

    def wants(self, event_type: str) -> bool:
        """Whether the endpoint subscribes to ``event_type`` (whether it is enabled is ``enabled``)."""
        return self.events is None or event_type in self.events


class WebhookEndpoints:
    """Add, rotate, read and disable merchants' webhook endpoints (see the module docstring). ``secret_factory``
    makes the random part of a new secret (default ``secrets.token_urlsafe(32)``; a notebook injects a seeded one
    so its output is reproducible); the secret is ``"whsec_" + it``."""

    def __init__(
        self,
        *,
        models: BoundModels | None = None,
        settings: Settings | None = None,
        encryptor: FieldEncryptor | None = None,
        clock: Clock | None = None,
        ids: IdFactory | None = None,
        cache_ttl: timedelta = timedelta(seconds=60),
        secret_factory: Callable[[], str] | None = None,
        cache_size: int = 10_000,
    ) -> None:
        if cache_ttl < timedelta(0) or cache_size < 1:
            raise ValueError("cache_ttl must not be negative and cache_size must be positive")
        self._models = models
        self._settings = settings
        self._encryptor = encryptor
        self.clock = clock or SystemClock()
        self.ids = ids or RandomIds()
        self.cache_ttl = cache_ttl
        self._secret_factory = secret_factory or (lambda: _secrets.token_urlsafe(32))
        self._cache: OrderedDict[str, tuple[datetime, tuple[Endpoint, ...]]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.queries = 0  # for_merchant's queries (what the cache saves is visible in a notebook)

    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    @property
    def models(self) -> BoundModels:
        return self._models or get_models(self.settings)

    @property
    def encryptor(self) -> FieldEncryptor:
        """Built on first use: the producer reads endpoints and never decrypts, so it needs no field keys."""
        if self._encryptor is None:
            self._encryptor = encryptor_for(self.settings)
        return self._encryptor

    # -- writes ---------------------------------------------------------------------------------------------------

    def add(self, merchant_id: str, url: str, *, events: Iterable[str] | None = None) -> tuple[Endpoint, str]:
        """A new enabled endpoint and its first secret, in clear: shown once, stored only encrypted."""
        identifier("merchant_id", merchant_id)
        url = self.check_url(url)
        wanted = check_events(events)
        Model = self.models.webhook_endpoint
        now = self.clock.now()
        endpoint_id = "we_" + self._hex_id()
        secret, stored = self._new_secret(merchant_id, endpoint_id, now)
        item = Model(
            merchant_id,
            endpoint_id,
            url=url,
            events=sorted(wanted) if wanted is not None else None,
            enabled="true",
            secrets=[stored.item()],
            created_at=now,
            updated_at=now,
        )
        try:
            item.save(condition=Model.endpoint_id.does_not_exist())
        except PutError as error:
            if error_code(error) == CONDITIONAL_CHECK_FAILED:  # an id factory that repeats itself
                raise ConflictError(f"webhook endpoint {endpoint_id!r} exists already (ids repeated?)") from None
            raise
        self._forget(merchant_id)
        logger.info("webhook endpoint added", merchant_id=merchant_id, endpoint_id=endpoint_id,
                    events=sorted(wanted) if wanted is not None else "all")  # fmt: skip
        return _endpoint(item), secret

    def rotate_secret(
        self, merchant_id: str, endpoint_id: str, *, previous_valid_for: timedelta = timedelta(hours=24)
    ) -> str:
        """A new current secret (in clear, shown once). The current one keeps signing beside it until
        ``previous_valid_for`` from now (0: it stops at once); any older one is dropped: never more than two."""
        if previous_valid_for < timedelta(0):
            raise ValidationError("previous_valid_for", "must not be negative")
        item = self._load(merchant_id, endpoint_id)
        Model = type(item)
        now = self.clock.now()
        kept = [s for s in _stored(item) if s.active(now)]
        secret, stored = self._new_secret(merchant_id, endpoint_id, now)
        rotated = [stored]
        if kept:  # the current one (the newest active) signs beside the new one until then; older ones go
            current = kept[0]
            rotated.append(StoredSecret(current.id, current.encrypted, current.created_at, now + previous_valid_for))
        self._update(item, [Model.secrets.set([s.item() for s in rotated]), Model.updated_at.set(now)])
        logger.info("webhook secret rotated", merchant_id=merchant_id, endpoint_id=endpoint_id, secret_id=stored.id,
                    previous_expires_at=rotated[1].expires_at.isoformat() if len(rotated) > 1 else None)  # fmt: skip
        return secret

    def disable(self, merchant_id: str, endpoint_id: str) -> Endpoint:
        """Stop delivering to the endpoint (its queued messages are logged as failed, not sent)."""
        return self._set_enabled(merchant_id, endpoint_id, False)

    def enable(self, merchant_id: str, endpoint_id: str) -> Endpoint:
        return self._set_enabled(merchant_id, endpoint_id, True)

    def _set_enabled(self, merchant_id: str, endpoint_id: str, enabled: bool) -> Endpoint:
        item = self._load(merchant_id, endpoint_id)
        Model = type(item)
        self._update(item, [Model.enabled.set("true" if enabled else "false"), Model.updated_at.set(self.clock.now())])
        logger.info("webhook endpoint " + ("enabled" if enabled else "disabled"), merchant_id=merchant_id,
                    endpoint_id=endpoint_id)  # fmt: skip
        return _endpoint(item)

    # -- reads ----------------------------------------------------------------------------------------------------

    def get(self, merchant_id: str, endpoint_id: str) -> Endpoint:
        return _endpoint(self._load(merchant_id, endpoint_id))

    def for_merchant(self, merchant_id: str) -> list[Endpoint]:
        """The merchant's endpoints (enabled or not), in endpoint id order: one query, then cached for ``cache_ttl``."""
        identifier("merchant_id", merchant_id)
        now = self.clock.now()
        with self._lock:
            cached = self._cache.get(merchant_id)
            if cached is not None and now < cached[0]:
                self._cache.move_to_end(merchant_id)
                return list(cached[1])
        found = tuple(_endpoint(i) for i in self.models.webhook_endpoint.query(merchant_id, consistent_read=True))
        with self._lock:
            self.queries += 1
            self._cache[merchant_id] = (now + self.cache_ttl, found)
            self._cache.move_to_end(merchant_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return list(found)

    def active_secrets(self, endpoint: Endpoint) -> list[str]:
        """The endpoint's signing secrets in clear, newest first, unexpired by the clock (what ``sign`` takes)."""
        now = self.clock.now()
        return [self.encryptor.decrypt(s.encrypted, _binding(endpoint.merchant_id, endpoint.endpoint_id, s.id))
                for s in endpoint.stored_secrets if s.active(now)]  # fmt: skip

    # -- validation -----------------------------------------------------------------------------------------------

    def check_url(self, url: object) -> str:
        """``url`` if it is an https URL (http only to 127.0.0.1 / localhost, off AWS), else ``ValidationError``."""
        if not isinstance(url, str):
            raise ValidationError("url", f"must be a string, got {type(url).__name__}")
        if not url or len(url) > MAX_URL_LENGTH:
            raise ValidationError("url", f"must be 1 to {MAX_URL_LENGTH} characters")
        if not url.isascii() or not url.isprintable() or " " in url:
            raise ValidationError("url", "must be printable ASCII without spaces (percent-encode the rest)")
        try:
            parts = urlsplit(url)
            host, _port = parts.hostname, parts.port  # port: a malformed one raises here
        except ValueError as error:
            raise ValidationError("url", f"is not a valid URL ({error})") from None
        if not host:
            raise ValidationError("url", "must name a host")
        if parts.username is not None or parts.password is not None:
            raise ValidationError("url", "must not contain credentials (they would be stored and shown in clear)")
        if parts.fragment:
            raise ValidationError("url", "must not contain a fragment")
        if parts.scheme == "https":
            return url
        if parts.scheme == "http" and host in LOCAL_HOSTS and not self.settings.use_aws:
            return url
        raise ValidationError("url", "must use https (plain http only to 127.0.0.1 or localhost, locally)")

    # -- helpers --------------------------------------------------------------------------------------------------

    def _hex_id(self) -> str:
        return self.ids.new_id().replace("-", "")

    def _new_secret(self, merchant_id: str, endpoint_id: str, now: datetime) -> tuple[str, StoredSecret]:
        random_part = self._secret_factory()
        if not isinstance(random_part, str) or len(random_part) < MIN_SECRET_LENGTH or not random_part.isprintable():
            raise ValueError(f"secret_factory must return a printable string of at least {MIN_SECRET_LENGTH} chars")
        secret = SECRET_PREFIX + random_part
        secret_id = "whs_" + self._hex_id()
        encrypted = self.encryptor.encrypt(secret, _binding(merchant_id, endpoint_id, secret_id))
        return secret, StoredSecret(secret_id, encrypted, now, None)

    def _load(self, merchant_id: str, endpoint_id: str) -> Any:
        identifier("merchant_id", merchant_id)
        identifier("endpoint_id", endpoint_id)
        try:
            return self.models.webhook_endpoint.get(merchant_id, endpoint_id, consistent_read=True)
        except DoesNotExist:
            raise WebhookEndpointNotFoundError(merchant_id, endpoint_id) from None

    def _update(self, item: Any, actions: list[Any]) -> None:
        """One conditional update of ``item``, on the version read (PynamoDB's version condition)."""
        try:
            item.update(actions=actions)
        except UpdateError as error:
            if error_code(error) == CONDITIONAL_CHECK_FAILED:
                raise EndpointChangedError(item.endpoint_id) from None
            raise
        finally:
            self._forget(item.merchant_id)

    def _forget(self, merchant_id: str) -> None:
        with self._lock:
            self._cache.pop(merchant_id, None)


def check_events(events: Iterable[str] | None) -> frozenset[str] | None:
    """The event types an endpoint subscribes to (None: every type); unknown types are a ``ValidationError``."""
    if events is None:
        return None
    if isinstance(events, str | bytes) or not isinstance(events, Iterable):
        raise ValidationError("events", "must be a list of event types (or omitted for every type)")
    wanted = list(events)
    if not wanted:
        raise ValidationError("events", "must name at least one event type (or be omitted for every type)")
    unknown = sorted({repr(e) for e in wanted if not isinstance(e, str) or e not in EVENT_TYPES})
    if unknown:
        raise ValidationError("events", f"unknown event types {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}")
    return frozenset(wanted)


def _binding(merchant_id: str, endpoint_id: str, secret_id: str) -> Binding:
    return Binding(f"{merchant_id}/{endpoint_id}", f"secrets/{secret_id}", merchant_id, PURPOSE)


def _stored(item: Any) -> list[StoredSecret]:
    return [StoredSecret.from_item(s) for s in item.secrets or ()]


def _endpoint(item: Any) -> Endpoint:
    stored = tuple(_stored(item))
    return Endpoint(
        merchant_id=item.merchant_id,
        endpoint_id=item.endpoint_id,
        url=item.url,
        events=frozenset(item.events) if item.events is not None else None,
        enabled=item.enabled == "true",
        secret_ids=tuple(s.id for s in stored),
        created_at=item.created_at,
        updated_at=item.updated_at,
        version=int(item.version or 0),
        stored_secrets=stored,
    )


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
