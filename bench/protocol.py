"""The clients' protocols side by side in one run: ``/classify`` vs the Open Inference Protocol v2 binary path, one
request carrying 32 images vs 32 one-image requests, and what API keys cost.

For each model two real ``bentoml serve`` run at once on the same file: one without keys, one with
``RESNET_LAB_API_KEYS``. aiohttp clients send the same real photos to every cell:

- ``/classify`` one image per multipart request, and v2 ``infer`` one image per request in Triton's binary tensor
  format (the ``image`` BYTES input, what ``tritonclient.http`` sends by default), at concurrency 1 and 8;
- one ``/classify`` request carrying all the images (repeated ``image`` parts) vs the same images one per request
  at concurrency 1;
- ``/classify`` at concurrency 8 on the server with keys (a key file; a valid key sent) vs without (the same header
  sent); and, in-process, what the key check itself costs per request (``RequireApiKey`` with the key file, less the
  same middleware without keys), as a share of a ``/classify`` request's time at concurrency 8.

Every cell runs ``--rounds`` times, cells interleaved; the table shows medians of images per second (the machine is
shared, and the load generator runs on the same cores). Models: the shipped default (CIFAR ResNet-20, 32 px: the
protocol's own cost shows) and a random-init ResNet-18 (224 px ImageNet photos). Writes ``docs/bench/protocol.json``.

    .venv/bin/python -m bench.protocol                       # both models, 32 images, 3 rounds
    .venv/bin/python -m bench.protocol --models default --rounds 1    # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import httpx

from report.bench_file import Column, write_results
from service.auth import ApiKeys, RequireApiKey
from service.v2_wire import serialize_bytes
from tests.server import bentoml_serve
from toolkit import cli, data_folder
from toolkit.errors import UsageError

KEY = "bench-key-0123456789abcdef"
COLUMNS = [
    Column("model", "model"),
    Column("images", "images", "d"),
    Column("classify_c1", "/classify c=1 img/s", ".1f"),
    Column("v2_c1", "v2 binary c=1 img/s", ".1f"),
    Column("v2_vs_classify_c1", "v2 / classify c=1", ".3f", "x"),
    Column("classify_c8", "/classify c=8 img/s", ".1f"),
    Column("v2_c8", "v2 binary c=8 img/s", ".1f"),
    Column("v2_vs_classify_c8", "v2 / classify c=8", ".3f", "x"),
    Column("batch", "one request of all img/s", ".1f"),
    Column("batch_vs_single", "one request / one per request", ".2f", "x"),
    Column("keyed_c8", "with keys c=8 img/s", ".1f"),
    Column("auth_cost", "keys cost, end to end", ".1%"),
    Column("key_check_us", "key check µs/request", ".1f"),
    Column("key_check_share", "key check / request time c=8", ".2%"),
]
Request = Callable[[], tuple[object, dict[str, str]]]  # -> (aiohttp body, headers), made afresh per request


def form(images: list[bytes]) -> aiohttp.FormData:
    """A multipart body with each image in field ``image``."""
    data = aiohttp.FormData()
    for image in images:
        data.add_field("image", image, filename="upload.jpg", content_type="image/jpeg")
    return data


def v2_binary(images: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """A v2 request in Triton's binary format: the ``image`` BYTES input, binary outputs."""
    raw = serialize_bytes(images)
    header = json.dumps({
        "inputs": [{"name": "image", "shape": [len(images)], "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }).encode()  # fmt: skip
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


async def post_all(url: str, route: str, requests: list[Request], concurrency: int) -> float:
    """Send every request, ``concurrency`` in flight; wall seconds. Any answer but 200 stops the benchmark."""
    pending = iter(requests)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=1800)) as session:

        async def client() -> None:
            for make in pending:
                body, headers = make()
                async with session.post(
                    route, data=body, headers={"Authorization": f"Bearer {KEY}", **headers}
                ) as answer:
                    await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"{url}{route} answered {answer.status}: {(await answer.text())[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - started


def cells(model: str, photos: list[bytes]) -> dict[str, tuple[str, str, list[Request], int]]:
    """Each cell: (server, route, requests, concurrency); every cell sends all ``photos`` once."""
    infer = f"/v2/models/{model}/infer"
    one_by_one = [lambda p=p: (form([p]), {}) for p in photos]
    v2_one = [lambda p=p: v2_binary([p]) for p in photos]
    return {
        "classify_c1": ("plain", "/classify", one_by_one, 1),
        "v2_c1": ("plain", infer, v2_one, 1),
        "batch": ("plain", "/classify", [lambda: (form(photos), {})], 1),
        "classify_c8": ("plain", "/classify", one_by_one, 8),
        "v2_c8": ("plain", infer, v2_one, 8),
        "keyed_c8": ("keyed", "/classify", one_by_one, 8),
    }


def key_check_seconds(key_file: Path, calls: int = 20_000) -> float:
    """Seconds per request that ``RequireApiKey`` with ``key_file`` adds over the same middleware without keys."""

    async def app(scope: dict, receive: object, send: object) -> None:
        return None

    scope = {"type": "http", "path": "/classify", "headers": [(b"authorization", f"Bearer {KEY}".encode())]}

    async def run(keys: ApiKeys) -> float:
        middleware = RequireApiKey(app, keys)
        started = time.perf_counter()
        for _ in range(calls):
            await middleware(scope, None, None)
        return (time.perf_counter() - started) / calls

    with_keys, without = [], []
    for _ in range(5):  # alternate; the smallest of each is the least disturbed by other load
        with_keys.append(asyncio.run(run(ApiKeys(f"@{key_file}"))))
        without.append(asyncio.run(run(ApiKeys(""))))
    return min(with_keys) - min(without)


def measure(name: str, model_file: str, photos: list[bytes], rounds: int, work: Path) -> dict:
    """One model's row: median images/s of each cell over interleaved rounds, and the ratios."""
    env = {"RESNET_LAB_MODEL": model_file, "BENTOML_HOME": str(work / "bentoml"),
           "RESNET_LAB_MAX_IMAGES": str(len(photos))}  # fmt: skip
    key_file = work / "api_keys"
    key_file.write_text(f"{KEY}\n")
    with (
        bentoml_serve(env, work / f"{name}-plain.log") as plain,
        bentoml_serve({**env, "RESNET_LAB_API_KEYS": f"@{key_file}"}, work / f"{name}-keyed.log") as keyed,
    ):
        servers = {"plain": plain.url, "keyed": keyed.url}
        model = httpx.get(f"{plain.url}/info").json()["model"]
        plan = cells(model, photos)
        for server, route, requests, concurrency in plan.values():  # warm-up: the queue's cost model, ORT's arenas
            asyncio.run(post_all(servers[server], route, requests[:8], concurrency))
        rates: dict[str, list[float]] = {cell: [] for cell in plan}
        for _ in range(rounds):
            for cell, (server, route, requests, concurrency) in plan.items():
                wall = asyncio.run(post_all(servers[server], route, requests, concurrency))
                rates[cell].append(len(photos) / wall)
                print(f"{name} {cell}: {rates[cell][-1]:.1f} img/s")
    row: dict = {"model": name, "images": len(photos)}
    row |= {cell: statistics.median(values) for cell, values in rates.items()}
    row["v2_vs_classify_c1"] = row["v2_c1"] / row["classify_c1"]
    row["v2_vs_classify_c8"] = row["v2_c8"] / row["classify_c8"]
    row["batch_vs_single"] = row["batch"] / row["classify_c1"]
    row["auth_cost"] = 1 - row["keyed_c8"] / row["classify_c8"]
    row["key_check_us"] = 1e6 * key_check_seconds(key_file)
    row["key_check_share"] = row["key_check_us"] / 1e6 * row["classify_c8"]  # of one request's share of a second
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    """Measure each model and write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "resnet18"], help="default and/or resnet18")
    parser.add_argument("--images", type=int, default=32, help="photos per cell (default 32)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per cell (default 5)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-protocol-"))
    rows = []
    for name in args.models:
        if name == "default":
            photos = [data for data, _ in data_folder.cifar_jpegs(args.images)]
            model_file = ""
        else:
            from bench.serve_load import make_model

            photos = [path.read_bytes() for path in data_folder.imagenet_sample_files(args.images)]
            model_file = str(make_model(name, work)[1])
        if len(photos) < args.images:
            raise UsageError(f"{args.images} photos wanted, {len(photos)} found under {data_folder.data_dir()}")
        rows.append(measure(name, model_file, photos, args.rounds, work))
    notes = (
        f"medians of {args.rounds} interleaved rounds of {args.images} real photos per cell, images/s; aiohttp clients "
        "on the same cores; keys cost, end to end = 1 - (with keys / without) at c=8 (noise-bound); key check: "
        "in-process, min of 5 runs of 20,000 calls"
    )
    write_results("protocol", COLUMNS, rows, notes)
    for row in rows:
        print(row)
    return rows


if __name__ == "__main__":
    cli.entry_point(main)
