"""Stripe-shaped responses: the error body, JSON answers and the canned fault answers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ApiError",
    "Response",
    "error_response",
    "fault_response",
    "json_response",
    "mask_key",
    "mask_restricted",
]

_DOC_URL = "https://stripe.com/docs/error-codes"


class ApiError(Exception):
    """A Stripe-shaped error response, raised inside request handling."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = list(headers)

    def body(self, request_id: str) -> dict[str, Any]:
        """The ``{"error": {...}}`` body, fields in Stripe's order."""
        error: dict[str, Any] = {}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"{_DOC_URL}/{self.code.replace('_', '-')}"
        error["message"] = self.message
        if self.param is not None:
            error["param"] = self.param
        error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        error["type"] = self.type
        return {"error": error}


def mask_key(key: str) -> str:
    """Mask a key the way Stripe quotes it in a 401: keep the prefix and the last 4 characters."""
    m = re.match(r"^((?:sk|rk|pk)_(?:test|live)_)(.*)$", key)
    prefix, rest = (m.group(1), m.group(2)) if m else ("", key)
    if len(rest) <= 4:
        return prefix + "*" * len(rest)
    return prefix + "*" * (len(rest) - 4) + rest[-4:]


def mask_restricted(key: str) -> str:
    """Mask a restricted key the way Stripe quotes it in a 403: the prefix and the last 6 characters."""
    m = re.match(r"^(rk_(?:test|live)_)(.*)$", key)
    prefix, rest = (m.group(1), m.group(2)) if m else ("", key)
    return f"{prefix}***{rest[-6:]}"


@dataclass
class Response:
    """An answer to write: status, headers, and a body in memory or streamed."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    # A streamed body (result files): total length and a factory for the pieces.
    length: int | None = None
    stream: Callable[[], Iterator[bytes | memoryview]] | None = None

    @property
    def content_length(self) -> int:
        return self.length if self.length is not None else len(self.body)


def json_response(status: int, payload: Any) -> Response:
    """A JSON answer, indented as Stripe indents its bodies."""
    body = json.dumps(payload, indent=2).encode()
    return Response(status, [("Content-Type", "application/json")], body)


def error_response(error: ApiError, request_id: str) -> Response:
    """The JSON answer for an error, with its extra headers."""
    response = json_response(error.status, error.body(request_id))
    response.headers.extend(error.headers)
    return response


def fault_response(name: str, request_id: str) -> Response:
    """The canned answer of a 429 or 5xx fault, with ``Stripe-Should-Retry`` where the name says."""
    if name.startswith("429"):
        headers = []
        if name != "429":
            headers.append(("Stripe-Should-Retry", name.rsplit("_", 1)[1]))
        error = ApiError(
            429,
            "Request rate limit exceeded. You can learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
            code="rate_limit",
            headers=headers,
        )
        return error_response(error, request_id)
    status = int(name[:3])
    headers = [("Stripe-Should-Retry", "false")] if name.endswith("should_retry_false") else []
    text = {
        500: "An unknown error occurred. We've already been notified of the problem, but if you need any "
        "help, you can reach us at support.stripe.com/contact.",
        502: "The API is temporarily unreachable (bad gateway). Please retry your request.",
        503: "The API is temporarily unavailable. Please retry your request in a moment.",
    }[status]
    return error_response(ApiError(status, text, type="api_error", headers=headers), request_id)
