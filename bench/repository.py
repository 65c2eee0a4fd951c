"""Loading while serving: one model's throughput alone and while another model of the same repository is unloaded,
loaded and replaced over and over, in one run; every answer counted.

One real ``bentoml serve`` with ``RESNET_LAB_MODEL_REPOSITORY`` holding ``served/1`` and ``cycled/1``, both a
random-weight ResNet-18 exported by ``python -m export``. Each round: ``/classify`` on ``served`` (real ImageNet
photos, multipart, c=8) for ``--seconds`` alone, then for as long as ``--cycles / --rounds`` cycles of ``cycled``
take, each cycle ``unload``, ``load``, a new file in place and ``load`` again (the reload of a changed file), all
through ``tritonclient.http``. Writes ``docs/bench/repository.json``.

    .venv/bin/python -m bench.repository                 # 20 cycles over 4 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import tritonclient.http as triton

from inference.repository import ModelRepository
from report.bench_file import Column, write_results
from tests.server import bentoml_serve
from toolkit import cli, data_folder

COLUMNS = [
    Column("figure", "figure"),
    Column("value", "value", ".3g"),
    Column("target", "target"),
]


def export_resnet18(work: Path) -> Path:
    """A random-weight ResNet-18, exported as users export torchvision's files."""
    import torch
    import torchvision

    from export.command import main as export_main

    torch.manual_seed(0)
    state_dict = work / "resnet18-f37072fd.pth"  # the published file's name: its transform
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), state_dict)
    output = work / "resnet18.onnx"
    export_main(["--torchvision-state-dict", str(state_dict), "--output", str(output)])
    return output


def process_cpu_per_load(source: Path, repeats: int = 5) -> dict[str, float]:
    """CPU seconds this process spends per load of ``source`` (median): compiled here, and by the helper."""
    from inference.model import LoadedModel
    from service.settings import Settings

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def here() -> None:
        LoadedModel.load(source, Settings()).verify()

    def aside() -> None:
        LoadedModel.load_aside(source, Settings())

    found = {}
    for name, load in (("here", here), ("aside", aside)):
        seconds = []
        for _ in range(repeats + 1):  # the first: imports, the helper's start
            started = cpu()
            load()
            seconds.append(cpu() - started)
        found[name] = statistics.median(seconds[1:])
    return found


def place(root: Path, name: str, source: Path) -> None:
    """``source`` as ``root/name/1/model.onnx``, a new file (so a loaded version sees the change)."""
    ModelRepository(root).place(name, 1, source)


async def traffic(url: str, photos: list[bytes], concurrency: int, stop: threading.Event) -> tuple[int, int, float]:
    """``/classify`` on ``served`` with ``concurrency`` in flight until ``stop``: (answered 200, other, seconds)."""
    counts = {"ok": 0, "failed": 0}
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def client(offset: int) -> None:
            index = offset
            while not stop.is_set():
                form = aiohttp.FormData()
                form.add_field("image", photos[index % len(photos)], filename="photo.jpg", content_type="image/jpeg")
                form.add_field("model", "served")
                try:
                    async with session.post("/classify", data=form) as response:
                        await response.read()
                        counts["ok" if response.status == 200 else "failed"] += 1
                except aiohttp.ClientError:
                    counts["failed"] += 1
                index += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(client(offset) for offset in range(concurrency)))
    return counts["ok"], counts["failed"], time.perf_counter() - started


def cycle(client: triton.InferenceServerClient, root: Path, source: Path, load_seconds: list[float]) -> None:
    """Unload, load, replace the file and load again (each load timed)."""
    client.unload_model("cycled")
    for replace in (False, True):
        if replace:
            place(root, "cycled", source)
        started = time.perf_counter()
        client.load_model("cycled")
        load_seconds.append(time.perf_counter() - started)
        if not client.is_model_ready("cycled", "1"):
            raise RuntimeError("cycled/1 not ready after its load")


