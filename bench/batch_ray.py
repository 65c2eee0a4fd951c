"""Offline batch classification on Ray against one process, side by side in one run, on the same real images.

For each model (the shipped default classifier, and a random-init ResNet-18 exported to the service's contract) and
the same N real CIFAR-10 test JPEGs (the service's loader: ResNet-18 resizes them to 256 and crops 224):

- raw ONNX Runtime: one session on tensors decoded beforehand (the ceiling: no reading, decoding or answers; on
  the first 512 of the images);
- the one-process loop: decode threads (one per core) overlapping one ORT session, its thread count tuned on the
  first batches (1 or one per core, the faster), answers shaped as /classify's and written to one Parquet file;
- the Ray job of ``batch`` on this machine (a local Ray), in two pool shapes;
- the same job on a Ray cluster of this machine: a head without CPUs and one, then two, worker nodes of one CPU
  each, every worker node pinned to its own core (``sched_setaffinity`` before it starts: its raylet, workers and
  actors inherit it), so a node is one core.

A Ray job streams its rows to one Parquet file written by this process, as ``--output NAME.parquet`` does. Ray's
start-up is reported apart: ``ray.init`` (or starting the cluster's nodes), and each job's fixed cost (actors
started, model shipped and loaded, the pipeline planned), measured as a one-batch job's seconds. A job's "images/s"
is what it did beyond that fixed cost: (images - one batch) / (its seconds - the one-batch job's), both jobs after
a one-batch warm-up; "all-in" is images / the job's seconds. Then the default model's job on the two-node cluster
runs as the command (``python -m batch``) twice: as is, and with one actor SIGKILLed once the first part
of its output is written.
Writes ``docs/bench/batch_ray.json``.

    .venv/bin/python -m bench.batch_ray                                   # both models, 2,000 images
    .venv/bin/python -m bench.batch_ray --models default --images 500     # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.cluster_utils import Cluster

from batch import job
from batch.workers import SCHEMA
from inference import answers, imaging
from inference.contract import DEFAULT_MODEL
from inference.model import LoadedModel
from inference.settings import InferenceSettings
from report.bench_file import Column, write_results
from report.provenance import REPO_ROOT
from toolkit import cli, data_folder
from toolkit.errors import UsageError

CORES = os.cpu_count() or 1
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
NODE_MEMORY = {"object_store_memory": 200 * 2**20}
# Ray pool shapes on this machine: one actor holding a CPU beside a decode task, or two half-CPU actors with
# half-CPU decode tasks (one ORT thread each, as the one-process loop's session with its decode threads).
LOCAL_SHAPES = {"1 actor x 1 CPU": (1, 1.0, 1.0), "2 actors x 0.5 CPU": (2, 0.5, 0.5)}
RAW_ORT_IMAGES = 512  # raw ORT's rate is measured on this many of the images
NODE_SHAPE = (0.5, 0.5)  # per one-CPU worker node: an actor of half a CPU, decode tasks of half a CPU
COLUMNS = [
    Column("model", "model"),
    Column("system", "system"),
    Column("images_per_s", "images/s", ".1f"),
    Column("all_in_images_per_s", "all-in images/s", ".1f"),
    Column("vs_loop", "vs one-process loop", ".2f", "x"),
    Column("vs_one_node", "vs 1 node", ".2f", "x"),
    Column("startup_s", "start-up s", ".1f"),
    Column("job_fixed_s", "job fixed cost s", ".1f"),
    Column("job_s", "job s", ".1f"),
]


def cifar_images(count: int, folder: Path) -> list[str]:
    """``count`` real CIFAR-10 test JPEGs (even over the classes) as files; their paths."""
    paths = []
    for index, (data, _) in enumerate(data_folder.cifar_jpegs(count)):
        path = folder / f"{index:05d}.jpg"
        path.write_bytes(data)
        paths.append(str(path))
    if len(paths) < count:
        raise UsageError(f"found {len(paths)} CIFAR-10 test images, wanted {count}: is the shared data folder there?")
    return paths


def resnet18(folder: Path) -> Path:
    """A random-init ResNet-18 exported to the service's contract (1,000 ImageNet classes)."""
    from bench.serve_load import make_model

    return make_model("resnet18", folder)[1]


