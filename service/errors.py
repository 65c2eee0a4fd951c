"""Client mistakes as a JSON 4xx ``{"error": "<sentence>"}``: the exception to raise, its sentences, the body fix-up.

BentoML 1.4 answers every API call through ``api_endpoint_wrapper`` (``_bentoml_impl/server/app.py``), which maps
a pydantic ``ValidationError`` to 400 ``{"error": "1 validation error for Input", "detail": [<pydantic dicts>]}``,
a ``BentoMLException`` with a 4xx ``error_code`` to that status with the body ``[{"error": str(exc)}]`` (a one-item
list: ``detail = ({"error": str(exc)},)``, a stray tuple), and any other exception to a generic 500. So client
mistakes are raised as ``RequestRejected`` (a ``bentoml.exceptions.BadInput``, status 400) where they arise (see
``service/inputs.py``), and ``ErrorBodyShape`` rewrites BentoML's two 4xx shapes into ``{"error": "<sentence>"}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

from bentoml.exceptions import BadInput
from starlette.requests import ClientDisconnect

# pydantic error-type prefixes (int_parsing, int_type, int_from_float, ...) -> what the value must be
_KINDS = {
    "int": "an integer",
    "float": "a number",
    "decimal": "a number",
    "bool": "true or false",
    "string": "text",
    "list": "a list",
    "dict": "an object",
}


class RequestRejected(BadInput):
    """A client mistake: BentoML answers it with ``error_code`` (400 unless given) and ``str(self)``."""

    def __init__(self, problem: str, how: str = "", status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(f"{problem}; {how}" if how else problem, error_code=status)


class QuietRejections(logging.Filter):
    """Client-side failures (``RequestRejected``, a client gone mid-upload) as one WARNING line instead of BentoML's
    ERROR with a traceback (``log_exception`` in ``api_endpoint_wrapper``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (RequestRejected, ClientDisconnect)):
            what = str(error)[:300] if isinstance(error, RequestRejected) else "client disconnected mid-request"
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "%s %s refused: %s", (*(record.args or ("?", "?"))[:2], what)
            record.exc_info = record.exc_text = None
        return True


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def describe_error(error: Mapping[str, Any]) -> str:
    """One pydantic error dict (``ValidationError.errors()`` or BentoML's ``detail`` item) as a sentence."""
    loc = [str(part) for part in error.get("loc", ()) if part != "root"]
    name = ".".join(loc)
    field = f'field "{name}"' if name else "the body"
    kind = str(error.get("type", ""))
    got = f", got {_shown(error['input'])}" if "input" in error and not isinstance(error["input"], Mapping) else ""
    if kind == "missing":
        return f"missing {field}"
    if kind == "path_type":  # BentoML's file fields (_bentoml_sdk/validators.py FileSchema.decode)
        return f"{field} must be a file upload{got}"
    if kind == "json_invalid":
        return f"{field} is not valid JSON"
    prefix = kind.split("_", 1)[0]
    if prefix in _KINDS and (kind.endswith(("_type", "_parsing")) or kind.startswith("int_from")):
        return f"{field} must be {_KINDS[prefix]}{got}"
    message = str(error.get("msg", "is invalid"))
    return f"{field}: {message[:1].lower()}{message[1:]}{got}"


def describe_errors(errors: Iterable[Mapping[str, Any]]) -> str:
    """All of a validation failure's errors as one sentence (first five)."""
    sentences = [describe_error(error) for error in errors]
    more = f" (and {len(sentences) - 5} more)" if len(sentences) > 5 else ""
    return "; ".join(sentences[:5]) + more or "invalid input"


def normalized_error_body(body: bytes) -> bytes | None:
    """BentoML's 4xx shapes as ``{"error": ...}``; None where ``body`` is neither (then it passes as it is)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict) and "error" in data[0]:
        data = data[0]  # BentoMLException 4xx: [{"error": ...}]
    elif isinstance(data, dict) and isinstance(data.get("detail"), list) and "error" in data:
        data = {"error": describe_errors(item for item in data["detail"] if isinstance(item, Mapping))}
    else:
        return None
    return json.dumps({"error": str(data["error"])}).encode()


class ErrorBodyShape:
    """ASGI middleware: 4xx JSON answers in BentoML's shapes leave as ``{"error": "<sentence>"}``.

    Only 4xx ``application/json`` responses are held back (up to ``max_bytes``); everything else streams through.
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
            if not more_body and (fixed := normalized_error_body(body)) is not None:
                body = fixed
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                start = {**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": more_body})

        async def shaping_send(message: dict[str, Any]) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if 400 <= message["status"] < 500 and content_type.startswith(b"application/json"):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                chunks.append(message.get("body", b""))
                more = bool(message.get("more_body"))
                if more and sum(map(len, chunks)) <= self.max_bytes:
                    return
                body = b"".join(chunks)
                chunks.clear()
                await release(body, more)  # too big to be ours: pass it on unchanged
                return
            await send(message)

        await self.app(scope, receive, shaping_send)
