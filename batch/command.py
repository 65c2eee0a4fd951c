"""``python -m batch``: offline classification or detection of many files on Ray, the service's answers.

    python -m batch --input photos/ --output answers.parquet                    # a local Ray on this machine
    python -m batch --model detector.onnx --input s3://bucket/photos/ --output s3://bucket/answers/ \\
        --address auto                                                                # an existing Ray cluster

The model runs on the runtime and in the precision the server would pick (``RESNET_LAB_RUNTIME``,
``RESNET_LAB_PRECISION``; each actor decides on its own node's CPU or GPU). One row per input file: ``path``,
``answer`` (the JSON that ``/classify`` or ``/detect`` gives for that file) and ``error`` (null, or why the file has
no answer: a bad file never stops the job). ``NAME.parquet`` is one file
written by this process; any other ``--output`` is a folder of parts written by the cluster (on a cluster: a
shared folder or a URI). Inputs and outputs on a cluster must be readable and writable from every node.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from batch.job import BATCH_SIZES, ROWS_PER_PART, Options, Summary, run
from batch.workers import Answering
from inference.contract import CLASSIFICATION, DEFAULT_MODEL, DETECTION
from inference.settings import InferenceSettings
from toolkit.cli import HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    """The command line (the decode rule's defaults from the ``RESNET_LAB_*`` variables, as the server's)."""
    settings = InferenceSettings.from_env()
    parser = argparse.ArgumentParser(
        prog="python -m batch",
        description=__doc__,
        formatter_class=lambda prog: HelpFormatter(prog, width=120),
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="exported classifier or detector (.onnx) (default: the service's embedded default classifier)",
    )
    parser.add_argument(
        "--input", required=True, help="a folder, a glob, a .txt file of paths, or a pyarrow URI (s3://bucket/prefix)"
    )
    parser.add_argument("--output", required=True, help="NAME.parquet: one file; anything else: a folder of parts")
    parser.add_argument(
        "--address", default="", help="auto, HOST:PORT or ray://HOST:10001 (default: start a local Ray here)"
    )
    parser.add_argument(
        "--actors",
        type=int,
        help="actors, each with one model session (default: as many as the cluster holds beside one decode task)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help=f"images per block and per actor call (default: {BATCH_SIZES[CLASSIFICATION]} for a classifier, "
        f"{BATCH_SIZES[DETECTION]} for a detector)",
    )
    parser.add_argument(
        "--cpus-per-actor",
        type=float,
        default=Options.cpus_per_actor,
        help="CPUs each actor holds (its whole CPUs, at least one, are its runtime threads)",
    )
    parser.add_argument(
        "--cpus-per-task", type=float, default=Options.cpus_per_task, help="CPUs each decode task holds"
    )
    parser.add_argument(
        "--gpus-per-actor",
        type=float,
        default=Options.gpus_per_actor,
        help="GPUs each actor holds (ONNX Runtime's CUDA)",
    )
    parser.add_argument("--top-k", type=int, default=Answering.top_k, help="classifier: classes per answer")
    parser.add_argument(
        "--score-threshold", type=float, default=Answering.score_threshold, help="detector: lowest score kept"
    )
    parser.add_argument(
        "--max-detections", type=int, default=Answering.max_detections, help="detector: most detections per answer"
    )
    parser.add_argument(
        "--exact-decode",
        action="store_true",
        default=settings.exact_decode,
        help="decode every pixel of large JPEGs (default: $RESNET_LAB_EXACT_DECODE, as the service)",
    )
    parser.add_argument(
        "--max-file-bytes", type=int, default=Options.max_file_bytes, help="larger files are error rows"
    )
    parser.add_argument(
        "--max-image-pixels", type=int, default=settings.max_image_pixels, help="larger images are error rows"
    )
    parser.add_argument(
        "--rows-per-part", type=int, default=ROWS_PER_PART, help="folder output: at least this many rows per part"
    )
    return parser


def main(argv: list[str] | None = None) -> Summary:
    """CLI: run the job, print where its rows went."""
    args = build_parser().parse_args(argv)
    settings = InferenceSettings.from_env()  # RESNET_LAB_RUNTIME, RESNET_LAB_PRECISION, ...: as the server
    options = Options(
        model=args.model or DEFAULT_MODEL,
        address=args.address,
        actors=args.actors,
        batch_size=args.batch_size,
        cpus_per_actor=args.cpus_per_actor,
        cpus_per_task=args.cpus_per_task,
        gpus_per_actor=args.gpus_per_actor,
        answering=Answering(args.top_k, args.score_threshold, args.max_detections),
        max_file_bytes=args.max_file_bytes,
        rows_per_part=args.rows_per_part,
        inference=replace(settings, exact_decode=args.exact_decode, max_image_pixels=args.max_image_pixels),
    )
    summary = run(args.input, args.output, options)
    print(f"wrote {summary.rows:,} rows ({summary.errors:,} errors) to {summary.output} in {summary.seconds:.1f} s")
    return summary
