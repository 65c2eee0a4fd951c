"""Continuous upload traffic with every outcome counted, for the shutdown and rollout tests and ``bench/rollout.py``.

Each client posts one upload at a time on a fresh connection (``Connection: close``), so every request is one
connection attempt and falls in exactly one of three counts: answered (HTTP 200), refused (no connection was made:
refused, or the connect timed out; nothing was sent) or failed (a connection was made but no 200 came back: an error
status, a reset, a connection closed without an answer).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

CONNECT_TIMEOUT_S = 10.0  # longer than a SYN's first retransmissions (1 s, then 3 s)
ANSWER_TIMEOUT_S = 60.0


@dataclass
class Outcomes:
    """What the clients saw, and when each answered request finished (seconds on ``time.monotonic``)."""

    answered: int = 0
    refused: int = 0
    failed: int = 0
    statuses: Counter[int] = field(default_factory=Counter)  # the non-200 statuses of failed requests
    errors: Counter[str] = field(default_factory=Counter)  # the exceptions of failed requests, by name
    answered_at: list[float] = field(default_factory=list)

    @property
    def sent(self) -> int:
        """Requests attempted: answered + refused + failed."""
        return self.answered + self.refused + self.failed

    def summary(self) -> dict[str, Any]:
        """The counts as plain values (for assertions' messages and result files)."""
        return {
            "sent": self.sent,
            "answered": self.answered,
            "refused": self.refused,
            "failed": self.failed,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
        }


class Traffic:
    """``concurrency`` clients posting ``bodies`` (cycled) to ``url + route`` from a background thread, until
    ``stop()``, ``limit`` requests, or (with ``stop_when_refused``) each client's first refused connection."""

    def __init__(
        self,
        url: str,
        route: str,
        bodies: list[bytes],
        concurrency: int,
        limit: int,
        stop_when_refused: bool = False,
    ) -> None:
        self.url, self.route, self.bodies = url, route, bodies
        self.concurrency, self.limit, self.stop_when_refused = concurrency, limit, stop_when_refused
        self.outcomes = Outcomes()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self, timeout: float = 120) -> Outcomes:
        """Let each client finish its request in progress, then return the counts."""
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"clients still busy {timeout:.0f} s after stop")
        return self.outcomes

    def done(self) -> bool:
        """Whether every client has stopped."""
        return not self._thread.is_alive()

    def wait_answered(self, count: int, timeout: float) -> None:
        """Block until ``count`` requests in all have been answered."""
        deadline = time.monotonic() + timeout
        while self.outcomes.answered < count:
            if time.monotonic() > deadline or self.done():
                raise RuntimeError(f"{count} answers expected within {timeout:.0f} s: {self.outcomes.summary()}")
            time.sleep(0.05)

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=ANSWER_TIMEOUT_S)
        async with aiohttp.ClientSession(self.url, connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self._client(session, index) for index in range(self.concurrency)))

    def _claim(self) -> bool:
        with self._lock:
            if self._stopping.is_set() or self.outcomes.sent + self._in_flight >= self.limit:
                return False
            self._in_flight += 1
            return True

    def _record(self, kind: str, detail: int | str | None = None) -> None:
        with self._lock:
            self._in_flight -= 1
            outcomes = self.outcomes
            if kind == "answered":
                outcomes.answered += 1
                outcomes.answered_at.append(time.monotonic())
            elif kind == "refused":
                outcomes.refused += 1
            else:
                outcomes.failed += 1
                (outcomes.statuses if isinstance(detail, int) else outcomes.errors)[detail] += 1

    async def _client(self, session: aiohttp.ClientSession, index: int) -> None:
        sent = index
        while self._claim():
            form = aiohttp.FormData()
            form.add_field("image", self.bodies[sent % len(self.bodies)], filename="upload.jpg")
            sent += self.concurrency
            try:
                async with session.post(self.route, data=form) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
                self._record("refused")
                if self.stop_when_refused:
                    return
                await asyncio.sleep(0.05)
                continue
            except (TimeoutError, aiohttp.ClientError) as error:
                self._record("failed", type(error).__name__)
                continue
            self._record("answered" if status == 200 else "failed", status)
