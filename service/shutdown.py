"""Graceful shutdown: on SIGTERM the server serves on as a lame duck, stops taking connections without dropping one
it already took, and lets every accepted request finish; then it exits.

The steps after SIGTERM, in the API worker:

1. ``/readyz`` answers 503 (BentoML's route, through ``VisionService.__is_ready__``) and every response says
   ``Connection: close``, while requests are served as before for ``RESNET_LAB_LAME_DUCK_SECONDS``: a load balancer
   that health-checks ``/readyz`` takes the replica out of rotation, and keep-alive clients move off.
2. New connections are refused from then on: a socket filter on the listening socket drops new SYNs (established
   connections are untouched), and the connections the kernel had already queued are accepted and served for
   ``SETTLE_SECONDS``.
3. uvicorn's own graceful shutdown: it stops listening, closes idle connections and waits for the requests in flight,
   at most ``--timeout-graceful-shutdown`` seconds (the image's command sets it, see ``deploy/bento``).

Why step 2: ``bentoml serve`` is a circus arbiter that owns the listening socket and hands it to the worker as an
inherited descriptor. When uvicorn stops it closes only its own copy, so the kernel keeps completing handshakes into
the socket's queue until the arbiter exits, and then resets them: clients saw requests accepted and then
``ConnectionResetError``. With the filter, no handshake completes after step 2; a client's retransmitted SYN meets
the closed port once the process has gone and gets a clean "connection refused", which load balancers retry.

BentoML and uvicorn behaviour this relies on (``tests/test_shutdown.py`` fails if it changes): the worker runs
uvicorn, whose SIGTERM handler (``uvicorn.Server.handle_exit``) is installed before the ASGI lifespan starts, and
BentoML's ``/readyz`` asks the service's ``__is_ready__``. Step 2 needs Linux (``SO_ATTACH_FILTER``); elsewhere it
is skipped with a log line and step 3 follows step 1.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import signal
import socket
import stat
import struct
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger("bentoml.resnet_lab")

SETTLE_SECONDS = 1.0  # after new SYNs stop: handshakes under way complete and queued connections send their request
_SO_ATTACH_FILTER, _SO_DETACH_FILTER = 26, 27  # <asm-generic/socket.h>; Python's socket module lacks them
# Classic BPF on a TCP socket sees the TCP header at offset 0; byte 13 holds the flags. Drop SYN without ACK (a new
# connection), keep everything else (handshake ACKs, data and FINs of established connections).
_DROP_NEW_CONNECTIONS = [
    (0x30, 0, 0, 13),  # ldb [13]
    (0x54, 0, 0, 0x12),  # and #(SYN | ACK)
    (0x15, 0, 1, 0x02),  # jeq #SYN, then drop, else keep
    (0x06, 0, 0, 0),  # ret #0: drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: keep the whole packet
]

_draining = False
_tasks: set[asyncio.Task[None]] = set()  # the event loop keeps only weak references to tasks


def draining() -> bool:
    """Whether SIGTERM has started the shutdown (``/readyz`` then answers 503)."""
    return _draining


def _listening_tcp_sockets() -> list[socket.socket]:
    """Duplicates of this process's listening TCP sockets (the caller closes them)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if not stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        if (
            sock.family in (socket.AF_INET, socket.AF_INET6)
            and sock.type == socket.SOCK_STREAM
            and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        ):
            found.append(sock)
        else:
            sock.close()
    return found


def refuse_new_connections() -> int:
    """Drop new connection attempts on every listening TCP socket of this process; returns how many sockets. Where
    the kernel does not let this process attach a socket filter (a container's seccomp profile may not), says so
    and refuses nothing: uvicorn's own shutdown follows all the same."""
    if not sys.platform.startswith("linux"):
        logger.info("not Linux: new connections are not refused before uvicorn stops")
        return 0
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in _DROP_NEW_CONNECTIONS))
    fprog = struct.pack("HL", len(_DROP_NEW_CONNECTIONS), ctypes.addressof(program))
    refused = 0
    for sock in _listening_tcp_sockets():
        with sock:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)  # on the socket, so in every process
                refused += 1
            except OSError as error:
                logger.warning("cannot refuse new connections (%s): the drain goes on without", error.strerror)
    return refused


def accept_new_connections() -> None:
    """Remove the filter of ``refuse_new_connections`` (a worker that circus restarts inherits the socket)."""
    if not sys.platform.startswith("linux"):
        return
    for sock in _listening_tcp_sockets():
        with sock:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_DETACH_FILTER, 0)
            except OSError as error:
                if error.errno != errno.ENOENT:  # ENOENT: no filter attached, the usual case
                    raise


async def _shut_down(lame_duck_seconds: float, uvicorn_exit: Callable[[int, FrameType | None], Any]) -> None:
    logger.info("SIGTERM: /readyz answers 503; serving %s s more (lame duck), then draining", lame_duck_seconds)
    try:
        await asyncio.sleep(lame_duck_seconds)
        refused = refuse_new_connections()
        logger.info("new connections refused on %d listening socket(s); serving those already queued", refused)
        await asyncio.sleep(SETTLE_SECONDS)
    finally:  # whatever failed before, the server still stops: a worker that never exits waits for its SIGKILL
        uvicorn_exit(signal.SIGTERM, None)  # uvicorn stops listening and waits for the requests in flight


def install(lame_duck_seconds: float) -> bool:
    """Take over SIGTERM from uvicorn (from the ASGI lifespan, in the worker's main thread); False if uvicorn's
    handler is not the one installed (then SIGTERM stops the server as uvicorn alone would)."""
    import uvicorn

    uvicorn_exit = signal.getsignal(signal.SIGTERM)
    if not isinstance(getattr(uvicorn_exit, "__self__", None), uvicorn.Server):
        logger.warning("SIGTERM handler is %r, not uvicorn's: no lame duck or drain on SIGTERM", uvicorn_exit)
        return False
    accept_new_connections()
    loop = asyncio.get_running_loop()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        global _draining
        if _draining:  # circus forwards the arbiter's SIGTERM; a signal to the whole group arrives twice
            return
        _draining = True
        loop.call_soon_threadsafe(lambda: _tasks.add(loop.create_task(_shut_down(lame_duck_seconds, uvicorn_exit))))

    signal.signal(signal.SIGTERM, on_sigterm)
    return True


class GracefulShutdown:
    """ASGI middleware: installs the SIGTERM handling at lifespan start; while draining, responses close their
    connection."""

    def __init__(self, app: Callable[..., Any], lame_duck_seconds: float) -> None:
        self.app = app
        self.lame_duck_seconds = lame_duck_seconds

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            install(self.lame_duck_seconds)
        elif scope["type"] == "http":
            send = _closing_when_draining(send)
        await self.app(scope, receive, send)


def _closing_when_draining(send: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapped(message: dict[str, Any]) -> None:
        if _draining and message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await send(message)

    return wrapped
