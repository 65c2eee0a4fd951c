"""Which runtime runs a file, in which precision, and why: the rule behind ``RESNET_LAB_RUNTIME`` and
``RESNET_LAB_PRECISION`` (``inference.settings.InferenceSettings``).

``auto``, the default: a working GPU runs ONNX Runtime on CUDA. Otherwise OpenVINO runs the file on the CPU, in bf16
where OpenVINO reports bf16 units and the file records a bf16 check that clears ``inference.precision``'s bar, else
in fp32 (the reason is said). An int8 file runs on whichever of OpenVINO and ONNX Runtime is faster for it on this
CPU: both are timed at load (``inference.model``). A setting this machine cannot honour is a ``RuntimeUnavailable``
naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

from inference import precision as checks
from inference.contract import BF16, FP32, INT8, ModelMetadata
from inference.runtimes.hardware import cpu_capabilities, cpu_has_bf16, gpu_present, openvino_core
from inference.settings import AUTO, ONNXRUNTIME, OPENVINO, InferenceSettings, SettingsError


class RuntimeUnavailable(SettingsError):
    """A runtime setting this machine or this file cannot honour; the message names the setting and the fix."""


@dataclass(frozen=True)
class Plan:
    """A runtime and precision to run a file with, and why (one line for the log and ``/info``)."""

    runtime: str
    precision: str
    reason: str


def plans(metadata: ModelMetadata, settings: InferenceSettings, use_gpu: bool = True) -> list[Plan]:
    """The plan for a file; several only for an int8 file under ``auto`` (the faster one at load wins). Without
    ``use_gpu`` (a CPU worker on a GPU machine) ``auto`` never picks the GPU."""
    if settings.precision == BF16:
        return [_bf16_as_asked(metadata, settings)]
    if settings.runtime == OPENVINO:
        _require_openvino(settings)
        return [_on_openvino(metadata, settings, f"{_name(settings, 'runtime')}={OPENVINO}")]
    if settings.runtime == ONNXRUNTIME:
        return [Plan(ONNXRUNTIME, metadata.precision, f"{_name(settings, 'runtime')}={ONNXRUNTIME}")]
    if settings.providers:
        return [Plan(ONNXRUNTIME, metadata.precision, f"{_name(settings, 'providers')} names ONNX Runtime providers")]
    if use_gpu and gpu_present():
        return [Plan(ONNXRUNTIME, metadata.precision, "a working GPU: ONNX Runtime on CUDA")]
    if openvino_core() is None:
        return [Plan(ONNXRUNTIME, metadata.precision, "OpenVINO is not installed: ONNX Runtime on the CPU")]
    if metadata.precision == INT8:
        why = "int8: the faster of OpenVINO and ONNX Runtime for this file on this CPU, timed at load"
        return [Plan(OPENVINO, INT8, why), Plan(ONNXRUNTIME, INT8, why)]
    return [_on_openvino(metadata, settings, "no GPU: OpenVINO on the CPU")]


def _name(settings: InferenceSettings, field: str) -> str:
    return settings.env_name(field)


def _require_openvino(settings: InferenceSettings) -> None:
    if openvino_core() is None:
        raise RuntimeUnavailable(
            f"{_name(settings, 'runtime')}={settings.runtime}: the openvino package is not installed (pip install "
            f"openvino), or set {_name(settings, 'runtime')}={ONNXRUNTIME}"
        )


def _on_openvino(metadata: ModelMetadata, settings: InferenceSettings, why: str) -> Plan:
    """OpenVINO on the CPU: an int8 file as int8; an fp32 file in bf16 where ``auto`` may, else fp32."""
    if metadata.precision == INT8:
        return Plan(OPENVINO, INT8, f"{why}; an int8 file")
    if settings.precision == FP32:
        return Plan(OPENVINO, FP32, f"{why}; fp32 as {_name(settings, 'precision')} asks")
    if not cpu_has_bf16():
        return Plan(OPENVINO, FP32, f"{why}; fp32: this CPU has no bf16 units ({', '.join(cpu_capabilities())})")
    passed, because = checks.recorded(metadata)
    if passed:
        return Plan(
            OPENVINO, BF16, f"{why}; bf16: this CPU has bf16 units and the file's bf16 check passed ({because})"
        )
    return Plan(OPENVINO, FP32, f"{why}; fp32: {because}")


def _bf16_as_asked(metadata: ModelMetadata, settings: InferenceSettings) -> Plan:
    """``RESNET_LAB_PRECISION=bf16``: OpenVINO in bf16, if this CPU and this file allow it at all."""
    asked = f"{_name(settings, 'precision')}={BF16}"
    if settings.runtime == ONNXRUNTIME:
        raise RuntimeUnavailable(
            f"{asked} runs on OpenVINO: unset {_name(settings, 'runtime')} or set it to {OPENVINO}"
        )
    _require_openvino(settings)
    if not cpu_has_bf16():
        raise RuntimeUnavailable(
            f"{asked}: this CPU has no bf16 units (OpenVINO reports {', '.join(cpu_capabilities())}); set it to "
            f"{FP32} or {AUTO}"
        )
    if metadata.precision == INT8:
        raise RuntimeUnavailable(f"{asked}: {metadata.model_name} is an int8 file, which runs as int8; unset it")
    entry = metadata.check(BF16)
    if entry is None:
        raise RuntimeUnavailable(
            f"{asked}: the file records no check of its bf16 answers against fp32's; record one with `python -m "
            f"export.check_bf16 --model FILE` (on real images), or set it to {AUTO}"
        )
    passed, because = checks.verdict(entry, metadata.task)
    note = "its check passed" if passed else "although its check missed the bar"
    return Plan(OPENVINO, BF16, f"bf16 as {asked} asks, {note} ({because})")
