"""The Open Inference Protocol v2 (KServe ``required_api``) on the wire: its JSON shapes as pydantic models, tensors
from and to JSON ``data``, and Triton's binary tensor extension.

Binary extension: a request whose ``Inference-Header-Content-Length`` header says N has an N-byte JSON header and
then the raw data of every input whose ``parameters.binary_data_size`` is set, in input order. Outputs are sent the
same way when the request asks (``parameters.binary_data_output`` for all of them, or ``binary_data`` on one
requested output); the answer then carries the header too and is ``application/octet-stream``. Raw data is
little-endian, row-major; a BYTES element is a 4-byte little-endian length and its bytes.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from service.errors import RequestRejected, describe_errors

HEADER_LENGTH = "inference-header-content-length"
BINARY_DATA_SIZE = "binary_data_size"  # input/output parameter: bytes of its raw data after the JSON header
BINARY_DATA = "binary_data"  # requested-output parameter: send this output as raw data
BINARY_DATA_OUTPUT = "binary_data_output"  # request parameter: send every output as raw data
BYTES = "BYTES"
NUMPY_TYPES = {
    "BOOL": np.dtype(bool),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"
]
DATATYPES = get_args(Datatype)
Parameters = Annotated[dict[str, Any], WithJsonSchema({"type": "object", "additionalProperties": True})]
Data = Annotated[
    list[Any] | None,
    WithJsonSchema({"type": "array", "items": {}, "description": "row-major elements, flat or nested"}),
]


class MetadataTensor(BaseModel):
    """A tensor a model takes or gives: ``-1`` marks a dimension of any size."""

    name: str
    datatype: Datatype
    shape: list[int]


class ServerMetadata(BaseModel):
    """``GET /v2``."""

    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    """``GET /v2/models/{name}[/versions/{version}]``; ``parameters``: what runs the model (runtime, precision)."""

    name: str
    versions: list[str]
    platform: str
    parameters: Parameters = Field(default_factory=dict)
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class Liveness(BaseModel):
    live: bool


class Readiness(BaseModel):
    ready: bool


class ModelReadiness(BaseModel):
    name: str
    ready: bool


class InputTensor(BaseModel):
    """One input of an inference request: ``data`` in the JSON, or ``parameters.binary_data_size`` raw bytes."""

    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: Datatype
    parameters: Parameters = Field(default_factory=dict)
    data: Data = None


class RequestedOutput(BaseModel):
    """An output the client asks for (``parameters.binary_data``: as raw data)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    parameters: Parameters = Field(default_factory=dict)


class InferenceRequest(BaseModel):
    """``POST /v2/models/{name}[/versions/{version}]/infer``: the JSON (or the binary extension's JSON header)."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field("", description="echoed in the answer")
    parameters: Parameters = Field(default_factory=dict)
    inputs: list[InputTensor] = Field(min_length=1)
    outputs: list[RequestedOutput] = Field(default_factory=list, description="empty: every output")


class OutputTensor(BaseModel):
    """One output of the answer: ``data``, or ``parameters.binary_data_size`` raw bytes after the JSON header."""

    name: str
    shape: list[int]
    datatype: Datatype
    parameters: Parameters = Field(default_factory=dict)
    data: Data = None


class InferenceResponse(BaseModel):
    """The answer to an inference request."""

    model_name: str
    model_version: str
    id: str = ""
    parameters: Parameters = Field(default_factory=dict)
    outputs: list[OutputTensor]


@dataclass(frozen=True)
class Tensor:
    """A named array with its v2 datatype (BYTES: an object array of ``bytes``, or ``str`` from JSON)."""

    name: str
    datatype: str
    array: np.ndarray


def _json_header_length(value: str | None, body_length: int) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit() or int(value) > body_length:
        raise RequestRejected(f"Inference-Header-Content-Length {value!r} must be an integer up to the body's length")
    return int(value)


def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, list[Tensor]]:
    """An inference request's JSON and its input tensors (checked against their shapes and datatypes)."""
    length = _json_header_length(header_length, len(body))
    header, raw = (body, b"") if length is None else (body[:length], body[length:])
    try:
        request = InferenceRequest.model_validate_json(header, strict=True)
    except ValidationError as error:
        raise RequestRejected(describe_errors(error.errors(include_url=False))) from None
    tensors, offset = [], 0
    for given in request.inputs:
        size = given.parameters.get(BINARY_DATA_SIZE)
        if size is None:
            if given.data is None:
                raise RequestRejected(f'input "{given.name}" has neither data nor parameters.{BINARY_DATA_SIZE}')
            tensors.append(Tensor(given.name, given.datatype, _from_json(given)))
            continue
        if type(size) is not int or size < 0 or offset + size > len(raw):
            raise RequestRejected(f'input "{given.name}": {BINARY_DATA_SIZE}={size!r} does not fit the binary data')
        tensors.append(Tensor(given.name, given.datatype, _from_raw(given, raw[offset : offset + size])))
        offset += size
    if offset != len(raw):
        raise RequestRejected(f"{len(raw) - offset} bytes of binary data after the inputs that declare theirs")
    return request, tensors


