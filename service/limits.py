"""ASGI middleware answering 413 JSON for request bodies over the upload limit, before they are parsed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Scope = dict[str, Any]


def carries_images(path: str) -> bool:
    """The routes whose bodies hold images: ``/classify``, ``/detect`` and v2 inference."""
    return path in ("/classify", "/detect") or (path.startswith("/v2/models/") and path.endswith("/infer"))


async def _send_json(send: Any, status: int, body: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class BodySizeLimit:
    """Refuse POST bodies over ``max_bytes`` where ``limited(path)``: by Content-Length at once, else while
    streaming."""

    def __init__(self, app: Any, max_bytes: int, limited: Callable[[str], bool] = carries_images) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limited = limited

    def _message(self) -> dict[str, str]:
        return {"error": f"upload too large: the limit is {self.max_bytes:,} bytes (RESNET_LAB_MAX_UPLOAD_BYTES)"}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not self.limited(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _send_json(send, 413, self._message())
            return

        received = 0
        refused = False
        started = False

        async def counting_receive() -> dict[str, Any]:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not started:
                        await _send_json(send, 413, self._message())
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal started
            if refused:
                return  # our 413 already went out
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise
