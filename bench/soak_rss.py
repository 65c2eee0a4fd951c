"""Soak test: does the serving worker's memory level off? Its RSS after every ``--every`` requests.

Starts ``bentoml serve`` of this repository (the embedded default model unless ``--model``), finds the worker (the
process that loaded ONNX Runtime), then uploads real ImageNet photos to ``POST /classify`` from ``--concurrency``
aiohttp clients in segments of ``--every`` requests. After each segment, with nothing in flight and no connection
open, it reads the worker's RSS (anonymous and file-backed parts), open fds and threads. Writes
``docs/bench/soak_rss.json``. Exit status 1 when RSS after the last segment exceeds RSS after the first (the
warm-up: lazy imports, ORT arenas, thread pools) by more than ``--tolerance``; 2 when requests failed.

    .venv/bin/python -m bench.soak_rss                               # 10 x 1,000 requests, 16 clients
    .venv/bin/python -m bench.soak_rss --env MALLOC_ARENA_MAX=2      # extra environment for the server
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

from report.bench_file import Column, write_results
from tests.server import LocalServer, bentoml_serve
from toolkit import data_folder
from toolkit.errors import UsageError

COLUMNS = [
    Column("requests", "requests", ","),
    Column("rss", "worker RSS MiB", ".1f"),
    Column("anon", "anonymous MiB", ".1f"),
    Column("change", "vs first", "+.1f", "%"),
    Column("fds", "open fds", "d"),
    Column("threads", "threads", "d"),
    Column("rps", "req/s", ".1f"),
    Column("errors", "non-200", "d"),
]


def loaded_onnxruntime(process: psutil.Process) -> bool:
    """Whether the process mapped ONNX Runtime's library."""
    try:
        with open(f"/proc/{process.pid}/maps") as maps:
            return any("onnxruntime" in line for line in maps)
    except OSError:
        return False


def find_worker(server: LocalServer, timeout: float = 60) -> psutil.Process:
    """The one process of the server's tree that loaded ONNX Runtime."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [psutil.Process(pid) for pid in server.pids()[1:] if loaded_onnxruntime(psutil.Process(pid))]
        if len(workers) == 1:
            return workers[0]
        time.sleep(0.5)
    raise RuntimeError(f"no single worker of server pid {server.process.pid} loaded onnxruntime within {timeout:.0f} s")


def memory(process: psutil.Process) -> dict[str, float]:
    """RSS and its anonymous part (MiB, /proc/PID/status), open fds, threads."""
    fields = {}
    with open(f"/proc/{process.pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                fields[key] = int(value.split()[0]) / 1024
    return {
        "rss": fields["VmRSS"],
        "anon": fields["RssAnon"],
        "fds": process.num_fds(),
        "threads": process.num_threads(),
    }


async def segment(url: str, images: list[bytes], start: int, args: argparse.Namespace) -> int:
    """``args.every`` uploads (photos cycled from ``start``), ``args.concurrency`` in flight; the non-200 count.

    A session per segment: its connections close before the memory reading, so none sits idle past the server's
    keep-alive timeout (uvicorn: 5 s) while the reading runs.
    """
    errors = 0
    indices = iter(range(start, start + args.every))
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:

        async def client() -> None:
            nonlocal errors
            for index in indices:
                form = aiohttp.FormData()
                form.add_field("image", images[index % len(images)], filename="photo.JPEG", content_type="image/jpeg")
                async with session.post("/classify", data=form) as response:
                    await response.read()
                    errors += response.status != 200

        await asyncio.gather(*(client() for _ in range(args.concurrency)))
    return errors


def soak(url: str, worker: psutil.Process, images: list[bytes], args: argparse.Namespace) -> list[dict]:
    """Every segment's row: requests so far, memory, req/s, errors."""
    rows: list[dict] = []
    for done in range(0, args.requests, args.every):
        started = time.perf_counter()
        errors = asyncio.run(segment(url, images, done, args))
        seconds = time.perf_counter() - started
        time.sleep(args.settle)
        rows.append({"requests": done + args.every, "rps": args.every / seconds, "errors": errors, **memory(worker)})
        rows[-1]["change"] = 100 * (rows[-1]["rss"] / rows[0]["rss"] - 1)
        print(", ".join(f"{key} {value:.1f}" for key, value in rows[-1].items()), flush=True)
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000, help="total uploads (default 10,000)")
    parser.add_argument("--every", type=int, default=1_000, help="read memory after every N requests (default 1,000)")
    parser.add_argument("--concurrency", type=int, default=16, help="clients in flight (default 16)")
    parser.add_argument("--photos", type=int, default=50, help="distinct real photos, cycled (default 50)")
    parser.add_argument("--tolerance", type=float, default=0.05, help="allowed RSS growth, last vs first (0.05)")
    parser.add_argument("--settle", type=float, default=1.0, help="idle seconds before each reading (default 1)")
    parser.add_argument("--model", default="", help="RESNET_LAB_MODEL for the server (default: the embedded one)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra server environment")
    args = parser.parse_args(argv)
    if args.every < 1 or args.requests < args.every or args.requests % args.every:
        parser.error("--requests must be a positive multiple of --every")
    if any("=" not in item for item in args.env):
        parser.error("--env takes KEY=VALUE")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the soak, write the results file, return the exit status."""
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="soak-rss-"))
    env = {
        "RESNET_LAB_MODEL": args.model,
        "BENTOML_HOME": str(work / "bentoml"),
        **dict(e.split("=", 1) for e in args.env),
    }
    images = [path.read_bytes() for path in data_folder.imagenet_sample_files(args.photos)]
    if not images:
        raise UsageError(f"no ImageNet samples under {data_folder.data_dir()}; set RESNET_LAB_DATA")
    with bentoml_serve(env, work / "server.log") as server:
        worker = find_worker(server)
        print(f"worker pid {worker.pid}: {args.requests:,} requests, {args.concurrency} clients", flush=True)
        rows = soak(server.url, worker, images, args)
    first, last = rows[0], rows[-1]
    verdict = "PASS" if last["rss"] <= (1 + args.tolerance) * first["rss"] else "FAIL"
    notes = (
        f"{verdict}: worker RSS after {last['requests']:,} requests {last['change']:+.1f}% vs after "
        f"{first['requests']:,} (limit +{100 * args.tolerance:g}%); {args.concurrency} clients, {len(images)} real "
        "photos cycled"
    )
    write_results("soak_rss", COLUMNS, rows, notes)
    print(notes)
    if any(row["errors"] for row in rows):
        return 2
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
