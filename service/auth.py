"""API keys: ``RESNET_LAB_API_KEYS`` (comma-separated keys, or ``@/path/to/file``) and the middleware that asks for
them.

With keys configured, every route needs ``Authorization: Bearer KEY`` except the probes (``/livez``, ``/readyz``,
``/healthz``, ``/v2/health/*``), ``/metrics`` and the documentation and demo pages; without one the answer is a JSON
401. Keys are compared in constant time (a digest of each, so their lengths do not show) and never logged. A key
file holds keys separated by newlines or commas (``#`` starts a comment); it is read again when its modification
time, size or inode changes, so a rotated Kubernetes Secret takes effect without a restart. A key file that cannot
be read refuses every request (it never falls back to no keys).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from pathlib import Path
from typing import Any

from service.errors import error_body

logger = logging.getLogger("bentoml.resnet_lab")
OPEN_PATHS = frozenset(
    {"/livez", "/readyz", "/healthz", "/v2/health/live", "/v2/health/ready", "/metrics", "/docs.json", "/", "/demo",
     "/demo.js"}
)  # fmt: skip
OPEN_PREFIXES = ("/static_content/",)  # BentoML's documentation page assets
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def is_open(path: str) -> bool:
    """Whether ``path`` answers without a key (probes, metrics, documentation)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_keys(text: str) -> list[str]:
    """Keys separated by commas or newlines; blank entries and ``#`` comments ignored."""
    lines = (line.split("#", 1)[0] for line in text.splitlines())
    return [key.strip() for line in lines for key in line.split(",") if key.strip()]


class ApiKeys:
    """The configured keys (``RESNET_LAB_API_KEYS``): ``enabled``, and ``accepts(key)`` in constant time."""

    def __init__(self, setting: str) -> None:
        self.path = Path(setting[1:]).expanduser() if setting.startswith("@") else None
        self.enabled = bool(setting.strip())
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._digests: list[bytes] = [] if self.path else [_digest(key) for key in parse_keys(setting)]
        if self.path is not None:
            self._digests = self._read()  # a missing file stops the service at start, not at the first request
            if self._stamp is None:
                raise FileNotFoundError(f"RESNET_LAB_API_KEYS=@{self.path}: cannot read the key file")

    def _read(self) -> list[bytes]:
        assert self.path is not None
        try:
            status = self.path.stat()
            stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
            if stamp == self._stamp:
                return self._digests
            digests = [_digest(key) for key in parse_keys(self.path.read_text())]
        except OSError as error:
            if self._stamp is not None:
                logger.warning("API key file %s unreadable (%s): refusing every request", self.path, error.strerror)
            self._stamp = None
            return []
        if self._stamp is not None:
            logger.info("API key file %s changed: %d keys", self.path, len(digests))
        self._stamp = stamp
        return digests

    def current(self) -> list[bytes]:
        """The digests of the keys accepted now (a key file is checked for changes)."""
        if self.path is None:
            return self._digests
        with self._lock:
            self._digests = self._read()
            return self._digests

    def accepts(self, key: str) -> bool:
        """Whether ``key`` is one of the keys; every key is compared, in constant time."""
        offered = _digest(key)
        found = False
        for digest in self.current():
            found |= hmac.compare_digest(offered, digest)
        return found


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header (the scheme is case-insensitive), else None."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class RequireApiKey:
    """ASGI middleware: without a configured key, a request to anything but the open paths gets a JSON 401."""

    def __init__(self, app: Any, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.keys.enabled or is_open(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope.get("headers") or [])
        if token is not None and self.keys.accepts(token):
            await self.app(scope, receive, send)
            return
        problem = "missing API key" if token is None else "API key not accepted"
        payload = json.dumps(
            error_body(f"{problem}: send the header `Authorization: Bearer KEY` (RESNET_LAB_API_KEYS)")
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"www-authenticate", b"Bearer"),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def warn_if_exposed(host: str | None, keys: ApiKeys) -> None:
    """One warning line when the server listens beyond this machine without keys (``host`` None: unknown)."""
    if host is not None and host not in LOOPBACK_HOSTS and not keys.enabled:
        logger.warning(
            "resnet-lab: listening on %s without API keys: anyone who reaches this host can use the models; "
            "set RESNET_LAB_API_KEYS",
            host,
        )