def session(model: Path, threads: int) -> LoadedModel:
    return LoadedModel.load(
        model, InferenceSettings(runtime="onnxruntime", providers="CPUExecutionProvider", threads=threads)
    )


def decode(path: str, metadata: Any) -> np.ndarray:
    """The service's exact decode of a file (these images are far too small for its fast path)."""
    with open(path, "rb") as stream:
        return imaging.preprocess(stream.read(), metadata.resize_size, metadata.crop_size)


def raw_ort(model: Path, paths: list[str], batch: int) -> dict[str, Any]:
    """Images/s of one session alone on tensors decoded beforehand (the first ``RAW_ORT_IMAGES``: a rate needs no
    more), at its faster thread count."""
    best = {"images_per_s": 0.0}
    for threads in sorted({1, CORES}):
        onnx = session(model, threads)
        pixels = np.stack([decode(path, onnx.metadata) for path in paths[:RAW_ORT_IMAGES]])
        onnx.logits(pixels[:batch])  # warm-up
        started = time.perf_counter()
        for start in range(0, len(pixels), batch):
            onnx.logits(pixels[start : start + batch])
        rate = len(pixels) / (time.perf_counter() - started)
        if rate > best["images_per_s"]:
            best = {"images_per_s": rate, "threads": threads}
    return best


def one_process_loop(model: Path, paths: list[str], batch: int, threads: int, output: Path) -> float:
    """Images/s of read + decode (one thread per core, a batch ahead) + one ORT session + answers + Parquet."""
    onnx = session(model, threads)
    metadata = onnx.metadata
    chunks = [paths[start : start + batch] for start in range(0, len(paths), batch)]
    started = time.perf_counter()
    with ThreadPoolExecutor(CORES) as pool, pq.ParquetWriter(str(output), SCHEMA) as writer:
        ahead = pool.map(decode, chunks[0], [metadata] * len(chunks[0]))
        for index, chunk in enumerate(chunks):
            pixels = np.stack(list(ahead))
            if index + 1 < len(chunks):
                ahead = pool.map(decode, chunks[index + 1], [metadata] * len(chunks[index + 1]))
            logits = onnx.logits(pixels).astype(np.float32, copy=False)
            found = [answers.classification(metadata.model_name, metadata.labels, row, 5) for row in logits]
            table = {"path": chunk, "answer": [json.dumps(answer) for answer in found], "error": [None] * len(chunk)}
            writer.write_table(pa.table(table, schema=SCHEMA))
    return len(paths) / (time.perf_counter() - started)


def tuned_loop(model: Path, paths: list[str], batch: int, output: Path) -> dict[str, Any]:
    """The loop at the ORT thread count that is faster on the first batches (1 or one per core)."""
    trial = paths[: 8 * batch]
    rates = {threads: one_process_loop(model, trial, batch, threads, output) for threads in sorted({1, CORES})}
    threads = max(rates, key=rates.get)
    return {"images_per_s": one_process_loop(model, paths, batch, threads, output), "threads": threads}


def ray_job(model: Path, paths: list[str], options: job.Options, output: Path) -> float:
    """Seconds of one ``batch`` job on the connected Ray, its rows streamed into one Parquet file here."""
    metadata = job.read_metadata(model)
    started = time.perf_counter()
    rows = 0
    with pq.ParquetWriter(str(output), SCHEMA) as writer:
        for table in job.dataset(paths, options, metadata).iter_batches(batch_format="pyarrow", batch_size=None):
            writer.write_table(table)
            rows += table.num_rows
    if rows != len(paths):
        raise RuntimeError(f"the job answered {rows} rows for {len(paths)} images")
    return time.perf_counter() - started


def ray_rates(model: Path, paths: list[str], options: job.Options, batch: int, work: Path) -> dict[str, float]:
    """A one-batch job to warm up, the whole job, another one-batch job: the last is the job's fixed cost (actors
    started, model shipped and loaded, pipeline planned), and the rate is what the whole job did beyond it."""
    ray_job(model, paths[:batch], options, work / "warm.parquet")
    whole = ray_job(model, paths, options, work / "whole.parquet")
    fixed = ray_job(model, paths[:batch], options, work / "fixed.parquet")
    rate = (len(paths) - batch) / (whole - fixed) if whole > fixed else None
    return {"images_per_s": rate, "all_in_images_per_s": len(paths) / whole, "job_fixed_s": fixed, "job_s": whole}


