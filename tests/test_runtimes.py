"""The runtimes of the inference core on real files and real OpenVINO and ONNX Runtime sessions: the choice rule,
the bf16 check and its bar, fp32 parity between the two runtimes, and settings the machine cannot honour.

Nothing here depends on the CPU it runs on: where the answer does (bf16 units), the test asks OpenVINO what this CPU
has and checks the behaviour for that case, or skips saying why.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from export.check_bf16 import main as check_bf16
from export.onnx_file import with_metadata, write_model
from export.precision_check import with_check
from inference import imaging, precision
from inference.contract import BF16, DEFAULT_MODEL, DETECTION, FP32, INT8, Key
from inference.model import LoadedModel
from inference.model_files import read_metadata
from inference.runtimes.choice import RuntimeUnavailable, plans
from inference.runtimes.hardware import cpu_capabilities, cpu_has_bf16
from inference.settings import AUTO, ONNXRUNTIME, OPENVINO, InferenceSettings, SettingsError
from toolkit.errors import UsageError

NO_BF16 = f"this CPU has no bf16 units (OpenVINO reports {', '.join(cpu_capabilities())})"


def pixels_of(files: list[Path], size: int = 32) -> np.ndarray:
    """uint8 ``[N, 3, size, size]``: the core's loader, resize and crop."""
    return np.stack([imaging.preprocess(path, size, size) for path in files])


def without_check(source: Path, folder: Path) -> Path:
    """A copy of an exported file with no recorded checks."""
    metadata = read_metadata(source)
    extra = {key: value for key, value in metadata.extra.items() if key != Key.CHECKS}
    stripped = replace(metadata, extra=extra)
    return write_model(with_metadata(source.read_bytes(), stripped, full_check=False), folder / "unchecked.onnx")


def with_record(source: Path, folder: Path, agreement: float) -> Path:
    """A copy of an exported classifier whose bf16 record says ``agreement``."""
    metadata = read_metadata(source)
    entry = {"images": 1000, "top1_agreement": agreement, "images_from": "a test", "passed": agreement >= 0.99}
    checked = with_check(metadata, BF16, entry)
    return write_model(with_metadata(source.read_bytes(), checked, full_check=False), folder / f"{agreement}.onnx")


def test_openvino_fp32_answers_as_onnx_runtime_fp32(small_photos) -> None:
    pixels = pixels_of(small_photos)
    ort = LoadedModel.load(DEFAULT_MODEL, InferenceSettings(runtime=ONNXRUNTIME)).logits(pixels)
    openvino = LoadedModel.load(DEFAULT_MODEL, InferenceSettings(runtime=OPENVINO, precision=FP32))
    assert openvino.describe()["inference_precision"] == "f32"  # set, never OpenVINO's own bf16 default
    got = openvino.logits(pixels)
    print(f"OpenVINO fp32 vs ONNX Runtime fp32: max |logit diff| {np.abs(got - ort).max():.1e}")
    np.testing.assert_allclose(got, ort, rtol=0, atol=1e-4)
    assert (got.argmax(1) == ort.argmax(1)).all()


def test_the_choice_follows_the_settings_and_says_why(tmp_path) -> None:
    metadata = read_metadata(without_check(DEFAULT_MODEL, tmp_path))
    (ort,) = plans(metadata, InferenceSettings(runtime=ONNXRUNTIME))
    assert (ort.runtime, ort.precision) == (ONNXRUNTIME, FP32) and "RESNET_LAB_RUNTIME=onnxruntime" in ort.reason
    (auto,) = plans(metadata, InferenceSettings(), use_gpu=False)
    assert (auto.runtime, auto.precision) == (OPENVINO, FP32)  # no record: fp32 whatever the CPU
    expected = "the file records no bf16 check" if cpu_has_bf16() else "this CPU has no bf16 units"
    assert expected in auto.reason
    (fp32,) = plans(read_metadata(DEFAULT_MODEL), InferenceSettings(precision=FP32), use_gpu=False)
    assert (fp32.runtime, fp32.precision) == (OPENVINO, FP32) and "fp32 as RESNET_LAB_PRECISION asks" in fp32.reason
    (providers,) = plans(metadata, InferenceSettings(providers="CPUExecutionProvider"))
    assert providers.runtime == ONNXRUNTIME and "RESNET_LAB_PROVIDERS" in providers.reason


def test_auto_runs_bf16_only_where_the_cpu_has_it_and_the_record_clears_the_bar(tmp_path) -> None:
    passing, failing = with_record(DEFAULT_MODEL, tmp_path, 0.995), with_record(DEFAULT_MODEL, tmp_path, 0.989)
    (below,) = plans(read_metadata(failing), InferenceSettings(), use_gpu=False)
    assert below.precision == FP32
    (above,) = plans(read_metadata(passing), InferenceSettings(), use_gpu=False)
    if not cpu_has_bf16():
        assert above.precision == FP32 and "this CPU has no bf16 units" in above.reason
        pytest.skip(f"bf16 under auto needs bf16 units: {NO_BF16}")
    assert "top-1 = fp32's on 98.90% of 1,000 images (< 99%)" in below.reason
    assert above.precision == BF16 and "(>= 99%)" in above.reason
    model = LoadedModel.load(passing, InferenceSettings())
    assert model.precision == BF16 and model.describe()["inference_precision"] == "bf16"


