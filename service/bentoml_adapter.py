"""The one place the service relies on BentoML beyond its public API, for BentoML ``BENTOML_VERSION`` exactly (pinned
in ``pyproject.toml`` and ``bentofile.yaml``). Everything else goes through public API: ``@bentoml.service``,
``@bentoml.api``, ``@bentoml.asgi_app`` (a FastAPI app, whose OpenAPI paths BentoML merges into ``/docs.json``),
``add_asgi_middleware``, ``bentoml.get_current_service``, ``bentoml.models`` and ``bentoml.metrics``.

What stays private, and why:

- ``batching_queue``: BentoML's adaptive batching queue (``CorkDispatcher``, what its own ``batchable=True`` APIs
  run on), fed in-process. Calling a batchable API through ``to_async`` instead would serialise every image to JSON
  and send it through the whole ASGI stack a second time (~5 ms CPU per request here). Its cost model and its
  warm-up still decide which requests cannot make their deadline; its dispatch loop is replaced (``EventDrivenCork``)
  for two reasons. It held a request back hoping for batch mates for a wait it learns, and that wait includes the
  waiting it imposed, so after a burst of traffic a lone request kept waiting for nobody (measured here: ~65 ms
  extra per request, minutes after the burst). And while a batch runs it polls the queue every millisecond (its
  ``TICKET_INTERVAL``), a thousand wake-ups of the event loop a second under load. Ours dispatches the moment the
  runtime is free and otherwise sleeps until a request arrives or a batch ends; a finished batch starts the next
  before its own requests are answered (that takes the event loop a while, and the runtime would wait). Batches
  still form while the runtime is busy with the previous one. Items may hold several images (``batch_size``); the
  queue splits them as needed.
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
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import bentoml
from bentoml._internal.marshal.dispatcher import CorkDispatcher
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from starlette.responses import JSONResponse

BENTOML_VERSION = "1.4.40"
logger = logging.getLogger(__name__)
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
    """The dispatcher behind ``batching_queue`` (call it with the batch function to get ``enqueue``)."""
    return EventDrivenCork(
        max_latency_in_ms=max_latency_ms,
        max_batch_size=max_batch_size,
        fallback=overloaded,
        get_batch_size=batch_size,
        batch_dim=(0, 0),
    )


class EventDrivenCork(CorkDispatcher):
    """BentoML's ``CorkDispatcher`` that dispatches as soon as the runtime is free and otherwise sleeps until a
    request arrives or a batch ends (no polling, no deliberate wait for batch mates)."""

    async def controller(self) -> None:
        """BentoML's warm-up of the cost model, then: on each arrival or finished batch, shed and dispatch."""
        try:
            await self._train_cost_model()
        except Exception:  # as BentoML's loop: serve on with the cost model as it stands
            logger.exception("batching queue: fitting the cost model failed")
        while True:
            async with self._wake_event:
                await self._wake_event.wait_for(self._has_work)
            self._dispatch_if_free()

    def _dispatch_if_free(self) -> None:
        """Shed what cannot make its deadline, then the queued requests into one batch if none is running."""
        while self._queue and self._first_cannot_make_it():
            self._queue.popleft().future.cancel()  # the caller gets ``fallback()``
        if self._queue and not self._sema.is_locked():
            self._sema.acquire()
            self._loop.create_task(self.outbound_call(tuple(self._get_inputs())))

    async def outbound_call(self, inputs_info: tuple[Any, ...], training: bool = False) -> None:
        """BentoML's call of one batch, reordered: the next batch starts before this one's requests are answered
        (answering them takes the event loop a while; the runtime would sit idle meanwhile)."""
        started = time.time()
        try:
            results: list[Any] = list(await self.callback(tuple(job.data for job in inputs_info)))
            if len(results) != len(inputs_info):
                raise RuntimeError(f"a batch of {len(inputs_info)} requests got {len(results)} results")
            wait = 0 if training else started - inputs_info[0].enqueue_time
            self.optimizer.log_outbound(n=len(inputs_info), wait=wait, duration=time.time() - started)
        except asyncio.CancelledError:  # the queue is shutting down
            self._sema.release()
            for job in inputs_info:
                job.future.cancel()
            raise
        except Exception as error:  # as BentoML: each request of the batch gets the exception as its result
            results = [error] * len(inputs_info)
        self._sema.release()
        if not training:  # the warm-up picks its own batch sizes
            self._dispatch_if_free()
        for job, result in zip(inputs_info, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)
        async with self._wake_event:
            self._wake_event.notify_all()

    async def _train_cost_model(self) -> None:
        """BentoML's own warm-up (``CorkDispatcher.controller``): batches of 1, 2 and 3 to fit the cost model."""
        optimizer = self.optimizer
        await self.train_optimizer(optimizer.N_SKIPPED_SAMPLE, optimizer.N_SKIPPED_SAMPLE + 6, 1)
        for required, batch in ((6, 1), (5, 2), (3, 3)):
            await self.train_optimizer(required, 1, batch)
            optimizer.trigger_refresh()

    def _has_work(self) -> bool:
        return bool(self._queue) and (not self._sema.is_locked() or self._first_cannot_make_it())

    def _first_cannot_make_it(self) -> bool:
        """BentoML's shedding rule: the first request's wait plus the batch's estimated run exceeds the deadline."""
        waiting = len(self._queue)
        waited = time.time() - self._queue[0].enqueue_time
        if waiting > 1:
            return waited + self.optimizer.o_a * waiting + self.optimizer.o_b >= self.max_latency
        return self._sema.is_locked() and waited >= self.max_latency


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
