"""int8 post-training static quantization of an exported classifier, with ONNX Runtime's own quantizer.

In: an exported fp32 file (uint8 ``images`` -> float ``logits``, normalisation inside). Out: the same contract and
metadata plus ``precision=int8`` and ``quantization`` (JSON: settings and calibration set). Weights int8 per output
channel (symmetric), activations uint8 (asymmetric) from min/max over real calibration images, QDQ format: ORT's CPU
provider fuses DQ -> Conv -> (Relu) -> Q into QLinearConv (u8 x s8) and DQ -> Add -> Q into QLinearAdd. Kept in float:
the uint8 -> float normalisation at the input and the logits (8-bit logits would distort the returned scores).
Before a file is written, int8 and fp32 answers are compared on real images the calibration did not see.

    python -m export.int8 --model inference/default_model/model.onnx --calibration-images 512 --output int8.onnx
    python -m export --checkpoint RUN/checkpoints/last.pt --quantize int8 --calibration-images DIR --output m.onnx
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference import imaging
from inference.contract import CLASSIFICATION, INPUT_NAMES, INT8, OUTPUT_NAMES, Key, ModelMetadata
from toolkit import cli, data_folder
from toolkit.errors import UsageError

from .onnx_file import write_model

OP_TYPES = ["Conv", "Gemm", "MatMul", "Relu", "Add"]  # Relu folds into the Conv's output range; Add -> QLinearAdd
MIN_AGREEMENT = 0.97  # int8 top-1 = fp32 top-1 on at least this share of the verification images
MIN_TOP5 = 0.99  # and fp32's top-1 among int8's top 5 on at least this share
(IMAGES,), (LOGITS,) = [INPUT_NAMES[CLASSIFICATION]], OUTPUT_NAMES[CLASSIFICATION]


@dataclass(frozen=True)
class Int8Options:
    """How an int8 copy is calibrated and checked (the flags of ``add_arguments``)."""

    calibration_images: str = "512"  # a folder of training images, or N (see ``image_sets``)
    calibration_method: str = "minmax"  # or "percentile"
    verify_images: str | None = None  # folder of real images to compare int8 with fp32 on (None: real photos kept back)
    verify_count: int = 300  # real images int8 is compared with fp32 on
    min_agreement: float = MIN_AGREEMENT  # top-1 agreement int8 must reach
    min_top5: float = MIN_TOP5  # share of fp32's top-1 among int8's top 5 it must reach

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Int8Options:
        """The options given on a command line built with ``add_arguments``."""
        return cls(
            calibration_images=args.calibration_images,
            calibration_method=args.calibration_method,
            verify_images=None if args.verify_images is None else str(args.verify_images),
            verify_count=args.verify_int8,
            min_agreement=args.min_agreement,
            min_top5=args.min_top5,
        )


def quantize_int8(
    model_bytes: bytes,
    calibration: Iterable[np.ndarray],
    calibration_set: str,
    method: str = "minmax",
    reduce_range: bool = True,
) -> bytes:
    """int8 copy of ``model_bytes`` calibrated on uint8 ``[n, 3, H, W]`` batches of real training images (the service's
    preprocessing); ``calibration_set`` describes them. ``method``: "minmax" or "percentile" (99.999th).
    ``reduce_range``: weights in 7 bits (see below; False only to measure what it buys)."""
    import onnx
    import onnxruntime

    q, save_tensors_data = _ort_quantization()
    calibrate_method = {"minmax": q.CalibrationMethod.MinMax, "percentile": q.CalibrationMethod.Percentile}[method]
    original = onnx.load_from_string(model_bytes)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, prepared, ranges, int8 = (str(Path(tmp, name)) for name in ("f.onnx", "p.onnx", "r.json", "q.onnx"))
        onnx.save(original, fp32)
        q.quant_pre_process(fp32, prepared)  # symbolic shape inference + ORT's basic graph optimisation
        # Ranges collected here, one batch at a time: quantize_static's own calibration holds every batch's
        # activations in memory for the histogram methods (and fails on a short last batch).
        calibrator = q.create_calibrator(
            prepared, OP_TYPES, str(Path(tmp, "augmented.onnx")), calibrate_method, providers=["CPUExecutionProvider"]
        )
        images = 0
        for batch in _batches(calibration):
            calibrator.collect_data(_OneBatch(batch))
            images += len(batch)
        if not images:
            raise UsageError("no calibration images")
        save_tensors_data(calibrator.compute_data(), ranges)
        q.quantize_static(
            prepared, int8, calibration_data_reader=None, calibration_cache_path=ranges,
            calibrate_method=calibrate_method, quant_format=q.QuantFormat.QDQ, op_types_to_quantize=OP_TYPES,
            nodes_to_exclude=_normalisation_nodes(onnx.load(prepared)), per_channel=True,
            # 7-bit weights: ORT's u8 x s8 kernels on x86-64 without VNNI (AVX2, AVX-512 without VNNI) add pairs of
            # products in int16 (VPMADDUBSW), which saturates with 8-bit weights; ORT's quantization guide recommends
            # reduce_range there. VNNI and AMX kernels do not saturate; 7-bit weights keep AVX2 machines from answering
            # differently from them (bench/int8.py measures both widths on the default model).
            reduce_range=reduce_range,
            activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8, use_external_data_format=False,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                           "OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"]},
        )  # fmt: skip
        quantized = onnx.load(int8)
    settings = {
        "tool": f"onnxruntime.quantization.quantize_static {onnxruntime.__version__}",
        "format": "QDQ, activations uint8 asymmetric, weights int8 symmetric per channel"
        + (" in 7 bits (reduce_range)" if reduce_range else ""),
        "op_types": OP_TYPES,
        "kept_float": "input normalisation, logits",
        "calibration": {"method": method, "images": images, "set": calibration_set},
    }
    return _finish(original, quantized, settings)


def _ort_quantization() -> tuple[Any, Any]:
    """ONNX Runtime's quantization modules, imported without the ``sys.path`` entry they add: importing them runs
    ``onnxruntime.transformers``, which appends its own folder, whose ``models`` package would shadow the project's."""
    path = list(sys.path)
    try:
        from onnxruntime import quantization
        from onnxruntime.quantization.calibrate import save_tensors_data
    finally:
        sys.path[:] = path
    return quantization, save_tensors_data


