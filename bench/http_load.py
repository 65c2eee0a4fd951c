"""Upload load for the benchmarks: POST files to a route with a number of requests in flight (aiohttp).

aiohttp rather than httpx: on shared cores the client's CPU is taken from the server (httpx ~5 ms per upload here,
aiohttp ~1 ms).
"""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp


async def drive(
    url: str, route: str, bodies: list[bytes], concurrency: int, requests: int, fields: dict[str, str] | None = None
) -> tuple[list[float], float]:
    """``requests`` uploads of ``bodies`` (cycled) in field ``image`` plus ``fields``, ``concurrency`` in flight:
    (each latency, wall seconds). Any answer but 200 stops the benchmark."""
    latencies: list[float] = []
    counter = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=1800)) as session:

        async def client() -> None:
            for index in counter:
                form = aiohttp.FormData()
                form.add_field("image", bodies[index % len(bodies)], filename="upload", content_type="image/jpeg")
                for key, value in (fields or {}).items():
                    form.add_field(key, value)
                started = time.perf_counter()
                async with session.post(route, data=form) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url}{route} answered {response.status}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def load(url: str, route: str, bodies: list[bytes], concurrency: int, requests: int) -> dict[str, float]:
    """Requests/s and p50 ms of ``drive`` (from synchronous code)."""
    latencies, wall = asyncio.run(drive(url, route, bodies, concurrency, requests))
    return {"rps": requests / wall, "p50_ms": 1000 * statistics.median(latencies)}
