"""Webhook endpoints (webhooks/endpoints.py): validation, secrets stored only encrypted and bound to their endpoint,
rotation with at most two active secrets, disabling, and the per-merchant cache the producer relies on."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta

import pytest

from payment_examples.core.clock import SeededIds
from payment_examples.core.errors import NotFoundError, ValidationError
from payment_examples.encryption.fields import FieldBindingError
from payment_examples.tables.models import get_models
from payment_examples.webhooks.endpoints import EndpointChangedError, WebhookEndpointNotFoundError, WebhookEndpoints
from payment_examples.webhooks.events import EVENT_TYPES
from tests.conftest import scan_everything
from tests.unit.webhooks.conftest import seeded_secrets


def test_add_returns_the_secret_once_and_stores_it_only_encrypted(endpoints, environment, merchant) -> None:
    endpoint, secret = endpoints.add(merchant, "https://example.com/hooks", events=["payment.captured"])
    assert re.fullmatch(r"we_[0-9a-f]{32}", endpoint.endpoint_id)
    assert secret.startswith("whsec_") and len(secret) > 32
    assert (endpoint.url, endpoint.events, endpoint.enabled) == ("https://example.com/hooks",
                                                                 frozenset({"payment.captured"}), True)  # fmt: skip
    assert endpoints.get(merchant, endpoint.endpoint_id) == endpoint
    assert endpoints.active_secrets(endpoint) == [secret]
    stored = scan_everything(environment)
    assert secret not in stored and secret.removeprefix("whsec_") not in stored
    item = get_models(environment).webhook_endpoint.get(merchant, endpoint.endpoint_id)
    [kept] = item.secrets
    assert set(kept) == {"id", "secret", "created_at", "expires_at"} and set(kept["secret"]) == {"c", "v", "s"}
    assert secret not in repr(endpoint)  # an Endpoint carries ciphertexts only, and does not print them
    # the default secret: 32 random bytes, urlsafe base64
    default = WebhookEndpoints(settings=environment, encryptor=endpoints.encryptor)
    _, random_secret = default.add(merchant, "https://example.com/other")
    assert re.fullmatch(r"whsec_[A-Za-z0-9_-]{43}", random_secret)


def test_a_secret_copied_onto_another_endpoint_does_not_decrypt(endpoints, environment, merchant) -> None:
    first, _ = endpoints.add(merchant, "https://example.com/a")
    second, _ = endpoints.add(merchant, "https://example.com/b")
    Model = get_models(environment).webhook_endpoint
    target = Model.get(merchant, second.endpoint_id)
    target.update(actions=[Model.secrets.set(Model.get(merchant, first.endpoint_id).secrets)])
    with pytest.raises(FieldBindingError):
        endpoints.active_secrets(endpoints.get(merchant, second.endpoint_id))


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hooks",  # plain http to a real host
        "ftp://example.com/hooks",
        "https://",
        "example.com/hooks",
        "https://user:password@example.com/hooks",
        "https://example.com/hooks#part",
        "https://exa mple.com/hooks",
        "https://example.com:99999/hooks",
        "https://exämple.com/hooks",
        "",
        "https://example.com/" + "a" * 2048,
        None,
    ],
)
def test_a_bad_url_is_refused(endpoints, merchant, url) -> None:
    with pytest.raises(ValidationError) as caught:
        endpoints.add(merchant, url)
    assert caught.value.field == "url"


def test_plain_http_only_to_the_local_host_and_only_off_aws(endpoints, environment, merchant) -> None:
    for url in ("http://127.0.0.1:8080/hooks", "http://localhost/hooks", "https://127.0.0.1/x"):
        assert endpoints.check_url(url) == url
    deployed = WebhookEndpoints(settings=replace(environment, use_aws=True))
    with pytest.raises(ValidationError, match="https"):
        deployed.check_url("http://127.0.0.1:8080/hooks")
    assert deployed.check_url("https://example.com/hooks") == "https://example.com/hooks"


@pytest.mark.parametrize("events", [["payment.nope"], ["payment.created", "charge.succeeded"], [], "payment.created",
                                    [5]])  # fmt: skip
def test_unknown_event_types_are_refused(endpoints, merchant, events) -> None:
    with pytest.raises(ValidationError) as caught:
        endpoints.add(merchant, "https://example.com/hooks", events=events)
    assert caught.value.field == "events"
    assert endpoints.for_merchant(merchant) == []  # nothing written


def test_every_event_type_and_all_of_them(endpoints, merchant) -> None:
    endpoint, _ = endpoints.add(merchant, "https://example.com/hooks", events=list(EVENT_TYPES))
    assert endpoint.events == frozenset(EVENT_TYPES)
    everything, _ = endpoints.add(merchant, "https://example.com/all")
    assert everything.events is None and all(everything.wants(t) for t in EVENT_TYPES)
    some, _ = endpoints.add(merchant, "https://example.com/some", events=("payment.refunded", "payment.refunded"))
    assert some.wants("payment.refunded") and not some.wants("payment.created")


@pytest.mark.parametrize("merchant_id", ["", "a\x00b", 5, "m" * 256])
def test_a_bad_merchant_id_is_refused(endpoints, merchant_id) -> None:
    with pytest.raises(ValidationError) as caught:
        endpoints.add(merchant_id, "https://example.com/hooks")
    assert caught.value.field == "merchant_id"


def test_rotation_keeps_two_active_secrets_newest_first_and_drops_the_third(endpoints, merchant, fixed) -> None:
    endpoint, first = endpoints.add(merchant, "https://example.com/hooks")
    second = endpoints.rotate_secret(merchant, endpoint.endpoint_id)
    rotated = endpoints.get(merchant, endpoint.endpoint_id)
    assert endpoints.active_secrets(rotated) == [second, first]
    assert len(rotated.secret_ids) == 2 and rotated.secret_ids[1] == endpoint.secret_ids[0]
    fixed.advance(timedelta(hours=1))
    third = endpoints.rotate_secret(merchant, endpoint.endpoint_id)
    again = endpoints.get(merchant, endpoint.endpoint_id)
    assert endpoints.active_secrets(again) == [third, second]  # never more than two
    assert len(again.secret_ids) == 2 and endpoint.secret_ids[0] not in again.secret_ids
    assert len({first, second, third}) == 3


def test_the_previous_secret_stops_signing_when_it_expires(endpoints, merchant, fixed) -> None:
    endpoint, first = endpoints.add(merchant, "https://example.com/hooks")
    second = endpoints.rotate_secret(merchant, endpoint.endpoint_id, previous_valid_for=timedelta(hours=2))
    rotated = endpoints.get(merchant, endpoint.endpoint_id)
    fixed.advance(timedelta(hours=2) - timedelta(microseconds=1))
    assert endpoints.active_secrets(rotated) == [second, first]
    fixed.advance(timedelta(microseconds=1))
    assert endpoints.active_secrets(rotated) == [second]
    # a rotation after it expired keeps the current one as the previous, and drops the expired one
    third = endpoints.rotate_secret(merchant, endpoint.endpoint_id, previous_valid_for=timedelta(0))
    assert endpoints.active_secrets(endpoints.get(merchant, endpoint.endpoint_id)) == [third]
    with pytest.raises(ValidationError):
        endpoints.rotate_secret(merchant, endpoint.endpoint_id, previous_valid_for=timedelta(seconds=-1))


def test_disable_and_enable(endpoints, merchant) -> None:
    endpoint, _ = endpoints.add(merchant, "https://example.com/hooks")
    disabled = endpoints.disable(merchant, endpoint.endpoint_id)
    assert disabled.enabled is False and disabled.version == endpoint.version + 1
    assert [e.enabled for e in endpoints.for_merchant(merchant)] == [False]
    assert endpoints.enable(merchant, endpoint.endpoint_id).enabled is True


def test_an_unknown_or_another_merchants_endpoint_is_not_found(endpoints, merchant) -> None:
    endpoint, _ = endpoints.add(merchant, "https://example.com/hooks")
    for call in (endpoints.get, endpoints.disable, endpoints.rotate_secret):
        with pytest.raises(WebhookEndpointNotFoundError) as caught:
            call("someone-else", endpoint.endpoint_id)
        assert isinstance(caught.value, NotFoundError) and caught.value.http_status == 404
    with pytest.raises(WebhookEndpointNotFoundError):
        endpoints.get(merchant, "we_" + "0" * 32)


def test_a_concurrent_change_is_a_conflict_and_writes_nothing(endpoints, merchant) -> None:
    endpoint, first = endpoints.add(merchant, "https://example.com/hooks")
    stale = endpoints._load(merchant, endpoint.endpoint_id)
    endpoints.disable(merchant, endpoint.endpoint_id)
    with pytest.raises(EndpointChangedError):
        endpoints._update(stale, [type(stale).url.set("https://example.com/elsewhere")])
    assert endpoints.get(merchant, endpoint.endpoint_id).url == "https://example.com/hooks"


def test_for_merchant_is_one_query_cached_for_the_ttl(endpoints, environment, merchant, fixed) -> None:
    assert endpoints.for_merchant(merchant) == [] and endpoints.queries == 1
    assert endpoints.for_merchant(merchant) == [] and endpoints.queries == 1  # a merchant without endpoints: cached
    other = WebhookEndpoints(settings=environment, encryptor=endpoints.encryptor, clock=fixed, ids=SeededIds(99),
                             secret_factory=seeded_secrets())  # fmt: skip
    added, _ = other.add(merchant, "https://example.com/hooks")  # another container: seen after the ttl
    fixed.advance(timedelta(seconds=59))
    assert endpoints.for_merchant(merchant) == []
    fixed.advance(timedelta(seconds=1))
    assert [e.endpoint_id for e in endpoints.for_merchant(merchant)] == [added.endpoint_id]
    assert endpoints.queries == 2
    endpoints.disable(merchant, added.endpoint_id)  # a change through this instance clears its entry
    assert [e.enabled for e in endpoints.for_merchant(merchant)] == [False] and endpoints.queries == 3


def test_a_weak_secret_factory_is_refused(endpoints, environment, merchant) -> None:
    weak = WebhookEndpoints(settings=environment, encryptor=endpoints.encryptor, secret_factory=lambda: "short")
    with pytest.raises(ValueError, match="at least 32"):
        weak.add(merchant, "https://example.com/hooks")
    assert weak.for_merchant(merchant) == []
