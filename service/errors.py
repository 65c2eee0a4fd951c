"""Every refusal leaves the service as JSON ``{"error": "<sentence>"}``: the exception to raise, its response, the
sentences for validation failures, and the middleware that gives answers made elsewhere the same shape.

Handlers raise ``RequestRejected`` (status and sentence) where a mistake is found and turn it into a response with
``error_response``; nothing of the client's reaches BentoML's exception handling. ``JsonErrors`` covers the answers
the service does not write itself: the router's 404 and 405 (plain text), BentoML's own refusals (its 4xx bodies
are a one-item list, ``[{"error": ...}]``) and FastAPI's ``{"detail": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse

# pydantic error-type prefixes (int_parsing, int_type, int_from_float, ...) -> what the value must be
_KINDS = {
    "int": "an integer",
    "float": "a number",
    "decimal": "a number",
    "bool": "true or false",
    "string": "text",
    "list": "a list",
    "dict": "an object",
    "model": "an object",
}
_BOUNDS = ("greater_than_equal", "less_than_equal", "greater_than", "less_than")


class RequestRejected(Exception):
    """A request the service refuses: the HTTP ``status`` and a sentence that says what to send instead."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST, how: str = "") -> None:
        super().__init__(f"{message}; {how}" if how else message)
        self.status = int(status)


def error_body(message: str) -> dict[str, str]:
    """The one error shape: ``{"error": message}``."""
    return {"error": message}


def error_response(rejected: RequestRejected, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """``rejected`` as the JSON answer."""
    return JSONResponse(error_body(str(rejected)), status_code=rejected.status, headers=headers)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def describe_error(error: Mapping[str, Any], bounds: Mapping[str, str] | None = None) -> str:
    """One pydantic error dict as a sentence; ``bounds``: field name -> what it must be ("an integer between...")."""
    loc = [str(part) for part in error.get("loc", ()) if part != "root"]
    name = ".".join(loc)
    field = f'field "{name}"' if name else "the body"
    kind = str(error.get("type", ""))
    got = f", got {_shown(error['input'])}" if "input" in error and not isinstance(error["input"], Mapping) else ""
    if kind == "missing":
        return f"missing {field}"
    if kind == "extra_forbidden":
        return f"unexpected {field}"
    if kind == "json_invalid":
        return "the body is not valid JSON"
    if kind in _BOUNDS and bounds and name in bounds:
        value = error.get("input")
        shown = f", got {value if isinstance(value, str) else _shown(value)}" if "input" in error else ""
        return f"{name} must be {bounds[name]}{shown}"
    prefix = kind.split("_", 1)[0]
    if prefix in _KINDS and (kind.endswith(("_type", "_parsing")) or kind.startswith("int_from")):
        return f"{field} must be {_KINDS[prefix]}{got}"
    message = str(error.get("msg", "is invalid"))
    return f"{field}: {message[:1].lower()}{message[1:]}{got}"


def describe_errors(errors: Iterable[Mapping[str, Any]], bounds: Mapping[str, str] | None = None) -> str:
    """All of a validation failure's errors as one sentence (first five)."""
    sentences = list(dict.fromkeys(describe_error(error, bounds) for error in errors))
    more = f" (and {len(sentences) - 5} more)" if len(sentences) > 5 else ""
    return "; ".join(sentences[:5]) + more or "invalid input"


def normalized_error_body(status: int, body: bytes) -> bytes | None:
    """An error body in another shape as ``{"error": ...}``; None where it already is ours."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = body.decode("utf-8", "replace").strip()
    if isinstance(data, dict) and set(data) == {"error"} and isinstance(data["error"], str):
        return None
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict) and "error" in data[0]:
        data = data[0]  # BentoMLException 4xx: [{"error": ...}]
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        message = data["error"]
    elif isinstance(data, dict) and isinstance(data.get("detail"), str):
        message = data["detail"]  # FastAPI / starlette HTTPException
    elif isinstance(data, str) and data:
        message = data[:500]
    else:
        message = _phrase(status)
    return json.dumps(error_body(message)).encode()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


class JsonErrors:
    """ASGI middleware: every 4xx and 5xx answer leaves as ``{"error": "<sentence>"}``, its headers kept.

    Only error answers are held back (up to ``max_bytes``, then passed on unchanged); everything else streams.
    """

    def __init__(self, app: Any, max_bytes: int = 64 * 1024) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] | None = None  # the http.response.start we are holding back
        chunks: list[bytes] = []

        async def release(body: bytes, more_body: bool) -> None:
            nonlocal held
            assert held is not None
            start, held = held, None
            if not more_body and (fixed := normalized_error_body(start["status"], body)) is not None:
                body = fixed
                kept = [
                    (k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")
                ]
                headers = [*kept, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                start = {**start, "headers": headers}
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": more_body})

        async def shaping_send(message: dict[str, Any]) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400 and scope["method"] != "HEAD":
                held = message
                return
            if message["type"] == "http.response.body" and held is not None:
                chunks.append(message.get("body", b""))
                more = bool(message.get("more_body"))
                if more and sum(map(len, chunks)) <= self.max_bytes:
                    return
                body = b"".join(chunks)
                chunks.clear()
                await release(body, more)  # too big to be an error sentence: pass it on unchanged
                return
            await send(message)

        await self.app(scope, receive, shaping_send)