@contextmanager
def pinned_cluster() -> Iterator[tuple[Cluster, Any]]:
    """A head without CPUs; yields it and ``add(core)``, which starts a one-CPU worker node pinned to ``core``."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, **NODE_MEMORY})
    mine = os.sched_getaffinity(0)

    def add(core: int) -> float:
        started = time.perf_counter()
        os.sched_setaffinity(0, {core})  # the node's processes inherit this; ours is restored at once
        try:
            cluster.add_node(num_cpus=1, **NODE_MEMORY)
        finally:
            os.sched_setaffinity(0, mine)
        cluster.wait_for_nodes()
        return time.perf_counter() - started

    try:
        yield cluster, add
    finally:
        cluster.shutdown()


def raylet_affinities(cluster: Cluster) -> list[list[int]]:
    """The cores each worker node's raylet may run on (its workers and actors inherit them)."""
    return [
        sorted(psutil.Process(node.all_processes["raylet"][0].process.pid).cpu_affinity())
        for node in cluster.list_all_nodes()
        if not node.head
    ]


def cli_job(cluster: Cluster, folder: Path, output: Path, kill: bool) -> dict[str, Any]:
    """``python -m batch`` on the cluster's two nodes; with ``kill``, one actor SIGKILLed once the first part
    is written. The seconds, the rows, the distinct paths."""
    args = ["--input", str(folder), "--output", str(output), "--address", cluster.address, "--actors", "2"]
    args += ["--cpus-per-actor", str(NODE_SHAPE[0]), "--cpus-per-task", str(NODE_SHAPE[1]), "--rows-per-part", "64"]
    env = {**os.environ, **RAY_ENV}
    started = time.perf_counter()
    found: dict[str, Any] = {}
    process = subprocess.Popen(
        [sys.executable, "-m", "batch", *args], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    before: set[int] = set()
    while process.poll() is None and kill and "restarted_at_s" not in found:
        actors = [p for p in cluster_processes(cluster) if "MapBatches(Answerer)" in " ".join(safe_cmdline(p))]
        if "killed_at_s" not in found and actors and output.is_dir() and any(output.glob("*.parquet")):
            before = {actor.pid for actor in actors}
            actors[0].kill()
            found["killed_at_s"] = time.perf_counter() - started
        elif "killed_at_s" in found and any(actor.pid not in before for actor in actors):
            found["restarted_at_s"] = time.perf_counter() - started
        time.sleep(0.05)
    process.wait()
    table = pq.read_table(output)
    paths = table.column("path").to_pylist()
    return {**found, "job_s": time.perf_counter() - started, "returncode": process.returncode,
            "rows": len(paths), "distinct_paths": len(set(paths)),
            "errors": table.num_rows - table.column("error").null_count}  # fmt: skip


def cluster_processes(cluster: Cluster) -> list[psutil.Process]:
    found = []
    for node in cluster.list_all_nodes():
        try:
            raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
            found += raylet.children(recursive=True)
        except psutil.NoSuchProcess:
            continue
    return found


def safe_cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def measure(name: str, model: Path, paths: list[str], batch: int, work: Path) -> list[dict]:
    """The rows of one model: the systems, then what starting Ray cost (and, for the default model, the command on
    two nodes as is and with an actor killed)."""
    print(f"{name}: raw ORT, one-process loop", flush=True)
    raw = raw_ort(model, paths, batch)
    loop = tuned_loop(model, paths, batch, work / "loop.parquet")
    rows = [
        {"model": name, "system": f"raw ONNX Runtime, {RAW_ORT_IMAGES} decoded images ({raw['threads']} ORT threads)",
         "images_per_s": raw["images_per_s"]},
        {"model": name, "system": f"one-process loop ({CORES} decode threads, {loop['threads']} ORT threads)",
         "images_per_s": loop["images_per_s"], "all_in_images_per_s": loop["images_per_s"], "vs_loop": 1.0},
    ]  # fmt: skip

    def job_row(system: str, options: job.Options, startup_s: float) -> dict:
        print(f"{name}: {system}", flush=True)
        measured = ray_rates(model, paths, options, batch, work)
        rate = measured["images_per_s"]
        vs_loop = rate / loop["images_per_s"] if rate else None
        return {"model": name, "system": system, **measured, "vs_loop": vs_loop, "startup_s": startup_s}

    started = time.perf_counter()
    ray.init(address=job.LOCAL, num_cpus=CORES, include_dashboard=False, logging_level="warning")
    init_s = time.perf_counter() - started
    try:
        for shape, (actors, per_actor, per_task) in LOCAL_SHAPES.items():
            options = job.Options(model=model, actors=actors, cpus_per_actor=per_actor, cpus_per_task=per_task,
                                  batch_size=batch, address=job.LOCAL)  # fmt: skip
            rows.append(job_row(f"Ray job, this machine ({shape}; start-up: ray.init)", options, init_s))
    finally:
        ray.shutdown()
    with pinned_cluster() as (cluster, add):
        nodes = []
        try:
            for count in (1, 2):
                node_s = add(0 if count == 1 else min(1, CORES - 1))
                if count == 1:
                    ray.init(address=cluster.address, logging_level="warning")
                per_actor, per_task = NODE_SHAPE
                options = job.Options(model=model, actors=count, cpus_per_actor=per_actor, cpus_per_task=per_task,
                                      batch_size=batch, address=cluster.address)  # fmt: skip
                what = "head and node" if count == 1 else "second node"
                system = f"Ray job, cluster of {count} one-CPU worker node{'s' * (count > 1)} (start-up: {what})"
                nodes.append(job_row(f"{system}, cores {raylet_affinities(cluster)}", options, node_s))
        finally:
            ray.shutdown()
        for row in nodes:
            if row["images_per_s"] and nodes[0]["images_per_s"]:
                row["vs_one_node"] = row["images_per_s"] / nodes[0]["images_per_s"]
        rows += nodes
        if model == DEFAULT_MODEL:
            print(f"{name}: the command on two nodes, as is and with an actor killed", flush=True)
            folder = Path(paths[0]).parent
            for kill in (False, True):
                done = cli_job(cluster, folder, work / f"cli-{kill}", kill)
                if not kill:
                    what = "as is"
                elif "killed_at_s" not in done:
                    what = "ended before an actor could be killed"
                else:
                    restarted = f"{done['restarted_at_s']:.1f} s" if "restarted_at_s" in done else "never"
                    what = f"one actor SIGKILLed at {done['killed_at_s']:.1f} s, a new one at {restarted}"
                rows.append({
                    "model": name, "job_s": done["job_s"], "all_in_images_per_s": len(paths) / done["job_s"],
                    "system": f"python -m batch on the 2 nodes, {what}: exit {done['returncode']}, "
                    f"{done['rows']} rows, {done['distinct_paths']} distinct paths, {done['errors']} errors",
                    **{key: value for key, value in done.items() if key.endswith("_at_s")},
                })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the comparison and write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=["default", "resnet18"], default=["default", "resnet18"])
    parser.add_argument("--images", type=int, default=2000, help="real CIFAR-10 test images (default 2000)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per ORT call everywhere (default 64)")
    args = parser.parse_args(argv)
    os.environ.update(RAY_ENV)
    rows = []
    with tempfile.TemporaryDirectory(prefix="batch-ray-") as tmp:
        work = Path(tmp)
        (work / "images").mkdir()
        paths = cifar_images(args.images, work / "images")
        models = {"default": DEFAULT_MODEL}
        if "resnet18" in args.models:
            models["resnet18"] = resnet18(work)
        for name in args.models:
            label = "default (cifar_resnet20)" if name == "default" else "resnet18 (random init, 224 px)"
            rows += measure(label, models[name], paths, args.batch_size, work)
    notes = (
        f"{args.images} real CIFAR-10 test JPEGs, batches of {args.batch_size}; a Ray job's images/s: (images - "
        "one batch) / (its seconds - a one-batch job's, the job's fixed cost: actors started, model loaded), both "
        "after a one-batch warm-up job; all-in: images / the job's seconds; start-up: ray.init, or starting the "
        f"cluster's nodes; worker nodes pinned to one core each; Ray {ray.__version__}"
    )
    write_results("batch_ray", COLUMNS, rows, notes)
    return rows


if __name__ == "__main__":
    cli.entry_point(main)
