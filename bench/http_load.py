"""Upload load for the benchmarks: POST files to a route with a number of requests in flight (aiohttp).

aiohttp rather than httpx, and each form encoded once rather than per request: on shared cores the client's CPU is
taken from the server (httpx ~5 ms per upload here, aiohttp ~1 ms; ``bench.runtimes`` reports what it costs now).
"""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp
from urllib3 import encode_multipart_formdata


async def drive(
    url: str, route: str, bodies: list[bytes], concurrency: int, requests: int, fields: dict[str, str] | None = None
) -> tuple[list[float], float]:
    """``requests`` uploads of ``bodies`` (cycled) in field ``image`` plus ``fields``, ``concurrency`` in flight:
    (each latency, wall seconds). Any answer but 200 stops the benchmark."""
    latencies: list[float] = []
    counter = iter(range(requests))
    uploads = [multipart(body, fields or {}) for body in bodies]
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=1800)) as session:

        async def client() -> None:
            for index in counter:
                body, content_type = uploads[index % len(uploads)]
                started = time.perf_counter()
                async with session.post(route, data=body, headers={"Content-Type": content_type}) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url}{route} answered {response.status}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def multipart(data: bytes, fields: dict[str, str]) -> tuple[bytes, str]:
    """A form of ``data`` as file field ``image`` plus ``fields``, encoded once: (body, its content type)."""
    return encode_multipart_formdata({"image": ("upload", data, "image/jpeg"), **fields})


def load(url: str, route: str, bodies: list[bytes], concurrency: int, requests: int) -> dict[str, float]:
    """Requests/s and p50 ms of ``drive`` (from synchronous code)."""
    latencies, wall = asyncio.run(drive(url, route, bodies, concurrency, requests))
    return {"rps": requests / wall, "p50_ms": 1000 * statistics.median(latencies)}
