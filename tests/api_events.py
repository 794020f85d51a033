"""Builders of API Gateway proxy events (REST v1 and HTTP API v2) and signed test tokens for handler tests."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt

HS_SECRET = "test-secret-long-enough-for-every-hmac-algorithm-0123456789"


def token(secret: str = HS_SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    body = {"merchant_id": "merchant-1", "exp": int(time.time()) + 300, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, secret, algorithm=algorithm)


def api_event(
    version: str,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: Any = None,
    query: dict[str, str] | None = None,
    path_parameters: dict[str, str] | None = None,
    claims: dict[str, Any] | None = None,
    base64_body: bool = False,
) -> dict:
    """A minimal but faithful proxy event. ``body`` may be a str (sent as is) or JSON-able (serialised)."""
    raw = body if body is None or isinstance(body, str) else json.dumps(body)
    if base64_body and raw is not None:
        raw = base64.b64encode(raw.encode()).decode()
    if version == "1.0":
        authorizer = {"claims": claims} if claims else None
        return {
            "resource": "/payments",
            "path": path,
            "httpMethod": method,
            "headers": headers or {},
            "multiValueHeaders": {k: [v] for k, v in (headers or {}).items()},
            "queryStringParameters": query,
            "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
            "pathParameters": path_parameters,
            "requestContext": {"httpMethod": method, "path": path, "stage": "test", "authorizer": authorizer},
            "body": raw,
            "isBase64Encoded": base64_body,
        }
    authorizer = {"jwt": {"claims": claims, "scopes": []}} if claims else None
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "&".join(f"{k}={v}" for k, v in (query or {}).items()),
        "headers": {k.lower(): v for k, v in (headers or {}).items()},
        "queryStringParameters": query,
        "pathParameters": path_parameters,
        "requestContext": {
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "stage": "$default",
            "authorizer": authorizer,
        },
        "body": raw,
        "isBase64Encoded": base64_body,
    }
