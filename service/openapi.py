"""What ``/docs.json`` says about the service's own routes: the answers' shapes, every status a route can answer
and why, the request bodies (from the same pydantic models that check them) and path parameters.

BentoML merges the FastAPI app's OpenAPI paths into its ``/docs.json`` (``service.bentoml_adapter`` says how), whose
version is OpenAPI 3.0: the schemas here avoid what only 3.1 allows (``null`` types, numeric exclusive bounds).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.uploads import FILE_FIELD, FORM, JSON, UploadReader


class ErrorBody(BaseModel):
    """Every refusal: a sentence that says what went wrong and what to send instead."""

    error: str


class Prediction(BaseModel):
    index: int = Field(description="class index in the model's label order")
    label: str
    score: float = Field(description="softmax probability")


class ClassifyAnswer(BaseModel):
    """One image's classes, best first."""

    model: str
    model_version: str
    predictions: list[Prediction]


class ClassifyResults(BaseModel):
    """Several images: one entry per image, in input order (an image that failed has its own error)."""

    model: str
    model_version: str
    results: list[ClassifyAnswer | ErrorBody]


class Detection(BaseModel):
    box: list[float] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in the image's pixels")
    category_id: int = Field(description="COCO category id")
    label: str
    score: float


class DetectAnswer(BaseModel):
    """One image's detections, best first."""

    model: str
    model_version: str
    image_size: list[int] = Field(min_length=2, max_length=2, description="width, height as displayed")
    detections: list[Detection]


class DetectResults(BaseModel):
    """Several images: one entry per image, in input order (an image that failed has its own error)."""

    model: str
    model_version: str
    results: list[DetectAnswer | ErrorBody]


MEANINGS = {
    400: "a mistake in the request (more than RESNET_LAB_MAX_IMAGES images among them); the sentence says what to send",
    401: "no `Authorization: Bearer KEY` header with a configured key (RESNET_LAB_API_KEYS)",
    404: "no such model, or no such version of it (/detect: this server has no detector)",
    413: "the body is over RESNET_LAB_MAX_UPLOAD_BYTES, or an image declares more than RESNET_LAB_MAX_IMAGE_PIXELS "
    "pixels",
    409: "the load would pass RESNET_LAB_MAX_LOADED_MODELS or RESNET_LAB_MAX_LOADED_MB: unload a model first",
    415: "Content-Type is neither multipart/form-data nor application/json",
    429: "more requests in progress than BentoML's traffic.max_concurrency (when configured)",
    500: "a fault of the server (logged)",
    503: "overloaded (no answer within RESNET_LAB_MAX_LATENCY_MS; retry later)",
    504: "not answered within BentoML's traffic.timeout",
}
ANY_ROUTE = (429, 500, 504)  # what BentoML's traffic limits and a fault can answer anywhere


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses`` for ``statuses``: each the error body with what it means here."""
    return {status: {"model": ErrorBody, "description": MEANINGS[status]} for status in sorted({*statuses, *ANY_ROUTE})}


def inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` written in place (an OpenAPI request body cannot hold them)."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(dict(definitions[node["$ref"].rsplit("/", 1)[-1]]))
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


def upload_body(reader: UploadReader) -> dict[str, Any]:
    """The request body of ``/classify`` or ``/detect``, as a form or as JSON, for FastAPI's ``openapi_extra``."""
    form, body = inline(reader.form_model.model_json_schema()), inline(reader.json_model.model_json_schema())
    return {
        "requestBody": {
            "required": True,
            "content": {
                FORM: {"schema": form, "encoding": {FILE_FIELD: {"contentType": "image/*"}}},
                JSON: {"schema": body},
            },
        }
    }


def path_parameters(*names: str) -> list[dict[str, Any]]:
    """OpenAPI path parameters (strings), for ``openapi_extra``."""
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in names]
