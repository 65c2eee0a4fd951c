"""Exported ONNX files in ONNX Runtime: which file, which providers, its metadata (``service.contract``), logits."""

from __future__ import annotations

import ctypes
import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.contract import (
    BENTO_MODEL_NAMES,
    CLASSIFICATION,
    DEFAULT_MODEL,
    DETECTION,
    INPUT_NAMES,
    ONNX_FILE_NAME,
    OUTPUT_NAMES,
    ContractError,
    ModelMetadata,
)
from service.settings import Settings, env_name

logger = logging.getLogger("bentoml.resnet_lab")


class ModelNotFound(RuntimeError):
    """No usable model: the message says how to provide one."""


VARIABLES = {CLASSIFICATION: env_name("model"), DETECTION: env_name("detector")}  # where each model is named
HOW_TO_GET = {
    CLASSIFICATION: "export one with `python -m export --checkpoint FILE --output model.onnx` and start with "
    f"{VARIABLES[CLASSIFICATION]}=model.onnx (or a model-store tag such as {BENTO_MODEL_NAMES[CLASSIFICATION]}:latest)",
    DETECTION: "export one with `python -m export --checkpoint FILE --output detector.onnx` and start with "
    f"{VARIABLES[DETECTION]}=detector.onnx (or a model-store tag such as {BENTO_MODEL_NAMES[DETECTION]}:latest)",
}


def resolve_model(value: str, task: str = CLASSIFICATION) -> Path:
    """A .onnx path or a BentoML model-store tag; empty: the embedded default classifier."""
    how, variable = HOW_TO_GET[task], VARIABLES[task]
    if not value:
        if task == CLASSIFICATION and DEFAULT_MODEL.is_file():
            return DEFAULT_MODEL
        raise ModelNotFound(f"no model: {variable} is unset; {how}")
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if path.suffix == ".onnx" or os.sep in value:
        raise ModelNotFound(f"{variable}={value}: no such file; {how}")
    import bentoml

    try:
        model = bentoml.models.get(value)
    except Exception as error:
        raise ModelNotFound(
            f"{variable}={value}: not a file and not in the BentoML model store ({error}); {how}"
        ) from None
    return Path(model.path_of(model.info.metadata.get("file", ONNX_FILE_NAME)))


def gpu_present() -> bool:
    """True only where an NVIDIA driver is really usable (ORT lists CUDA even on GPU-less machines)."""
    if not glob.glob("/dev/nvidia[0-9]*"):
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def choose_providers(wanted: str = "") -> list[str]:
    """``wanted`` (comma-separated), else CUDA then CPU where a GPU exists, else CPU alone (keeps ORT's CUDA-load
    errors out of the log)."""
    if wanted:
        return [name.strip() for name in wanted.split(",") if name.strip()]
    if gpu_present() and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(path: Path, settings: Settings) -> ort.InferenceSession:
    """An ORT session with the service's thread settings."""
    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = settings.ort_threads
    options.inter_op_num_threads = 1
    # ORT's default: workers spin briefly after a run. Measured here, turning it off cost 2-3 ms per request
    # at concurrency 1 and bought no throughput at 32.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.ort_spin else "0")
    providers = choose_providers(settings.providers)
    if "CUDAExecutionProvider" in providers:
        # CUDA and cuDNN from pip's nvidia-* wheels (onnxruntime-gpu[cuda,cudnn]) are not on the loader's path, and
        # the service imports no torch to put them there; without this ORT silently falls back to the CPU.
        ort.preload_dlls()
    return ort.InferenceSession(str(path), options, providers=providers)


def read_metadata(path: Path, task: str = CLASSIFICATION) -> ModelMetadata:
    """The serving metadata of the file at ``path`` (a light CPU session, dropped at once), checked for ``task``."""
    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT's own exception types (InvalidProtobuf, Fail, ...) share no base class
        raise ModelNotFound(f"{path}: ONNX Runtime cannot open it ({str(error)[:200]}); {HOW_TO_GET[task]}") from None
    return _checked_metadata(session, path, task)


def _checked_metadata(session: ort.InferenceSession, path: Path, task: str) -> ModelMetadata:
    try:
        metadata = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map, str(path))
    except ContractError as error:
        raise ModelNotFound(str(error)) from None
    if metadata.task != task:
        raise ModelNotFound(f"{path} is a {metadata.task} model; {VARIABLES[task]} takes a {task} model")
    return metadata


@dataclass
class OnnxModel:
    """An ONNX Runtime session plus the serving metadata stored in the file (``service.contract``)."""

    session: ort.InferenceSession
    path: Path
    metadata: ModelMetadata

    @classmethod
    def load(cls, path: str | os.PathLike, settings: Settings, task: str = CLASSIFICATION) -> OnnxModel:
        """Open ``path``; a file that is not a resnet-lab model of ``task`` is refused with a clear message."""
        path = Path(path)
        session = open_session(path, settings)
        return cls(session=session, path=path, metadata=_checked_metadata(session, path, task))

    @property
    def providers(self) -> list[str]:
        """What ORT really uses (not what was asked for)."""
        return list(self.session.get_providers())

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Classifier: uint8 ``[N, 3, crop, crop]`` -> float32 ``[N, num_classes]``."""
        return self.session.run(list(OUTPUT_NAMES[CLASSIFICATION]), {INPUT_NAMES[CLASSIFICATION]: images})[0]

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detector: uint8 ``[3, H, W]`` -> boxes ``[K, 4]`` in input pixels, scores ``[K]``, COCO ids ``[K]``."""
        boxes, scores, labels = self.session.run(list(OUTPUT_NAMES[DETECTION]), {INPUT_NAMES[DETECTION]: image})
        return boxes, scores, labels