def _finish(original: Any, quantized: Any, settings: dict[str, Any]) -> bytes:
    """The original's metadata plus precision and quantization; only the opsets in use; checked."""
    import onnx

    props = {entry.key: entry.value for entry in original.metadata_props}
    props |= {Key.PRECISION: INT8, Key.QUANTIZATION: json.dumps(settings)}
    del quantized.metadata_props[:]
    for key, value in props.items():
        entry = quantized.metadata_props.add()
        entry.key, entry.value = key, value
    quantized.producer_name = original.producer_name
    used = {node.domain for node in quantized.graph.node} | {""}
    kept = [opset for opset in quantized.opset_import if opset.domain in used]  # quant_pre_process adds others
    del quantized.opset_import[:]
    quantized.opset_import.extend(kept)
    onnx.checker.check_model(quantized, full_check=True)
    return quantized.SerializeToString()


class _OneBatch:
    """ORT's CalibrationDataReader protocol over one feed."""

    def __init__(self, batch: np.ndarray) -> None:
        self.feeds = [{IMAGES: batch}]

    def get_next(self) -> dict | None:
        return self.feeds.pop() if self.feeds else None


def _batches(calibration: Iterable[np.ndarray], batch_size: int = 32) -> Iterator[np.ndarray]:
    """uint8 ``[n, 3, H, W]`` arrays re-cut into batches of ``batch_size``."""
    pending = np.zeros((0,), np.uint8)
    for array in calibration:
        array = np.asarray(array)
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1] != 3:
            raise ValueError(f"calibration images must be uint8 [N, 3, H, W], got {array.dtype} {array.shape}")
        pending = np.concatenate([pending, array]) if len(pending) else array
        while len(pending) >= batch_size:
            yield pending[:batch_size]
            pending = pending[batch_size:]
    if len(pending):
        yield pending


def _normalisation_nodes(model: Any) -> list[str]:
    """The nodes between the uint8 input and the first Conv: they stay float."""
    producers = {output: node for node in model.graph.node for output in node.output}
    first_conv = next(node for node in model.graph.node if node.op_type == "Conv")
    names: list[str] = []
    pending = [first_conv.input[0]]
    while pending:
        node = producers.get(pending.pop())
        if node is not None and node.name not in names:
            names.append(node.name)
            pending.extend(node.input)
    return names


def _preprocessed(sources: list[Any], metadata: ModelMetadata) -> np.ndarray:
    """uint8 ``[n, 3, crop, crop]``: the service's preprocessing of each image (path or bytes)."""
    return np.stack([imaging.preprocess(source, metadata.resize_size, metadata.crop_size) for source in sources])