def test_settings_that_cannot_be_honoured_are_refused_naming_them(tmp_path) -> None:
    unchecked = read_metadata(without_check(DEFAULT_MODEL, tmp_path))
    with pytest.raises(RuntimeUnavailable, match="RESNET_LAB_PRECISION=bf16 runs on OpenVINO"):
        plans(unchecked, InferenceSettings(runtime=ONNXRUNTIME, precision=BF16))
    with pytest.raises(SettingsError, match="RESNET_LAB_RUNTIME='tensorrt' must be one of auto, onnxruntime"):
        InferenceSettings(runtime="tensorrt")
    with pytest.raises(SettingsError, match="RESNET_LAB_PRECISION='fp16' must be one of auto, fp32, bf16"):
        InferenceSettings.from_env({"RESNET_LAB_PRECISION": "fp16"})
    if not cpu_has_bf16():
        with pytest.raises(RuntimeUnavailable, match="RESNET_LAB_PRECISION=bf16: this CPU has no bf16 units"):
            plans(unchecked, InferenceSettings(precision=BF16))
        return
    with pytest.raises(RuntimeUnavailable, match="records no check of its bf16 answers .* export.check_bf16"):
        plans(unchecked, InferenceSettings(precision=BF16))  # never a precision whose answers were not compared
    (asked,) = plans(read_metadata(with_record(DEFAULT_MODEL, tmp_path, 0.98)), InferenceSettings(precision=BF16))
    assert asked.precision == BF16 and "although its check missed the bar" in asked.reason


def test_an_int8_file_runs_on_the_faster_runtime_timed_at_load(cifar_export, tmp_path) -> None:
    from export import int8

    output = tmp_path / "int8.onnx"
    int8.main(["--model", cifar_export["output"], "--output", str(output), "--calibration-images", "64",
               "--verify-int8", "32", "--min-agreement", "0", "--min-top5", "0"])  # fmt: skip
    candidates = plans(read_metadata(output), InferenceSettings(), use_gpu=False)
    assert [(plan.runtime, plan.precision) for plan in candidates] == [(OPENVINO, INT8), (ONNXRUNTIME, INT8)]
    model = LoadedModel.load(output, InferenceSettings(), use_gpu=False)
    reason = model.describe()["reason"]
    print(reason)
    other = ONNXRUNTIME if model.session.runtime == OPENVINO else OPENVINO
    assert model.precision == INT8 and f"{model.session.runtime} " in reason and f"vs {other} " in reason
    refusal = "is an int8 file, which runs as int8" if cpu_has_bf16() else "this CPU has no bf16 units"
    with pytest.raises(RuntimeUnavailable, match=refusal):
        plans(read_metadata(output), InferenceSettings(precision=BF16))


def test_the_bf16_check_is_recorded_in_the_file(small_photos, tmp_path) -> None:
    unchecked = without_check(DEFAULT_MODEL, tmp_path)
    folder = small_photos[0].parent
    if not cpu_has_bf16():
        with pytest.raises(UsageError, match="this CPU has no bf16 units"):
            check_bf16(["--model", str(unchecked), "--images", str(folder)])
        pytest.skip(f"recording a bf16 check needs bf16 units: {NO_BF16}")
    entry = check_bf16(["--model", str(unchecked), "--images", str(folder), "--output", str(tmp_path / "c.onnx")])
    recorded = read_metadata(tmp_path / "c.onnx").check(BF16)
    assert recorded == entry and entry["images"] == len(small_photos) and entry["images_from"].endswith(str(folder))
    assert 0.9 <= entry["top1_agreement"] <= 1 and entry["bar"] == "top-1 agreement >= 99%"
    assert entry["passed"] == (entry["top1_agreement"] >= precision.MIN_AGREEMENT)
    assert read_metadata(unchecked).check(BF16) is None  # --output: the file itself is left as it was


def test_a_detector_check_with_nothing_detected_passes_nothing() -> None:
    empty = {"images": 4, "detections": 0, "matched": 1.0, "max_score_diff": 0.0}
    passed, why = precision.verdict(empty, DETECTION)
    assert not passed and "nothing was compared" in why
    found = {"images": 4, "detections": 40, "matched": 0.975, "max_score_diff": 0.02}
    assert precision.verdict(found, DETECTION)[0]
    assert not precision.verdict({**found, "max_score_diff": 0.06}, DETECTION)[0]
    assert not precision.verdict({**found, "matched": 0.95}, DETECTION)[0]


def test_the_detector_runs_on_openvino_as_on_onnx_runtime(shapes_onnx, shapes_root) -> None:
    pictures = sorted((shapes_root / "val2017").glob("*.png"))[:6]
    runs = {runtime: LoadedModel.load(shapes_onnx["output"], InferenceSettings(runtime=runtime, precision=FP32),
                                      DETECTION) for runtime in (ONNXRUNTIME, OPENVINO)}  # fmt: skip
    for path in pictures:
        image = imaging.to_chw(imaging.load_rgb(path))
        (boxes, scores, labels), (other_boxes, other_scores, other_labels) = (
            run.detect(image) for run in runs.values()
        )
        assert labels.tolist() == other_labels.tolist() and other_labels.dtype == labels.dtype
        np.testing.assert_allclose(other_scores, scores, atol=1e-4)
        np.testing.assert_allclose(other_boxes, boxes, atol=1e-2)


def test_an_export_records_its_bf16_check_where_the_cpu_can_run_bf16(shapes_onnx) -> None:
    metadata = read_metadata(shapes_onnx["output"])
    entry = metadata.check(BF16)
    (plan,) = plans(metadata, InferenceSettings(runtime=AUTO), use_gpu=False)
    print(json.dumps(entry), plan.reason)
    assert (entry is not None) == cpu_has_bf16()  # measured at export where it can be, never guessed elsewhere
    assert plan.precision == (BF16 if entry is not None and entry["passed"] else FP32)
    if entry is not None:
        assert entry["images"] == shapes_onnx["verify"]["images"] and entry["bar"] == precision.bar(DETECTION)
