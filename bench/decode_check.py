"""What the service's fast decode changes: ``python -m bench.decode_check`` writes ``docs/bench/fast_decode.json``.

The fast path decodes large JPEGs at a reduced scale in the DCT domain before the usual resize and centre crop
(``service.imaging``, keeping ``FAST_DECODE_MARGIN`` times the resize target). Two measurements against the exact
path:

- answers: the default model's error and top-1 agreement on every CIFAR-10 test image upscaled 8x (256x256, so
  the fast path engages) and saved as JPEG quality 90;
- pixels: the mean absolute difference between the two paths' model inputs on real ImageNet photos made phone-sized
  (12 Mpx, JPEG quality 90, every other one with EXIF orientation 6).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from inference import imaging
from report.bench_file import Column, write_results
from tests.decode_quality import UPSCALE, answers, phone_photos, pixel_differences, upscaled_jpeg
from toolkit import cli, data_folder
from training.cifar10 import load_cifar10


def decode_times(photos: list[bytes], resize: int = 256, crop: int = 224) -> dict[bool, float]:
    """Median milliseconds to decode, resize and crop one photo, exact (False) and fast (True), alternating."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for data in photos:
        for fast in (False, True):
            started = time.perf_counter()
            imaging.preprocess(data, resize, crop, fast=fast)
            times[fast].append(1000 * (time.perf_counter() - started))
    return {fast: float(np.median(values)) for fast, values in times.items()}


def main(argv: list[str] | None = None) -> dict:
    """Measure on all 10,000 CIFAR-10 test images and all shared ImageNet photos; write the results file."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.decode_check", description=__doc__, formatter_class=cli.HelpFormatter
    )
    parser.add_argument("--cifar-dir", type=Path, required=True, help="CIFAR-10 python folder (make_cifar10.py)")
    args = parser.parse_args(argv)
    test = load_cifar10(args.cifar_dir, train=False)
    cifar = answers((upscaled_jpeg(image) for image in test.images.numpy()), test.labels.numpy())
    photos = phone_photos(data_folder.imagenet_sample_files())
    differences, milliseconds = pixel_differences(photos), decode_times(photos)
    rows = [
        {"measure": f"default model error, {cifar['images']:,} CIFAR-10 test images x{UPSCALE} (JPEG q90)",
         "exact": 100 * cifar["exact_error"], "fast": 100 * cifar["fast_error"], "unit": "%"},
        {"measure": "top-1 agreement, same images", "exact": None, "fast": 100 * cifar["agreement"], "unit": "%"},
        {"measure": f"mean abs pixel difference, {len(differences)} real photos at 12 Mpx (mean of photos)",
         "exact": None, "fast": float(np.mean(differences)), "unit": "grey levels"},
        {"measure": "the same, worst photo", "exact": None, "fast": float(np.max(differences)), "unit": "grey levels"},
        {"measure": "decode, resize and crop of one such photo (median, one core)", "exact": milliseconds[False],
         "fast": milliseconds[True], "unit": "ms"},
    ]  # fmt: skip
    columns = [Column("measure", "measure"), Column("exact", "exact path", ".2f"), Column("fast", "fast path", ".2f"),
               Column("unit", "unit")]  # fmt: skip
    write_results("fast_decode", columns, rows)
    return {"cifar": cifar, "pixels": differences}


if __name__ == "__main__":
    cli.entry_point(main)
