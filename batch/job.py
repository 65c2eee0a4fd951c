"""An offline job on Ray Data: the model's metadata, the options checked, the pipeline, the output written.

Reading and decoding run as Ray tasks with the inference core's image loader (``batch.workers.decode_batch``); each
actor of a fixed pool holds one model session (``Answerer``: the runtime its ``InferenceSettings`` pick on its
node); the output has one row per input file (``workers.SCHEMA``). Fault tolerance is Ray's, configured here on
purpose: a decode task whose worker dies runs again (at most ``TASK_RETRIES`` times); a dead actor is restarted
without limit and the batch it was answering goes to it again (at most ``TASK_RETRIES`` times, so a batch that kills
its actor every time fails the job instead of looping); Ray Data hands each block on once, and a folder's parts are
named by write task, so a retried write replaces its own file: every input is written exactly once.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow.parquet as pq
import ray
import ray.data
from pyarrow import fs
from ray.util.annotations import RayDeprecationWarning

from batch import inputs
from batch.workers import SCHEMA, Answerer, Answering, Decoding, decode_batch
from inference.answers import MAX_DETECTIONS
from inference.contract import CLASSIFICATION, DEFAULT_MODEL, DETECTION, ModelMetadata
from inference.imaging import fast_decode_keeps_answers
from inference.model_files import ModelNotFound
from inference.model_files import read_metadata as read_file_metadata
from inference.settings import InferenceSettings
from toolkit.errors import UsageError

logger = logging.getLogger("resnet_lab.batch")

TASK_RETRIES = 3  # a decode task whose worker died, or an actor's batch whose actor died, runs again this often
BATCH_SIZES = {CLASSIFICATION: 64, DETECTION: 4}  # rows per block: one ORT call / per-image ORT calls
MAX_FILE_BYTES = 20 * 1024 * 1024  # larger files are error rows (the server's default upload limit)
ROWS_PER_PART = 100_000  # a folder output's parts hold at least this many rows (the last one fewer)
LOCAL = "local"  # ray.init's address for a new Ray instance on this machine
CONNECT_SECONDS = 10  # how long a cluster's head may take to accept a TCP connection


class BatchError(UsageError):
    """A mistake the user can fix (a bad option value, a missing model, an unreachable Ray); the message says what
    to do."""


@dataclass(frozen=True)
class Options:
    """Which model, on which Ray, how: everything but where the inputs and the output are."""

    model: Path = DEFAULT_MODEL
    address: str = ""  # empty: a new local Ray; "auto", "HOST:PORT" or "ray://HOST:10001": that cluster
    actors: int | None = None  # None: as many as fit (``pool_size``)
    batch_size: int | None = None  # None: BATCH_SIZES of the model's task
    cpus_per_actor: float = 1.0  # its whole CPUs (at least one) are the actor's runtime threads
    cpus_per_task: float = 1.0
    gpus_per_actor: float = 0.0
    answering: Answering = field(default_factory=Answering)
    max_file_bytes: int = MAX_FILE_BYTES
    rows_per_part: int = ROWS_PER_PART
    inference: InferenceSettings = field(default_factory=InferenceSettings)  # threads: each actor's whole CPUs


@dataclass(frozen=True)
class Summary:
    """What a job did."""

    output: str
    rows: int
    errors: int
    seconds: float


def read_metadata(path: Path) -> ModelMetadata:
    """The serving metadata of an exported file (classifier or detector); a file of another kind is refused."""
    if not path.is_file():
        raise BatchError(f"--model {path}: no such file; export one with `python -m export ... --output model.onnx`")
    try:
        return read_file_metadata(path)
    except ModelNotFound as error:
        raise BatchError(f"--model {error}") from None


def check(options: Options, metadata: ModelMetadata) -> None:
    """The options a job needs, checked before any Ray work (the service's ranges for its own options)."""
    answering = options.answering
    if options.actors is not None and options.actors < 1:
        raise BatchError(f"--actors must be at least 1, got {options.actors}")
    if options.batch_size is not None and options.batch_size < 1:
        raise BatchError(f"--batch-size must be at least 1, got {options.batch_size}")
    if options.cpus_per_actor <= 0 or options.cpus_per_task <= 0 or options.gpus_per_actor < 0:
        raise BatchError("--cpus-per-actor and --cpus-per-task must be above 0, --gpus-per-actor at least 0")
    if metadata.task == CLASSIFICATION and not 1 <= answering.top_k <= len(metadata.labels):
        raise BatchError(f"--top-k must be between 1 and {len(metadata.labels)} (the model's classes)")
    if not 0 <= answering.score_threshold <= 1:
        raise BatchError(f"--score-threshold must be between 0 and 1, got {answering.score_threshold}")
    if not 1 <= answering.max_detections <= MAX_DETECTIONS:
        raise BatchError(f"--max-detections must be between 1 and {MAX_DETECTIONS}, got {answering.max_detections}")


@contextmanager
def connected(address: str) -> Iterator[None]:
    """Connected to the Ray at ``address`` (empty: a new local one) for the block, unless already connected."""
    if ray.is_initialized():
        yield
        return
    local = address in ("", LOCAL)
    how = "start one with `ray start --head` or leave --address out for a local Ray"
    if not local:
        _check_reachable(address, how)
    try:
        ray.init(address=LOCAL if local else address, include_dashboard=False if local else None)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise BatchError(f"--address {address}: cannot connect to Ray ({error}); {how}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _check_reachable(address: str, how: str) -> None:
    """A ``HOST:PORT`` nobody listens on is said at once (Ray itself would retry for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and the like: Ray resolves them itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as error:
        raise BatchError(f"--address {address}: nothing answers there ({error.strerror or error}); {how}") from None


def _fits(node_cpus: list[float], actors: int, options: Options) -> bool:
    """Whether ``actors`` actors, spread as Ray Data spreads them (each on the node with the most CPUs left), still
    leave one node room for a decode task (a pool that takes every node's last CPU would starve decoding)."""
    free = sorted(node_cpus, reverse=True)
    for _ in range(actors):
        if not free or free[0] < options.cpus_per_actor:
            return False
        free[0] -= options.cpus_per_actor
        free.sort(reverse=True)
    return bool(free) and free[0] >= options.cpus_per_task


def pool_size(options: Options) -> int:
    """``options.actors``, or as many actors as the Ray cluster's nodes hold beside one decode task; a pool that
    cannot fit would wait forever, so it is refused on a local Ray (a cluster may still grow: a warning there)."""
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    node_cpus = [resources.get("CPU", 0.0) for resources in nodes]
    gpus = sum(resources.get("GPU", 0.0) for resources in nodes)
    gpu_bound = int(gpus // options.gpus_per_actor) if options.gpus_per_actor > 0 else len(nodes) * 1024
    fitting = 0
    while fitting < gpu_bound and _fits(node_cpus, fitting + 1, options):
        fitting += 1
    actors = options.actors or fitting
    if 1 <= actors <= fitting:
        return actors
    message = (
        f"{max(actors, 1)} actors of {options.cpus_per_actor:g} CPUs and {options.gpus_per_actor:g} GPUs beside a "
        f"decode task of {options.cpus_per_task:g} CPUs do not fit the Ray cluster (CPUs per node: "
        f"{', '.join(f'{cpus:g}' for cpus in node_cpus)}; {gpus:g} GPUs): lower --actors, --cpus-per-actor or "
        "--cpus-per-task"
    )
    if options.address in ("", LOCAL):
        raise BatchError(message)
    logger.warning("%s (or the cluster must grow)", message)
    return max(actors, 1)


def dataset(paths: list[str], options: Options, metadata: ModelMetadata) -> ray.data.Dataset:
    """The job as a Ray Data pipeline over ``paths`` (Ray connected): rows of ``SCHEMA``, one per path."""
    task = metadata.task
    batch_size = options.batch_size or BATCH_SIZES[task]
    decoding = Decoding(
        task=task,
        max_file_bytes=options.max_file_bytes,
        max_image_pixels=options.inference.max_image_pixels,
        resize_size=metadata.resize_size,
        crop_size=metadata.crop_size,
        fast=not options.inference.exact_decode and fast_decode_keeps_answers(metadata.crop_size),
    )
    model = ray.put(options.model.read_bytes())  # shipped to every actor: nodes need no copy of the file
    blocks = max(1, math.ceil(len(paths) / batch_size))
    rows = ray.data.from_items([{"path": path} for path in paths], override_num_blocks=blocks)
    with warnings.catch_warnings():
        # Ray 2.60-2.63 takes retry and restart limits only as remote args, which it marks deprecated for 2.64
        # (its named parameters have none yet); the limits are the point here, so they stay.
        warnings.simplefilter("ignore", RayDeprecationWarning)
        decoded = rows.map_batches(
            decode_batch,
            fn_kwargs={"decoding": decoding},
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=options.cpus_per_task,
            max_retries=TASK_RETRIES,
            udf_modifying_row_count=False,
        )
        return decoded.map_batches(
            Answerer,
            fn_constructor_kwargs={
                "model": model,
                "task": task,
                "answering": options.answering,
                "inference": replace(options.inference, threads=max(1, math.floor(options.cpus_per_actor))),
                "gpu": options.gpus_per_actor > 0,
            },
            compute=ray.data.ActorPoolStrategy(size=min(pool_size(options), blocks)),  # no idle actors
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=options.cpus_per_actor,
            num_gpus=options.gpus_per_actor,
            max_restarts=-1,
            max_task_retries=TASK_RETRIES,
            udf_modifying_row_count=False,
        )


def _refuse_existing(output: str) -> None:
    """A job never adds to or overwrites an earlier output (its rows would mix with this one's)."""
    if inputs.is_uri(output):
        filesystem, inner = inputs.split_uri(output)
        info = filesystem.get_file_info(inner)
        folder = info.type == fs.FileType.Directory
        exists = info.type == fs.FileType.File or (folder and bool(filesystem.get_file_info(fs.FileSelector(inner))))
    else:
        path = Path(output)
        exists = path.is_file() or (path.is_dir() and any(path.iterdir()))
    if exists:
        raise BatchError(f"--output {output} already exists; remove it or name another")


def _stream_into(data: ray.data.Dataset, where: str, filesystem: fs.FileSystem | None = None) -> None:
    """The rows into one Parquet file, here, as they arrive."""
    with pq.ParquetWriter(where, SCHEMA, filesystem=filesystem) as writer:
        for table in data.iter_batches(batch_format="pyarrow", batch_size=None):
            writer.write_table(table)


def _write_file(data: ray.data.Dataset, output: str) -> None:
    """One Parquet file written by this process (atomically for a local path: a temp file, then renamed)."""
    if inputs.is_uri(output):
        filesystem, inner = inputs.split_uri(output)
        _stream_into(data, inner, filesystem)
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _stream_into(data, str(temp))
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _counted(output: str) -> tuple[int, int]:
    """(rows, error rows) of a written output, read back from it."""
    if inputs.is_uri(output):
        filesystem, inner = inputs.split_uri(output)
        table = pq.read_table(inner, columns=["error"], filesystem=filesystem)
    else:
        table = pq.read_table(output, columns=["error"])
    return table.num_rows, table.num_rows - table.column("error").null_count


def run(input_spec: str, output: str, options: Options) -> Summary:
    """Answer every file ``input_spec`` names into ``output`` (``.parquet``: one file; else a folder of parts)."""
    metadata = read_metadata(options.model)
    check(options, metadata)
    _refuse_existing(output)
    try:
        paths = inputs.list_inputs(input_spec)
    except inputs.InputNotFound as error:
        raise BatchError(str(error)) from None
    logger.info("%d files, %s model %s", len(paths), metadata.task, metadata.model_name)
    with connected(options.address):
        started = time.perf_counter()
        data = dataset(paths, options, metadata)
        if output.endswith(".parquet"):
            _write_file(data, output)
        else:
            # writing parts is light I/O: its tasks hold no CPU, so they never wait behind the pool and decoding
            data.write_parquet(output, min_rows_per_file=options.rows_per_part, ray_remote_args={"num_cpus": 0})
        seconds = time.perf_counter() - started
    rows, errors = _counted(output)
    return Summary(output=output, rows=rows, errors=errors, seconds=seconds)
