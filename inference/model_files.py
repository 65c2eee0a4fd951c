"""Finding a model file and reading its serving metadata (``inference.contract``) without running it.

A model is named by a path to an exported ``.onnx`` file or by a BentoML model-store tag (``resnet-classifier:latest``,
for exports made with ``--register``); nothing named is the embedded default classifier.
"""

from __future__ import annotations

import os
from pathlib import Path

from inference.contract import (
    BENTO_MODEL_NAMES,
    CLASSIFICATION,
    DEFAULT_MODEL,
    ONNX_FILE_NAME,
    ContractError,
    ModelMetadata,
)
from toolkit.errors import UsageError


class ModelNotFound(UsageError):
    """No usable model: the message says how to provide one."""


def how_to_get(task: str) -> str:
    """How a user makes a model file of ``task``."""
    output = "model.onnx" if task == CLASSIFICATION else "detector.onnx"
    return f"export one with `python -m export --checkpoint FILE --output {output}`"


def resolve_model(value: str, task: str = CLASSIFICATION, named_by: str = "") -> Path:
    """The file ``value`` names: a .onnx path or a BentoML model-store tag; empty: the embedded default classifier.
    ``named_by`` (a setting or flag) starts each error message."""
    where = f"{named_by}={value}" if named_by else value
    if not value:
        if task == CLASSIFICATION and DEFAULT_MODEL.is_file():
            return DEFAULT_MODEL
        raise ModelNotFound(f"no {task} model given{f' ({named_by} is unset)' if named_by else ''}; {how_to_get(task)}")
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if path.suffix == ".onnx" or os.sep in value:
        raise ModelNotFound(f"{where}: no such file; {how_to_get(task)}")
    import bentoml  # only for a tag: the model store is BentoML's

    try:
        model = bentoml.models.get(value)
    except Exception as error:
        raise ModelNotFound(
            f"{where}: not a file and not in the BentoML model store ({error}); {how_to_get(task)} "
            f"(or with --register, then name it as {BENTO_MODEL_NAMES[task]}:latest)"
        ) from None
    return Path(model.path_of(model.info.metadata.get("file", ONNX_FILE_NAME)))


def read_metadata(path: str | os.PathLike, task: str | None = None) -> ModelMetadata:
    """The serving metadata of the file at ``path``; with ``task``, a file of another task is refused."""
    return checked_metadata(read_props(path, task), path, task)


def read_props(path: str | os.PathLike, task: str | None = None) -> dict[str, str]:
    """The file's ``metadata_props`` (a light ONNX Runtime session, dropped at once; ``ModelNotFound`` if ONNX
    Runtime cannot open it; ``task`` only words the advice)."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT's own exception types (InvalidProtobuf, Fail, ...) share no base class
        raise ModelNotFound(
            f"{path}: ONNX Runtime cannot open it ({str(error)[:200]}); {how_to_get(task or CLASSIFICATION)}"
        ) from None
    return session.get_modelmeta().custom_metadata_map


def checked_metadata(props: dict[str, str], path: str | os.PathLike, task: str | None = None) -> ModelMetadata:
    """A file's ``metadata_props`` parsed by the contract; with ``task``, a file of another task is refused."""
    try:
        metadata = ModelMetadata.from_props(props, str(path))
    except ContractError as error:
        raise ModelNotFound(str(error)) from None
    if task is not None and metadata.task != task:
        raise ModelNotFound(f"{path} is a {metadata.task} model; a {task} model is needed here")
    return metadata
