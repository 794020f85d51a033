"""Merchant identity for API requests.

1. Claims an API Gateway authorizer already verified (Cognito/JWT authorizer claims, or a Lambda authorizer's
   context) carry ``merchant_id``: trusted as they are, because API Gateway verified them before invoking us.
2. Otherwise an ``Authorization: Bearer <JWT>`` header, verified here with PyJWT: HS256 with
   ``PAYMENT_JWT_SECRET``, or RS256/ES256 with ``PAYMENT_JWT_PUBLIC_KEY``. ``exp`` is required; ``aud``/``iss``
   are checked when configured, and with no audience configured a token that names one (meant for another
   service) is refused. The key is chosen by algorithm from what is configured, and each key is used only
   with its own algorithm family, so ``alg: none`` and algorithm confusion (an RS256 public key used as an HS256
   secret) are refused. Nothing configured and no authorizer claims: 401, never a default secret.

Why (1) is safe: API Gateway builds ``requestContext``; a client cannot put an ``authorizer`` there. In
``template.yaml`` the claims exist only when the optional JWT authorizer is configured (``JwtIssuer``): every route
then requires a token from that issuer for ``JwtAudience``, and its ``merchant_id`` claim is used as is. Without it,
every request goes through (2). Deployed, the handlers refuse to start without an audience and a key
(``config.require_api_settings``), whichever path the requests take.
"""

from __future__ import annotations

from dataclasses import dataclass

import jwt

from payment_examples.core import Settings, identifier
from payment_examples.core.errors import AuthenticationError, ValidationError

MERCHANT_CLAIM = "merchant_id"
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
LEEWAY_SECONDS = 30


@dataclass(frozen=True)
class Identity:
    merchant_id: str
    source: str  # "authorizer" or "jwt"


def authorizer_claims(event: dict) -> dict:
    """Claims an API Gateway authorizer put in the event (REST v1 or HTTP API v2), or {}."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    if not isinstance(authorizer, dict):
        return {}
    for candidate in (
        authorizer.get("claims"),  # v1: Cognito user pool authorizer
        (authorizer.get("jwt") or {}).get("claims"),  # v2: JWT authorizer
        authorizer.get("lambda"),  # v2: Lambda authorizer context
    ):
        if isinstance(candidate, dict) and MERCHANT_CLAIM in candidate:
            return candidate
    return authorizer if MERCHANT_CLAIM in authorizer else {}  # v1: Lambda authorizer context


def merchant_identity(event: dict, authorization: str | None, settings: Settings) -> Identity:
    """The calling merchant, from verified authorizer claims or a Bearer JWT; ``AuthenticationError`` otherwise."""
    claims = authorizer_claims(event)
    if claims:
        return Identity(_merchant_claim(claims), "authorizer")
    if not authorization:
        raise AuthenticationError("missing Authorization: Bearer token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("the Authorization header must be 'Bearer <token>'")
    return Identity(_merchant_claim(verify_token(token.strip(), settings)), "jwt")


def verify_token(token: str, settings: Settings) -> dict:
    keys: dict[str, str] = {}
    if settings.jwt_secret:
        keys["HS256"] = settings.jwt_secret
    if settings.jwt_public_key:
        keys.update(dict.fromkeys(ASYMMETRIC_ALGORITHMS, settings.jwt_public_key))
    if not keys:
        raise AuthenticationError("this service accepts no bearer tokens (no JWT key is configured)")
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError:
        raise AuthenticationError("the bearer token is not a well-formed JWT") from None
    if algorithm not in keys:
        raise AuthenticationError(f"token algorithm {algorithm!r} is not accepted")
    try:
        return jwt.decode(
            token,
            keys[algorithm],
            algorithms=[algorithm],  # exactly one: the key decides the algorithm, never the token
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=LEEWAY_SECONDS,
            # With no audience configured, PyJWT refuses any token that names one (meant for another service).
            options={"require": ["exp"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthenticationError("the bearer token has expired") from None
    except jwt.InvalidAudienceError:
        raise AuthenticationError("the bearer token is not meant for this audience") from None
    except jwt.InvalidIssuerError:
        raise AuthenticationError("the bearer token comes from an unexpected issuer") from None
    except jwt.MissingRequiredClaimError as error:
        raise AuthenticationError(f"the bearer token lacks the {error.claim!r} claim") from None
    except jwt.PyJWTError:
        raise AuthenticationError("the bearer token could not be verified") from None


def _merchant_claim(claims: dict) -> str:
    try:
        return identifier(MERCHANT_CLAIM, claims.get(MERCHANT_CLAIM))
    except ValidationError:
        raise AuthenticationError(f"the credentials carry no valid {MERCHANT_CLAIM!r} claim") from None