def _count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _flat(data: Iterable[Any]) -> list[Any]:
    flat, stack = [], [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _from_json(given: InputTensor) -> np.ndarray:
    values = _flat(given.data or [])
    if len(values) != _count(given.shape):
        raise RequestRejected(f'input "{given.name}": {len(values)} elements for shape {given.shape}')
    if given.datatype == BYTES:
        if not all(isinstance(value, str) for value in values):
            raise RequestRejected(f'input "{given.name}": BYTES elements in JSON must be strings')
        return np.array(values, dtype=object).reshape(given.shape)
    dtype = NUMPY_TYPES[given.datatype]
    if dtype.kind in "iu":
        if not all(type(value) is int for value in values):
            raise RequestRejected(f'input "{given.name}": {given.datatype} elements must be integers')
        limits = np.iinfo(dtype)
        if values and (min(values) < limits.min or max(values) > limits.max):
            raise RequestRejected(
                f'input "{given.name}": {given.datatype} elements must be in [{limits.min}, {limits.max}]'
            )
    elif dtype.kind == "b" and not all(type(value) is bool for value in values):
        raise RequestRejected(f'input "{given.name}": BOOL elements must be true or false')
    elif dtype.kind == "f" and not all(type(value) in (int, float) for value in values):
        raise RequestRejected(f'input "{given.name}": {given.datatype} elements must be numbers')
    return np.array(values, dtype=dtype).reshape(given.shape)


def _from_raw(given: InputTensor, raw: bytes) -> np.ndarray:
    count = _count(given.shape)
    if given.datatype == BYTES:
        elements = deserialize_bytes(raw, given.name)
        if len(elements) != count:
            raise RequestRejected(f'input "{given.name}": {len(elements)} BYTES elements for shape {given.shape}')
        array = np.empty(count, dtype=object)
        array[:] = elements
        return array.reshape(given.shape)
    dtype = NUMPY_TYPES[given.datatype]
    if len(raw) != count * dtype.itemsize:
        raise RequestRejected(
            f'input "{given.name}": {len(raw)} bytes of {given.datatype} for shape {given.shape} '
            f"({count * dtype.itemsize} expected)"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(given.shape)


def deserialize_bytes(raw: bytes, name: str = "") -> list[bytes]:
    """BYTES raw data: each element a 4-byte little-endian length and its bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise RequestRejected(f'input "{name}": BYTES data ends inside an element length')
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise RequestRejected(f'input "{name}": a BYTES element of {size} bytes runs past the data')
        elements.append(raw[offset : offset + size])
        offset += size
    return elements


def serialize_bytes(elements: Iterable[bytes]) -> bytes:
    """The inverse of ``deserialize_bytes``."""
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def _as_bytes(element: Any) -> bytes:
    return element if isinstance(element, bytes) else str(element).encode()


def encode_response(
    response: InferenceResponse, tensors: Sequence[Tensor], binary: set[str]
) -> tuple[bytes, dict[str, str]]:
    """The answer's body and headers; outputs named in ``binary`` go as raw data after the JSON header."""
    outputs, chunks = [], []
    for tensor in tensors:
        shape = list(tensor.array.shape)
        if tensor.name in binary:
            if tensor.datatype == BYTES:
                raw = serialize_bytes(_as_bytes(element) for element in tensor.array.ravel())
            else:
                raw = np.ascontiguousarray(tensor.array, dtype=NUMPY_TYPES[tensor.datatype]).tobytes()
            chunks.append(raw)
            outputs.append(OutputTensor(name=tensor.name, shape=shape, datatype=tensor.datatype,
                                        parameters={BINARY_DATA_SIZE: len(raw)}))  # fmt: skip
        else:
            flat = tensor.array.ravel()
            if tensor.datatype == BYTES:
                data = [_as_bytes(element).decode("utf-8", "replace") for element in flat]
            else:
                data = flat.tolist()
            outputs.append(OutputTensor(name=tensor.name, shape=shape, datatype=tensor.datatype, data=data))
    answer = response.model_copy(update={"outputs": outputs})
    empty = {name for name in ("id", "parameters") if not getattr(answer, name)}  # optional, left out when empty
    header = json.dumps(answer.model_dump(exclude_none=True, exclude=empty)).encode()
    if not chunks:
        return header, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return header + b"".join(chunks), headers


def binary_outputs(request: InferenceRequest, names: Iterable[str]) -> set[str]:
    """Which of the answer's outputs go as raw data: all with ``binary_data_output``, else those asked so."""
    everything = request.parameters.get(BINARY_DATA_OUTPUT) is True
    asked = {output.name for output in request.outputs if output.parameters.get(BINARY_DATA) is True}
    return set(names) if everything else asked & set(names)


def refused_count(name: str, count: int, limit: int) -> RequestRejected:
    """More images in one input than ``RESNET_LAB_MAX_IMAGES`` allows: a 400, as ``/classify`` and ``/detect``."""
    return RequestRejected(f'input "{name}" holds {count} images; the limit is {limit} (RESNET_LAB_MAX_IMAGES)')
