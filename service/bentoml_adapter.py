"""The one place the service touches BentoML internals (BentoML 1.4 is pinned below 1.5).

- ``batching_queue``: BentoML's adaptive batching queue (``CorkDispatcher``, what its own ``batchable=True`` APIs
  run on), fed in-process. Calling a batchable API through ``to_async`` instead would serialise every image to JSON
  and send it through the whole ASGI stack a second time (~5 ms CPU per request here). Its latency model still
  decides which requests cannot make their deadline, but it no longer holds a request back hoping for batch mates:
  the wait it learns includes the waiting it imposed, so after a burst of traffic a lone request kept waiting for
  nobody (measured here: ~65 ms extra per request, minutes after the burst). Batches still form while ONNX Runtime
  is busy with the previous one.
- ``serde_for``: BentoML's request parser for a media type (it looks media types up case-sensitively; HTTP says
  they are not).
- ``cancel_request_timers``: BentoML 1.4's ``TimeoutMiddleware`` arms ``loop.call_later(timeout, ...)`` per request
  and never cancels it; the timer handle holds a copy of the request's contextvars (its OpenTelemetry span and
  attributes, BentoML's trace context), so every answered request stays in memory for ``traffic.timeout`` (120 s
  here): measured, worker RSS grew ~5.5 MiB per 1,000 requests without levelling off (``bench/soak_rss.py``).

``tests/test_service_parts.py`` fails loudly if an upgrade moves or changes either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from _bentoml_impl.serde import ALL_SERDE, Serde
from bentoml._internal.marshal.dispatcher import CorkDispatcher, Optimizer
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from starlette.responses import JSONResponse

BatchCallback = Callable[[Sequence[Any]], Awaitable[Sequence[Any]]]


def batching_queue(
    run_batch: BatchCallback, max_batch_size: int, max_latency_ms: int, overloaded: Callable[[], Any]
) -> Callable[[Any], Awaitable[Any]]:
    """``await enqueue(item)`` -> its result; concurrent items are merged into one ``run_batch(items)`` call.

    An item the queue cannot answer within ``max_latency_ms`` gets ``overloaded()`` (which may raise) instead.
    """
    return dispatcher(max_batch_size, max_latency_ms, overloaded)(run_batch)


def dispatcher(max_batch_size: int, max_latency_ms: int, overloaded: Callable[[], Any]) -> CorkDispatcher:
    """The ``CorkDispatcher`` behind ``batching_queue`` (call it with the batch function to get ``enqueue``)."""
    cork = CorkDispatcher(
        max_latency_in_ms=max_latency_ms,
        max_batch_size=max_batch_size,
        fallback=overloaded,
        get_batch_size=lambda _: 1,  # one item per queued request
    )
    cork.optimizer = DispatchWhenFree(cork.max_latency)
    return cork


class DispatchWhenFree(Optimizer):
    """BentoML's batching optimizer (per-batch cost model) without its learned deliberate wait."""

    def trigger_refresh(self) -> None:
        """Fit the cost model as BentoML does; never wait for batch mates on purpose."""
        super().trigger_refresh()
        self.wait = 0


def serde_for(media_type: str) -> Serde:
    """BentoML's parser for ``media_type`` (lower case)."""
    return ALL_SERDE[media_type]()


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