def image_sets(metadata: ModelMetadata, calibration: str, verify_dir: str | None, verify_count: int) -> tuple:
    """(calibration batch, its description, verification batch): images to calibrate on, never verified on.

    ``calibration``: a folder of training images, or N: N CIFAR-10 training images for a 10-class 32 px model, else
    the first N real photos (the data folder's ImageNet photos, else the photos shipped in tests/data), keeping back
    at least half of them, up to ``verify_count``, to verify on when ``verify_dir`` is not given.
    """
    cifar = len(metadata.labels) == 10 and metadata.crop_size <= 64
    if calibration.isdigit():
        count = int(calibration)
        if count < 1:
            raise UsageError(f"--calibration-images must be a folder or a positive count, got {calibration}")
        if cifar:
            sources = [data for data, _ in data_folder.cifar_images(count, split="train")]
            described = f"{len(sources)} CIFAR-10 training images"
        else:
            photos, where = data_folder.real_photos("imagenet_samples")
            kept_back = 0 if verify_dir else min(verify_count, len(photos) // 2)
            sources, photos = photos[: min(count, len(photos) - kept_back)], photos[len(photos) - kept_back :]
            described = f"{len(sources)} of the {where} (the other {len(photos)} verified on)"
    else:
        sources = data_folder.image_files(calibration)
        described = f"{len(sources)} images from {Path(calibration).name}/"
    if not sources:
        raise UsageError(f"no calibration images from --calibration-images {calibration}")
    if verify_dir:
        checks = data_folder.image_files(verify_dir, verify_count)
    elif cifar:
        checks = [data for data, _ in data_folder.cifar_images(verify_count)]
    elif calibration.isdigit():
        checks = photos
    else:
        checks, _ = data_folder.real_photos("imagenet_samples", verify_count)
    if not checks:
        raise UsageError("no real images left to verify int8 on: pass --verify-images DIR")
    return _preprocessed(sources, metadata), described, _preprocessed(checks, metadata)


def verify(
    fp32_bytes: bytes, int8_bytes: bytes, images: np.ndarray, min_agreement: float, min_top5: float = MIN_TOP5
) -> dict[str, float]:
    """int8 vs fp32 on real images: top-1 agreement and fp32's top-1 among int8's top 5; UsageError below the bar."""
    import onnxruntime as ort

    def logits(model: bytes) -> np.ndarray:
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        return np.concatenate(
            [session.run([LOGITS], {IMAGES: images[i : i + 64]})[0] for i in range(0, len(images), 64)]
        )

    reference, quantized = logits(fp32_bytes), logits(int8_bytes)
    top1 = reference.argmax(1)
    top5 = np.argsort(-quantized, axis=1)[:, : min(5, quantized.shape[1])]
    report = {
        "images": len(images),
        "agreement": float((quantized.argmax(1) == top1).mean()),
        "top1_in_top5": float((top5 == top1[:, None]).any(1).mean()),
    }
    if report["agreement"] < min_agreement or report["top1_in_top5"] < min_top5:
        raise UsageError(
            f"int8 verification FAILED on {len(images)} real images: top-1 agreement with fp32 "
            f"{100 * report['agreement']:.1f}% (needs {100 * min_agreement:.0f}%), fp32 top-1 in int8 top-5 "
            f"{100 * report['top1_in_top5']:.1f}% (needs {100 * min_top5:.0f}%). Nothing was written."
        )
    return report


def quantized_and_verified(fp32_bytes: bytes, options: Int8Options) -> tuple[bytes, dict[str, Any]]:
    """The int8 file of ``fp32_bytes`` and its verification report."""
    import onnx

    props = {entry.key: entry.value for entry in onnx.load_from_string(fp32_bytes).metadata_props}
    metadata = ModelMetadata.from_props(props)
    calibration, described, checks = image_sets(
        metadata, options.calibration_images, options.verify_images, options.verify_count
    )
    int8_bytes = quantize_int8(fp32_bytes, [calibration], described, options.calibration_method)
    return int8_bytes, verify(fp32_bytes, int8_bytes, checks, options.min_agreement, options.min_top5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The int8 options, shared by ``python -m export --quantize int8`` and ``python -m export.int8``."""
    parser.add_argument(
        "--calibration-images",
        default="512",
        help="a folder of training images, or N: N CIFAR-10 training images for a 10-class 32 px model, else up to N "
        "real photos (the data folder's ImageNet photos, else those in tests/data), at least half of them kept back "
        "for the check",
    )
    parser.add_argument(
        "--calibration-method",
        choices=["minmax", "percentile"],
        default="minmax",
        help="how activation ranges come from the calibration images",
    )
    parser.add_argument("--verify-int8", type=int, default=300, help="real images int8 is compared with fp32 on")
    parser.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT, help="top-1 agreement int8 must reach")
    parser.add_argument(
        "--min-top5", type=float, default=MIN_TOP5, help="share of images whose fp32 top-1 must be in int8's top 5"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: an exported fp32 classifier -> a verified int8 one."""
    parser = argparse.ArgumentParser(
        prog="python -m export.int8", description=__doc__, formatter_class=cli.HelpFormatter
    )
    parser.add_argument("--model", required=True, type=Path, help="an exported fp32 classifier (.onnx)")
    parser.add_argument("--output", required=True, type=Path, help="where to write the int8 file")
    parser.add_argument(
        "--verify-images",
        help="folder of real images to compare int8 with fp32 on (default: CIFAR-10 test images for a CIFAR-10 "
        "model, else the real photos not calibrated on)",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not args.model.is_file():
        raise UsageError(f"{args.model} not found: export a classifier first (python -m export)")
    int8_bytes, report = quantized_and_verified(args.model.read_bytes(), Int8Options.from_args(args))
    write_model(int8_bytes, args.output)
    print(
        f"wrote {args.output} ({len(int8_bytes) / 1e6:.1f} MB, int8); top-1 agreement with fp32 "
        f"{100 * report['agreement']:.1f}% on {report['images']} real images"
    )
    return {"output": str(args.output), "bytes": len(int8_bytes), "verify_int8": report}


if __name__ == "__main__":
    cli.entry_point(main)
