"""The one place the service relies on BentoML beyond its public API, for BentoML ``BENTOML_VERSION`` exactly (pinned
in ``pyproject.toml`` and ``bentofile.yaml``). Everything else goes through public API: ``@bentoml.service``,
``@bentoml.api``, ``@bentoml.asgi_app`` (a FastAPI app, whose OpenAPI paths BentoML merges into ``/docs.json``),
``add_asgi_middleware``, ``bentoml.get_current_service``, ``bentoml.models`` and ``bentoml.metrics``.

What stays private, and why:

- ``batching_queue``: BentoML's adaptive batching queue (``CorkDispatcher``, what its own ``batchable=True`` APIs
  run on), fed in-process. Calling a batchable API through ``to_async`` instead would serialise every image to JSON
  and send it through the whole ASGI stack a second time (~5 ms CPU per request here). Its latency model still
  decides which requests cannot make their deadline, but it no longer holds a request back hoping for batch mates:
  the wait it learns includes the waiting it imposed, so after a burst of traffic a lone request kept waiting for
  nobody (measured here: ~65 ms extra per request, minutes after the burst). Batches still form while ONNX Runtime
  is busy with the previous one. Items may hold several images (``batch_size``); the queue splits them as needed.
- ``cancel_request_timers``: BentoML 1.4's ``TimeoutMiddleware`` arms ``loop.call_later(timeout, ...)`` per request
  and never cancels it; the timer handle holds a copy of the request's contextvars (its OpenTelemetry span and
  attributes, BentoML's trace context), so every answered request stays in memory for ``traffic.timeout`` (120 s
  here): measured, worker RSS grew ~5.5 MiB per 1,000 requests without levelling off (``bench/soak_rss.py``).
- ``RequestInput``: an input spec whose ``from_http_request`` (the hook BentoML calls to parse an API's body) leaves
  the body to the handler, which reads it from ``ctx.request``. BentoML's own parsers fetch URLs given in file
  fields (server-side request forgery), write every upload to a temporary file, ``json.loads`` form values (so
  ``top_k=true`` passed as 1) and answer several client mistakes with a 500.
- ``serve_host``: the ``--host`` that ``bentoml serve`` was given, from click's context while the CLI imports the
  service (BentoML offers no API for it); only for the warning about serving beyond loopback without keys.
- The OpenAPI document: the FastAPI app also describes ``/classify`` and ``/detect`` (BentoML's own description
  lists neither their statuses nor both encodings); BentoML's router answers those paths first (API routes precede
  mounted apps) and ``/docs.json`` shows the mounted app's description of a path over its own. The FastAPI
  operations call the same code as the BentoML APIs, so whichever answers, the answer is the same.

``tests/test_service_parts.py`` fails loudly if an upgrade moves or changes any of these (and if the installed
BentoML is not ``BENTOML_VERSION``); ``tests/test_protocol_openapi.py`` checks the merged document.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import bentoml
from bentoml._internal.marshal.dispatcher import CorkDispatcher, Optimizer
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from starlette.responses import JSONResponse

BENTOML_VERSION = "1.4.40"
BatchCallback = Callable[[Sequence[Any]], Awaitable[Sequence[Any]]]


def batching_queue(
    run_batch: BatchCallback,
    max_batch_size: int,
    max_latency_ms: int,
    overloaded: Callable[[], Any],
    batch_size: Callable[[Any], int] = lambda _: 1,
) -> Callable[[Any], Awaitable[Any]]:
    """``await enqueue(item)`` -> its result; concurrent items are merged into one ``run_batch(items)`` call.

    ``batch_size(item)``: how many samples an item holds (an array of several images: its length, split along its
    first axis when a batch is full). An item the queue cannot answer within ``max_latency_ms`` gets
    ``overloaded()`` (which may raise) instead.
    """
    return dispatcher(max_batch_size, max_latency_ms, overloaded, batch_size)(run_batch)


def dispatcher(
    max_batch_size: int,
    max_latency_ms: int,
    overloaded: Callable[[], Any],
    batch_size: Callable[[Any], int] = lambda _: 1,
) -> CorkDispatcher:
    """The ``CorkDispatcher`` behind ``batching_queue`` (call it with the batch function to get ``enqueue``)."""
    cork = CorkDispatcher(
        max_latency_in_ms=max_latency_ms,
        max_batch_size=max_batch_size,
        fallback=overloaded,
        get_batch_size=batch_size,
        batch_dim=(0, 0),
    )
    cork.optimizer = DispatchWhenFree(cork.max_latency)
    return cork


class DispatchWhenFree(Optimizer):
    """BentoML's batching optimizer (per-batch cost model) without its learned deliberate wait."""

    def trigger_refresh(self) -> None:
        """Fit the cost model as BentoML does; never wait for batch mates on purpose."""
        super().trigger_refresh()
        self.wait = 0


class RequestInput(bentoml.IODescriptor):
    """An API input spec that parses nothing: the handler reads ``ctx.request`` itself."""

    @classmethod
    async def from_http_request(cls, request: Any, serde: Any) -> RequestInput:
        """BentoML's parsing hook: the body is left unread, for the handler."""
        return cls()


def serve_host() -> str | None:
    """The host ``bentoml serve`` binds (BentoML's default 0.0.0.0 when not given); None outside that command."""
    import click

    context = click.get_current_context(silent=True)
    if context is None or context.info_name != "serve" or "host" not in context.params:
        return None
    return context.params["host"] or "0.0.0.0"


async def _call_and_cancel_timer(self: TimeoutMiddleware, scope: Any, receive: Any, send: Any) -> None:
    """BentoML 1.4.40's ``TimeoutMiddleware.__call__``, plus ``timer.cancel()`` once the request is answered."""
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    future = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        await waiter
    except TimeoutError:
        if future.cancel():
            message = f"Not able to process the request in {self.timeout} seconds"
            await JSONResponse({"error": message}, status_code=504)(scope, receive, send)
    else:
        await future
    finally:
        timer.cancel()  # drop the handle, and the request context it holds, now rather than after the timeout


def cancel_request_timers() -> None:
    """Patch ``TimeoutMiddleware`` (idempotent); call before the server handles requests."""
    TimeoutMiddleware.__call__ = _call_and_cancel_timer
