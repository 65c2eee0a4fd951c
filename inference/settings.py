"""Settings read from ``RESNET_LAB_*`` environment variables into typed, frozen objects.

``EnvSettings`` is the mechanism: each field names its variable and says what it means, ``from_env`` reads them all
(a malformed value is a ``SettingsError`` naming the variable), and ``markdown_table`` is the documentation's table,
generated from the fields so the two cannot drift. ``InferenceSettings`` are the settings of the runtimes, shared by
every part that runs a model file: the server (whose ``service.settings.Settings`` extends them), offline batch jobs
and ``eval_coco.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, Self

from inference.contract import BF16, FP32
from toolkit.errors import UsageError

AUTO = "auto"
ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"
RUNTIMES = (AUTO, ONNXRUNTIME, OPENVINO)
PRECISIONS = (AUTO, FP32, BF16)  # what RESNET_LAB_PRECISION may ask for (an int8 file is int8 whatever it says)


class SettingsError(UsageError):
    """A malformed ``RESNET_LAB_*`` variable: the message names it and says what it must be."""


def setting(env: str, default: object, meaning: str, shown: str = "") -> Any:
    """A settings field read from the variable ``env``; ``meaning`` is its line in the documentation, ``shown`` its
    default there when the value itself would mislead (one machine's core count)."""
    return field(default=default, metadata={"env": env, "meaning": meaning, "shown": shown})


@dataclass(frozen=True)
class EnvSettings:
    """Settings whose every field comes from an environment variable (``setting``)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Read every variable of the fields; unset or empty ones keep their defaults."""
        environ = os.environ if environ is None else environ
        values = {}
        for spec in fields(cls):
            raw = environ.get(spec.metadata["env"], "")
            if raw != "":
                values[spec.name] = _parse(spec.metadata["env"], raw, type(spec.default))
        return cls(**values)

    @classmethod
    def env_name(cls, name: str) -> str:
        """The environment variable of the field ``name``."""
        for spec in fields(cls):
            if spec.name == name:
                return spec.metadata["env"]
        raise KeyError(name)

    @classmethod
    def markdown_table(cls) -> str:
        """The documentation's table: variable, default, meaning (the class's own fields first)."""
        own = cls.__dict__.get("__annotations__", {})
        ordered = sorted(fields(cls), key=lambda spec: spec.name not in own)
        lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
        for spec in ordered:
            lines.append(f"| `{spec.metadata['env']}` | {_shown_default(spec)} | {spec.metadata['meaning']} |")
        return "\n".join(lines)

    def _refuse(self, name: str, must: str) -> None:
        value = getattr(self, name)
        raise SettingsError(f"{self.env_name(name)}={value!r} {must}")


def _parse(name: str, raw: str, kind: type) -> object:
    if kind is bool:
        if raw.lower() not in ("0", "1", "true", "false"):
            raise SettingsError(f"{name}={raw!r} must be 0 or 1")
        return raw.lower() in ("1", "true")
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} must be an integer") from None
    return raw


def _shown_default(spec: Field) -> str:
    value = spec.default
    if spec.metadata.get("shown"):
        return spec.metadata["shown"]
    if isinstance(value, bool):
        return str(int(value))
    return f"{value:,}" if isinstance(value, int) else (str(value) or "(empty)")


@dataclass(frozen=True)
class InferenceSettings(EnvSettings):
    """Which runtime runs a model file, in which precision, with how many threads; how image files are decoded."""

    runtime: str = setting(
        "RESNET_LAB_RUNTIME",
        AUTO,
        "auto, onnxruntime or openvino; auto: ONNX Runtime on CUDA where a GPU works, else OpenVINO (an int8 file: "
        "whichever of the two runs it faster on this CPU, timed at start)",
    )
    precision: str = setting(
        "RESNET_LAB_PRECISION",
        AUTO,
        "auto, fp32 or bf16 (OpenVINO); auto: bf16 where the CPU has bf16 units and the file records a passed bf16 "
        "check, else fp32",
    )
    threads: int = setting("RESNET_LAB_THREADS", 0, "the runtime's threads per model run (0: one per core)")
    ort_spin: bool = setting(
        "RESNET_LAB_ORT_SPIN", True, "ONNX Runtime workers spin between runs (its default; faster here)"
    )
    providers: str = setting(
        "RESNET_LAB_PROVIDERS", "", "comma-separated ONNX Runtime providers; empty: CUDA where a GPU works, else CPU"
    )
    max_image_pixels: int = setting(
        "RESNET_LAB_MAX_IMAGE_PIXELS", 50_000_000, "images declaring more pixels are refused (413) before decoding"
    )
    exact_decode: bool = setting(
        "RESNET_LAB_EXACT_DECODE",
        False,
        "1: decode every pixel of large JPEGs; 0: reduced-scale decode where it keeps the answers (inputs >= 64 px)",
    )

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            self._refuse("runtime", f"must be one of {', '.join(RUNTIMES)}")
        if self.precision not in PRECISIONS:
            self._refuse("precision", f"must be one of {', '.join(PRECISIONS)}")
        if self.threads < 0:
            self._refuse("threads", "must be 0 (one per core) or more")
        if self.max_image_pixels < 1:
            self._refuse("max_image_pixels", "must be at least 1")
