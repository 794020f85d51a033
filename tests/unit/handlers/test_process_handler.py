"""The process-payment Lambda handler: auth, validation, idempotent replay and RFC 9457 errors, v1 and v2."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from payment_examples.checkout.processor import processor_key
from payment_examples.core.aws import dynamodb
from payment_examples.core.config import Settings, use_settings
from payment_examples.core.money import MAX_AMOUNT
from payment_examples.handlers import process
from payment_examples.payments.service import PaymentService
from payment_examples.tables.models import Payment, ProcessorCallAttribute, bind_models, create_tables, payment_id_for
from tests.api_events import HS_SECRET, api_event, token

VERSIONS = ["1.0", "2.0"]
BODY = {"amount": 1250, "currency": "USD", "description": "Order #1001"}


def _pem(private_key) -> tuple[bytes, str]:
    private = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


RSA_PRIVATE, RSA_PUBLIC = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC_PRIVATE, EC_PUBLIC = _pem(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
def settings(aws: Settings):
    configured = replace(aws, jwt_secret=HS_SECRET)
    with use_settings(configured):
        yield configured


def post(version: str = "2.0", *, body: Any = BODY, key: str | None = "idem-1", auth: str | None = "token",
         **kwargs: Any) -> dict:  # fmt: skip
    headers = {}
    if auth is not None:
        headers["Authorization"] = f"Bearer {token()}" if auth == "token" else auth
    if key is not None:
        headers["Idempotency-Key"] = key
    return process.handler(api_event(version, "POST", "/payments", headers=headers, body=body, **kwargs), None)


def problem(response: dict, status: int) -> dict:
    assert response["statusCode"] == status, response
    assert response["headers"]["Content-Type"] == "application/problem+json"
    body = json.loads(response["body"])
    assert body["status"] == status and body["title"] and body["detail"] and body["type"].startswith("https://")
    return body


def table_counts(settings: Settings) -> tuple[int, int]:
    models = bind_models(settings)
    client = dynamodb()
    return tuple(
        client.scan(TableName=m.Meta.table_name, Select="COUNT")["Count"] for m in (models.payment, models.idempotency)
    )


# -- success and replay -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_creates_a_payment_and_replays_it(settings: Settings, version: str) -> None:
    first = post(version)
    assert first["statusCode"] == 201
    body = json.loads(first["body"])
    assert {k: body[k] for k in ("merchant_id", "amount", "currency", "status")} == {
        "merchant_id": "merchant-1", "amount": 1250, "currency": "USD", "status": "pending"
    }  # fmt: skip
    assert body["created_at"].endswith("Z") and body["updated_at"].endswith("Z")
    assert first["headers"]["Location"] == f"/payments/{body['id']}"
    assert "Idempotent-Replayed" not in first["headers"]

    again = post(version)
    assert again["statusCode"] == 201 and json.loads(again["body"]) == body
    assert again["headers"]["Idempotent-Replayed"] == "true"
    assert table_counts(settings) == (1, 0)  # the payment is its own idempotency record


def test_base64_body_and_lowercase_headers(settings: Settings) -> None:
    event = api_event(
        "1.0", "POST", "/payments", body=BODY, base64_body=True,
        headers={"authorization": f"Bearer {token()}", "idempotency-key": "k-b64"},
    )  # fmt: skip
    assert process.handler(event, None)["statusCode"] == 201


@pytest.mark.parametrize("version", VERSIONS)
def test_verified_authorizer_claims_need_no_token(aws: Settings, version: str) -> None:
    response = post(version, auth=None, claims={"merchant_id": "merchant-from-authorizer"})
    assert response["statusCode"] == 201
    assert json.loads(response["body"])["merchant_id"] == "merchant-from-authorizer"


@pytest.mark.parametrize(("private", "public", "algorithm"), [(RSA_PRIVATE, RSA_PUBLIC, "RS256"),
                                                              (EC_PRIVATE, EC_PUBLIC, "ES256")])  # fmt: skip
def test_asymmetric_tokens_verify_with_the_public_key(aws: Settings, private, public, algorithm) -> None:
    with use_settings(replace(aws, jwt_public_key=public)):
        response = post(auth=f"Bearer {token(private, algorithm)}")
    assert response["statusCode"] == 201


# -- authentication failures ----------------------------------------------------------------------------------------


def _unsigned(claims: dict) -> str:
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).decode()
    payload = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    return f"{header}.{payload}."


BAD_CREDENTIALS = {
    "missing token": None,
    "not bearer": "Basic dXNlcjpwYXNz",
    "empty bearer": "Bearer ",
    "garbage": "Bearer not.a.jwt",
    "expired": f"Bearer {token(exp=int(time.time()) - 3600)}",
    "no exp": f"Bearer {jwt.encode({'merchant_id': 'merchant-1'}, HS_SECRET, algorithm='HS256')}",
    "wrong signature": f"Bearer {token(secret='another-secret-that-is-32-bytes-long!!')}",
    "alg none": f"Bearer {_unsigned({'merchant_id': 'merchant-1', 'exp': int(time.time()) + 300})}",
    "no merchant claim": f"Bearer {token(merchant_id=None)}",
    "HS384 not accepted": f"Bearer {token(algorithm='HS384')}",
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", sorted(BAD_CREDENTIALS))
def test_bad_credentials_get_401_and_write_nothing(settings: Settings, version: str, case: str) -> None:
    credential = BAD_CREDENTIALS[case]
    response = post(version, auth=credential)
    body = problem(response, 401)
    assert response["headers"]["WWW-Authenticate"].startswith("Bearer")
    if credential and len(credential) > 20:
        assert credential.split(" ", 1)[1] not in response["body"]  # the token is never echoed
    assert "test-secret" not in body["detail"]
    assert table_counts(settings) == (0, 0)


def test_audience_and_issuer_are_checked_when_configured(settings: Settings) -> None:
    with use_settings(replace(settings, jwt_audience="payments-api", jwt_issuer="https://issuer.example")):
        good = token(aud="payments-api", iss="https://issuer.example")
        assert post(auth=f"Bearer {good}", key="k-good")["statusCode"] == 201
        for bad in (token(aud="other-api", iss="https://issuer.example"),
                    token(aud="payments-api", iss="https://evil.example"),
                    token(iss="https://issuer.example")):  # fmt: skip
            problem(post(auth=f"Bearer {bad}", key="k-bad"), 401)


def test_no_key_configured_and_no_claims_is_401_never_a_default(aws: Settings) -> None:
    body = problem(post(auth=f"Bearer {token()}"), 401)
    assert "no JWT key is configured" in body["detail"]


def test_algorithm_confusion_is_refused(aws: Settings) -> None:
    """An HS256 token 'signed' with the RSA public key must not verify when only the public key is configured."""
    forged = jwt.api_jws.PyJWS(algorithms=["HS256"])
    forged._algorithms["HS256"].prepare_key = lambda key: key  # what a naive verifier would accept
    claims = json.dumps({"merchant_id": "merchant-1", "exp": int(time.time()) + 300}).encode()
    forged_token = forged.encode(claims, RSA_PUBLIC.encode(), algorithm="HS256")
    with use_settings(replace(aws, jwt_public_key=RSA_PUBLIC)):
        problem(post(auth=f"Bearer {forged_token}"), 401)


# -- request validation ---------------------------------------------------------------------------------------------


def test_missing_idempotency_key_is_400(settings: Settings) -> None:
    body = problem(post(key=None), 400)
    assert body["invalid_params"][0]["name"] == "Idempotency-Key"


@pytest.mark.parametrize("key", ["k" * 256, "bad\tkey"])
def test_invalid_idempotency_key_is_400(settings: Settings, key: str) -> None:
    assert problem(post(key=key), 400)["invalid_params"][0]["name"] == "Idempotency-Key"


INVALID_BODIES = [
    ("{not json", "body"),
    ('{"amount": NaN, "currency": "USD"}', "body"),
    ("", "body"),
    ([1250, "USD"], "body"),
    ({"currency": "USD"}, "amount"),
    ({"amount": 1250}, "currency"),
    ({**BODY, "amount": 0}, "amount"),
    ({**BODY, "amount": -5}, "amount"),
    ({**BODY, "amount": 12.5}, "amount"),
    ({**BODY, "amount": "1250"}, "amount"),
    ({**BODY, "amount": True}, "amount"),
    ({**BODY, "amount": MAX_AMOUNT + 1}, "amount"),
    ({**BODY, "currency": "usd"}, "currency"),
    ({**BODY, "currency": "ABC"}, "currency"),
    ({**BODY, "currency": 840}, "currency"),
    ({**BODY, "customer_id": ""}, "customer_id"),
    ({**BODY, "description": "d" * 501}, "description"),
    ({**BODY, "description": 7}, "description"),
    ({**BODY, "metadata": ["a"]}, "metadata"),
    ({**BODY, "metadata": {"k": 1}}, "metadata.k"),
    ({**BODY, "metadata": {f"k{i}": "v" for i in range(21)}}, "metadata"),
    ({**BODY, "card_number": "4111111111111111"}, "card_number"),
    ("x" * (process.MAX_BODY_BYTES + 1), "body"),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("body", "field"), INVALID_BODIES, ids=[f for _, f in INVALID_BODIES])
def test_invalid_bodies_get_400_naming_the_field_and_write_nothing(settings, version, body, field) -> None:
    response = post(version, body=body)
    assert problem(response, 400)["invalid_params"][0]["name"] == field
    assert "4111111111111111" not in response["body"]
    assert table_counts(settings) == (0, 0)


def test_other_methods_are_405(settings: Settings) -> None:
    event = api_event("2.0", "GET", "/payments", headers={"Authorization": f"Bearer {token()}"})
    response = process.handler(event, None)
    problem(response, 405)
    assert response["headers"]["Allow"] == "POST"


# -- idempotency conflicts and failures -----------------------------------------------------------------------------


def test_same_key_with_another_body_is_422(settings: Settings) -> None:
    assert post()["statusCode"] == 201
    problem(post(body={**BODY, "amount": 9999}), 422)
    assert table_counts(settings) == (1, 0)


def test_a_repeat_while_the_processor_call_is_in_flight_is_409_then_resolved(settings: Settings) -> None:
    """The first request recorded its authorisation and is still waiting for the processor (its lease runs): a
    repeat is 409 with Retry-After and changes nothing; once the lease has run out, a repeat resolves the call."""
    local = replace(settings, processor="local")
    with use_settings(local):
        create_tables(local)
        card = {**BODY, "payment_method": "pm_card_visa"}
        payment_id = payment_id_for("merchant-1", "idem-1")
        now = datetime.now(UTC)
        call = ProcessorCallAttribute(operation="authorize", key=processor_key(payment_id, "authorize"), amount=1250,
                                      started_at=now, lease_until=now + timedelta(seconds=20))  # fmt: skip
        PaymentService().create_payment("merchant-1", "idem-1", 1250, "USD", description=BODY["description"],
                                        payment_method="pm_card_visa", processor_call=call)  # fmt: skip
        process._default_dependencies.cache_clear()
        response = post(body=card)
        problem(response, 409)
        assert 1 <= int(response["headers"]["Retry-After"]) <= 20
        assert PaymentService().get_payment("merchant-1", payment_id).status == "pending"
        bind_models(local).payment(payment_id).update(
            actions=[Payment.processor_call.lease_until.set(now - timedelta(seconds=1))], add_version_condition=False
        )
        resolved = post(body=card)
        assert resolved["statusCode"] == 201 and resolved["headers"]["Idempotent-Replayed"] == "true"
        assert json.loads(resolved["body"])["status"] == "authorized"


def test_unexpected_failure_is_500_without_internals_and_can_be_retried(settings, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("connection string postgres://admin:hunter2@db")

    monkeypatch.setattr(PaymentService, "create_payment", broken)
    response = post()
    body = problem(response, 500)
    assert "hunter2" not in response["body"] and body["detail"] == "the request could not be processed"
    monkeypatch.undo()
    assert post()["statusCode"] == 201  # the failed attempt released its claim


def test_lambda_context_sets_the_in_progress_lease(settings: Settings) -> None:
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 12_345

    assert process._lease(Context()).total_seconds() == 12.345
    assert process._lease(None) is None
    event = api_event("2.0", "POST", "/payments", body=BODY,
                      headers={"Authorization": f"Bearer {token()}", "Idempotency-Key": "ctx"})  # fmt: skip
    assert process.handler(event, Context())["statusCode"] == 201


def test_import_creates_no_clients() -> None:
    code = (
        "import payment_examples.handlers.process, payment_examples.core.aws as aws\n"
        "import payment_examples.tables.models as m\n"
        "assert aws._client.cache_info().currsize == 0 and m.bind_models.cache_info().currsize == 0\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_dependencies_are_built_once_and_reused_across_invocations(settings: Settings) -> None:
    process._default_dependencies.cache_clear()
    for key in ("warm-1", "warm-2", "warm-3"):
        assert process.handler(
            api_event("2.0", "POST", "/payments", body=BODY,
                      headers={"Authorization": f"Bearer {token()}", "Idempotency-Key": key}), None
        )["statusCode"] == 201  # fmt: skip
    info = process._default_dependencies.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_tokens_and_card_numbers_never_reach_the_logs(settings: Settings, monkeypatch) -> None:
    import io
    import logging

    stream = io.StringIO()
    log_handler = logging.StreamHandler(stream)
    package_logger = logging.getLogger("payment_examples")
    package_logger.addHandler(log_handler)
    monkeypatch.setattr(package_logger, "level", logging.DEBUG)
    secret_token = token()
    try:
        post(auth=f"Bearer {secret_token}", key="log-1")
        post(auth=f"Bearer {secret_token}", key="log-2", body={**BODY, "card_number": "4111111111111111"})
        monkeypatch.setattr(PaymentService, "create_payment", lambda *a, **k: 1 / 0)
        post(auth=f"Bearer {secret_token}", key="log-3")  # a 500 logs the exception
    finally:
        package_logger.removeHandler(log_handler)
    logged = stream.getvalue()
    assert "payment request" in logged and "unhandled error" in logged  # the logs were captured
    assert secret_token not in logged and "4111111111111111" not in logged and HS_SECRET not in logged


def test_a_token_for_another_audience_is_refused_even_with_no_audience_configured(settings: Settings) -> None:
    problem(post(auth=f"Bearer {token(aud='another-service')}"), 401)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [("%%%not-base64", "base64"), ("//79/g==", "base64"), ("[" * (process.MAX_BODY_BYTES - 1), "nested")],
    ids=["bad base64", "not utf-8", "deep nesting"],
)
def test_undecodable_bodies_are_400_not_500(settings: Settings, raw: str, reason: str) -> None:
    encoded = not raw.startswith("[")
    event = api_event(
        "2.0", "POST", "/payments", headers={"Authorization": f"Bearer {token()}", "Idempotency-Key": "k"}
    )
    event.update(body=raw, isBase64Encoded=encoded)
    body = problem(process.handler(event, None), 400)
    assert body["invalid_params"][0]["name"] == "body" and reason in body["detail"]