def measure_round(url: str, photos: list[bytes], root: Path, source: Path, args: argparse.Namespace,
                  found: dict[str, list[float]]) -> None:  # fmt: skip
    """One round: alone for ``--seconds``, then during ``--cycles / --rounds`` cycles."""
    stop = threading.Event()
    timer = threading.Timer(args.seconds, stop.set)
    timer.start()
    ok, failed, seconds = asyncio.run(traffic(url, photos, args.concurrency, stop))
    found["alone_rps"].append(ok / seconds)
    found["failed"].append(failed)
    client = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=600)
    stop = threading.Event()
    errors: list[str] = []

    def cycles() -> None:
        try:
            for _ in range(args.cycles // args.rounds):
                cycle(client, root, source, found["load_s"])
                found["cycles"].append(1)
        except Exception as error:  # counted and shown: a benchmark row, not a crash
            errors.append(repr(error))
        finally:
            stop.set()

    cycler = threading.Thread(target=cycles)
    cycler.start()
    ok, failed, seconds = asyncio.run(traffic(url, photos, args.concurrency, stop))
    cycler.join()
    found["during_rps"].append(ok / seconds)
    found["failed"].append(failed)
    found["cycle_errors"].extend([1] * len(errors))
    for error in errors:
        print("cycle failed:", error)
    print({key: round(values[-1], 2) if values else None for key, values in found.items()})


def main(argv: list[str] | None = None) -> list[dict]:
    """Measure and write the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.repository", description=__doc__,
                                     formatter_class=cli.HelpFormatter)  # fmt: skip
    parser.add_argument("--rounds", type=int, default=4, help="alone/during pairs, interleaved")
    parser.add_argument("--cycles", type=int, default=20, help="unload/load/replace cycles in all")
    parser.add_argument("--seconds", type=float, default=20, help="traffic alone per round")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight to the served model")
    args = parser.parse_args(argv)
    photos = [path.read_bytes() for path in data_folder.imagenet_sample_files(64)]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        source = export_resnet18(work)
        cpu = process_cpu_per_load(source)
        root = work / "models"
        place(root, "served", source)
        place(root, "cycled", source)
        env = {"BENTOML_HOME": str(work / "bentoml"), "RESNET_LAB_MODEL_REPOSITORY": str(root)}
        found: dict[str, list[float]] = {
            key: [] for key in ("alone_rps", "during_rps", "failed", "load_s", "cycles", "cycle_errors")
        }
        with bentoml_serve(env, work / "serve.log") as server:
            warm = threading.Event()
            threading.Timer(5, warm.set).start()
            asyncio.run(traffic(server.url, photos, args.concurrency, warm))
            for _ in range(args.rounds):
                measure_round(server.url, photos, root, source, args, found)
    alone, during = statistics.median(found["alone_rps"]), statistics.median(found["during_rps"])
    ratios = [cycling / quiet for quiet, cycling in zip(found["alone_rps"], found["during_rps"], strict=True)]
    rows = [
        {"figure": "load/unload/replace cycles of `cycled`", "value": len(found["cycles"]), "target": ">= 20"},
        {"figure": "cycles that failed", "value": len(found["cycle_errors"]), "target": "0"},
        {"figure": "requests to `served` not answered 200", "value": sum(found["failed"]), "target": "0"},
        {"figure": "`served` alone, req/s (median of rounds)", "value": alone, "target": "-"},
        {"figure": "`served` while `cycled` cycles, req/s", "value": during, "target": "-"},
        {"figure": "ratio, while cycling / alone", "value": during / alone, "target": ">= 0.90"},
        {"figure": "ratio in the worst round", "value": min(ratios), "target": "-"},
        {"figure": "load of `cycled`, s (median)", "value": statistics.median(found["load_s"]), "target": "-"},
        {"figure": "server CPU per load, compiled in the server, s", "value": cpu["here"], "target": "-"},
        {"figure": "server CPU per load, compiled by the helper, s", "value": cpu["aside"], "target": "-"},
    ]
    for row in rows:
        print(row)
    notes = (f"random-weight ResNet-18 (both models), /classify c={args.concurrency} on ImageNet photos, "
             f"{args.rounds} rounds of {args.seconds:.0f} s alone and {args.cycles // args.rounds} cycles")  # fmt: skip
    write_results("repository", COLUMNS, rows, notes)
    return rows


if __name__ == "__main__":
    cli.entry_point(main)
