"""The exported ONNX classifier in ONNX Runtime: which file, which providers, its metadata, batched logits."""

from __future__ import annotations

import ctypes
import glob
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

SERVICE_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = SERVICE_DIR / "default_model" / "model.onnx"
ONNX_FILE_NAME = "model.onnx"
logger = logging.getLogger("bentoml.resnet_lab")


class ModelNotFound(RuntimeError):
    """No usable model: the message says how to provide one."""


def resolve_model(value: str | None = None) -> Path:
    """``RESNET_LAB_MODEL`` (a .onnx path or a BentoML model-store tag), else the embedded default model."""
    value = value if value is not None else os.environ.get("RESNET_LAB_MODEL", "")
    how = (
        "export one with `python -m training.export --checkpoint FILE --output model.onnx` and start with "
        "RESNET_LAB_MODEL=model.onnx (or a model-store tag such as resnet-classifier:latest)"
    )
    if not value:
        if DEFAULT_MODEL.is_file():
            return DEFAULT_MODEL
        raise ModelNotFound(f"no model to serve: RESNET_LAB_MODEL is unset and {DEFAULT_MODEL} does not exist; {how}")
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if path.suffix == ".onnx" or os.sep in value:
        raise ModelNotFound(f"RESNET_LAB_MODEL={value}: no such file; {how}")
    import bentoml

    try:
        model = bentoml.models.get(value)
    except Exception as error:
        raise ModelNotFound(
            f"RESNET_LAB_MODEL={value}: not a file and not in the BentoML model store ({error}); {how}"
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


def choose_providers() -> list[str]:
    """CUDA then CPU where a GPU exists; CPU alone otherwise (keeps ORT's CUDA-load errors out of the log)."""
    wanted = os.environ.get("RESNET_LAB_PROVIDERS", "")
    if wanted:
        return [name.strip() for name in wanted.split(",") if name.strip()]
    if gpu_present() and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@dataclass
class OnnxClassifier:
    """An ONNX Runtime session plus the serving metadata stored in the file."""

    session: ort.InferenceSession
    path: Path
    labels: list[str]
    resize_size: int
    crop_size: int
    model_name: str
    source_sha256: str
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike, providers: list[str] | None = None) -> OnnxClassifier:
        """Open ``path``; a file without resnet-lab metadata is refused with a clear message."""
        path = Path(path)
        ort.set_default_logger_severity(3)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = int(os.environ.get("RESNET_LAB_ORT_THREADS", "0"))  # 0: ORT picks (one per core)
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # ORT's default: workers spin briefly after a run. Measured here, turning it off cost 2-3 ms per request
        # at concurrency 1 and bought no throughput at 32; RESNET_LAB_ORT_SPIN=0 turns it off.
        options.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get("RESNET_LAB_ORT_SPIN", "1"))
        session = ort.InferenceSession(str(path), options, providers=providers or choose_providers())
        props = session.get_modelmeta().custom_metadata_map
        missing = [key for key in ("labels", "resize_size", "crop_size") if key not in props]
        if missing:
            raise ModelNotFound(f"{path} lacks metadata {missing}; export it with `python -m training.export`")
        return cls(
            session=session,
            path=path,
            labels=list(json.loads(props["labels"])),
            resize_size=int(props["resize_size"]),
            crop_size=int(props["crop_size"]),
            model_name=props.get("model_name", path.stem),
            source_sha256=props.get("source_sha256", ""),
            metadata=dict(props),
        )

    @property
    def providers(self) -> list[str]:
        """What ORT really uses (not what was asked for)."""
        return list(self.session.get_providers())

    def logits(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``[N, 3, crop, crop]`` -> float32 ``[N, num_classes]``."""
        return self.session.run(["logits"], {"images": images})[0]


def softmax_top_k(logits: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Top-``k`` (index, probability) pairs of one logit row, highest first, softmax in float64."""
    values = np.asarray(logits, dtype=np.float64)
    probabilities = np.exp(values - values.max())
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(int(index), float(probabilities[index])) for index in order]
