"""BentoML's adaptive batching queue, fed in-process: the one place the service touches BentoML internals.

``CorkDispatcher`` is what BentoML's own ``batchable=True`` APIs run on, but it is not public API (BentoML 1.4 is
pinned below 1.5). Calling a batchable API through ``to_async`` instead would serialise every image to JSON and
send it through the whole ASGI stack a second time (~5 ms CPU per request here). ``tests/test_batching.py`` fails
loudly if an upgrade moves or changes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bentoml._internal.marshal.dispatcher import CorkDispatcher

BatchCallback = Callable[[Sequence[Any]], Awaitable[Sequence[Any]]]


def batching_queue(
    run_batch: BatchCallback, max_batch_size: int, max_latency_ms: int, overloaded: Callable[[], Any]
) -> Callable[[Any], Awaitable[Any]]:
    """``await enqueue(item)`` -> its result; concurrent items are merged into one ``run_batch(items)`` call.

    An item the queue cannot answer within ``max_latency_ms`` gets ``overloaded()`` (which may raise) instead.
    """
    dispatcher = CorkDispatcher(
        max_latency_in_ms=max_latency_ms,
        max_batch_size=max_batch_size,
        fallback=overloaded,
        get_batch_size=lambda _: 1,  # one item per queued request
    )
    return dispatcher(run_batch)
