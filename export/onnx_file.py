"""What both exporters share: where the file goes and how it is checked (typed options), metadata to the inference
core's contract, the atomic write and, when asked, the BentoML model store."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.contract import BENTO_MODEL_NAMES, ONNX_FILE_NAME, PRODUCER, ModelMetadata
from toolkit.atomic import atomic_write

VERIFY_COUNT = 8  # real images ONNX Runtime is compared with PyTorch on before a file is written


@dataclass(frozen=True)
class Destination:
    """Where an exported file goes: ``output``, and with ``register`` also the BentoML model store (machine-wide,
    ``$BENTOML_HOME``) under ``bento_name`` (None: the task's name in ``inference.contract``)."""

    output: Path
    register: bool = False
    bento_name: str | None = None


@dataclass(frozen=True)
class Verification:
    """The real images ONNX Runtime is compared with PyTorch on: the first ``count`` of the folder ``images``
    (None: the data folder's photos for the task, else the photos shipped in tests/data)."""

    images: Path | None = None
    count: int = VERIFY_COUNT


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def to_jsonable(value: Any) -> Any:
    """Tensors and numpy values inside recipes and metrics become plain JSON values."""
    if isinstance(value, torch.Tensor | np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def with_metadata(model_bytes: bytes, metadata: ModelMetadata, full_check: bool = True) -> bytes:
    """Replace the model's ``metadata_props`` with ``metadata`` and check the model (``full_check``: shapes too)."""
    import onnx

    proto = onnx.load_from_string(model_bytes)
    del proto.metadata_props[:]
    for key, value in metadata.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = PRODUCER
    onnx.checker.check_model(proto, full_check=full_check)
    return proto.SerializeToString()


def write_model(model_bytes: bytes, output: str | os.PathLike) -> Path:
    """Write the file atomically (readers never see half a model)."""
    return atomic_write(output, lambda stream: stream.write(model_bytes))


def write_and_register(model_bytes: bytes, metadata: ModelMetadata, destination: Destination) -> dict[str, Any]:
    """Write the verified file atomically and register it if asked: ``output``, ``bytes`` (and ``bento_model``, the
    store's tag)."""
    output = write_model(model_bytes, destination.output)
    report: dict[str, Any] = {"output": str(output), "bytes": len(model_bytes)}
    if destination.register:
        report["bento_model"] = register_in_store(output, metadata, destination.bento_name)
    return report


def register_in_store(onnx_path: Path, metadata: ModelMetadata, name: str | None = None) -> str:
    """Copy the ONNX file into the BentoML model store; returns the tag (``name:version``)."""
    import bentoml

    labels = {"project": PRODUCER, "task": metadata.task, "arch": metadata.model_name, "format": "onnx"}
    info = {"task": metadata.task, "model_name": metadata.model_name, "source_sha256": metadata.source_sha256}
    name = name or BENTO_MODEL_NAMES[metadata.task]
    metadata_dict = {**info, "file": ONNX_FILE_NAME}
    with bentoml.models.create(name, labels=labels, metadata=metadata_dict, module="resnet_lab.onnx") as model:
        shutil.copyfile(onnx_path, model.path_of(ONNX_FILE_NAME))
    return str(model.tag)
