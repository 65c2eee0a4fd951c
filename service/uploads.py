"""Reading a ``/classify`` or ``/detect`` request: its images and options, from a form or a JSON body.

Two encodings of the same request:

- ``multipart/form-data``: the file in field ``image`` (repeated for several images), options as plain fields;
- ``application/json``: ``{"images": ["<base64>", ...], <options>}``, for clients that cannot send multipart.

The options are pydantic models whose ``Field`` constraints are both the check and what the OpenAPI document
states. The service never fetches anything: an image given as a URL is refused (server-side request forgery).
Every mistake raises ``RequestRejected`` with a sentence saying what to send.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any

import anyio
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, create_model
from pydantic_core import PydanticCustomError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request

from inference.answers import DEFAULT_MAX_DETECTIONS, DEFAULT_SCORE_THRESHOLD, DEFAULT_TOP_K, MAX_DETECTIONS
from service.errors import RequestRejected, describe_errors

FORM = "multipart/form-data"
JSON = "application/json"
FILE_FIELD = "image"  # the form's file field (repeated for several images)
JSON_FIELD = "images"  # the JSON body's list of base64 images
URL = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*://")
URL_REFUSED = "is a URL, and the service never fetches URLs: send the image bytes themselves"
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text"}
OUT_OF_RANGE = ("greater_than_equal", "less_than_equal")
_FORM_TEXT_LIMIT = 1000  # characters in an option's form value


def _decoded_base64(value: str) -> bytes:
    if URL.match(value):
        raise PydanticCustomError("url_refused", URL_REFUSED + ", base64-encoded")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as error:
        raise PydanticCustomError("base64_decode", "is not base64 ({reason})", {"reason": str(error)}) from None


Base64Image = Annotated[str, AfterValidator(_decoded_base64), WithJsonSchema({"type": "string", "format": "byte"})]


class Options(BaseModel):
    """An endpoint's options (besides the images); unknown ones are refused."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def bounds(cls) -> dict[str, str]:
        """What each option with a range must be ("an integer between 1 and 10"), read from its constraints."""
        found = {}
        for name, info in cls.model_fields.items():
            low = next((rule.ge for rule in info.metadata if hasattr(rule, "ge")), None)
            high = next((rule.le for rule in info.metadata if hasattr(rule, "le")), None)
            if low is not None and high is not None:
                found[name] = f"{_TYPE_WORDS.get(info.annotation, 'a value')} between {low} and {high}"
        return found


MODEL_OPTION = (
    str | None,
    Field(None, max_length=128, description="the served model to use, by name (/info lists them); default: the "
          "server's default classifier or detector"),
)  # fmt: skip


def classify_options(num_labels: int, model_option: bool = False) -> type[Options]:
    """``/classify``'s options for models of at most ``num_labels`` classes (``model_option``: with ``model``)."""
    top_k = Field(
        min(DEFAULT_TOP_K, num_labels), ge=1, le=num_labels, description="how many classes to return, best first"
    )
    fields: dict[str, Any] = {"top_k": (int, top_k)}
    if model_option:
        fields["model"] = MODEL_OPTION
    return create_model("ClassifyOptions", __base__=Options, **fields)


class DetectOptions(Options):
    """``/detect``'s options."""

    score_threshold: float = Field(DEFAULT_SCORE_THRESHOLD, ge=0, le=1, description="drop detections scoring less")
    max_detections: int = Field(
        DEFAULT_MAX_DETECTIONS,
        ge=1,
        le=MAX_DETECTIONS,
        description="return at most this many detections per image (the graph's own cap, in /info, also holds)",
    )


DetectRequestOptions = create_model("DetectOptions", __base__=DetectOptions, model=MODEL_OPTION)


@dataclass(frozen=True)
class ImagesRequest:
    """What a request asks: encoded images in order, the options, and whether it was a one-image request."""

    images: list[bytes]
    options: Options
    single: bool


class UploadReader:
    """Reads one endpoint's requests: ``await reader.read(request)``; ``form_model``/``json_model`` describe them."""

    def __init__(self, options: type[Options], max_images: int) -> None:
        self.options = options
        self.max_images = max_images
        images = (list[bytes], Field(min_length=1, max_length=max_images, description="the image files, in order"))
        self.form_model = create_model(f"{options.__name__}Form", __base__=options, **{FILE_FIELD: images})
        encoded = (list[Base64Image], Field(min_length=1, max_length=max_images, description="base64 image files"))
        self.json_model = create_model(f"{options.__name__}Json", __base__=options, **{JSON_FIELD: encoded})

    def usage(self) -> str:
        """What to send, from the options' fields."""
        others = []
        for name, info in self.options.model_fields.items():
            word = _TYPE_WORDS.get(info.annotation, "a value")  # type: ignore[arg-type]
            others.append(f'"{name}" ({word}, optional)')
        options = f", plus {', '.join(others)}" if others else ""
        return (
            f'send {FORM} with the file in field "{FILE_FIELD}" (repeat it for several images, at most '
            f'{self.max_images}){options}; or {JSON} {{"{JSON_FIELD}": ["<base64>", ...]}} with the same options'
        )

    async def read(self, request: Request) -> ImagesRequest:
        """The request's images and options, or ``RequestRejected`` (400 or 415) saying what is wrong."""
        media_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        try:
            if media_type == FORM:
                return await self._read_form(request)
            if media_type == JSON:
                return await anyio.to_thread.run_sync(self._read_json, await request.body())  # base64: off the loop
        except ClientDisconnect:
            raise RequestRejected("the client disconnected before the request was complete") from None
        raise RequestRejected(
            f"Content-Type is {media_type or 'missing'}", HTTPStatus.UNSUPPORTED_MEDIA_TYPE, self.usage()
        )

    def _too_many(self, count: int | None) -> RequestRejected:
        """A 400 for ``count`` images (None: more than the form parser counts), as the schema's ``maxItems`` says."""
        many = f"{count} images" if count is not None else f"more than {self.max_images + 1} images"
        return RequestRejected(f"{many} in one request; the limit is {self.max_images} (RESNET_LAB_MAX_IMAGES)")

    async def _read_form(self, request: Request) -> ImagesRequest:
        how = self.usage()
        fields = len(self.options.model_fields) + 1
        try:  # one part more than allowed, so that a request one image over the limit is counted, not cut
            form = await request.form(max_files=self.max_images + 1, max_fields=fields)
        except HTTPException as error:  # starlette's MultiPartException, re-raised as a 400 (starlette/requests.py)
            detail = str(error.detail).rstrip(".")
            if detail.startswith("Too many files"):
                raise self._too_many(None) from None  # starlette stops counting past its limit
            raise RequestRejected(f"malformed multipart body ({detail})", how=how) from None
        problems, images, values = [], [], {}
        for name in dict.fromkeys(form.keys()):
            given = form.getlist(name)
            uploads = [value for value in given if isinstance(value, UploadFile)]
            if name == FILE_FIELD:
                if len(uploads) < len(given):
                    text = next(value for value in given if not isinstance(value, UploadFile))
                    url = URL.match(text) is not None
                    problems.append(
                        f'field "{name}" {URL_REFUSED}' if url else f'field "{name}" must be a file upload, not text'
                    )
                images = uploads
            elif name not in self.options.model_fields:
                problems.append(f'unexpected {"file" if uploads else "field"} "{name}"')
            elif uploads:
                problems.append(f'field "{name}" must be a plain form value, not a file')
            elif len(given) > 1:
                problems.append(f'field "{name}" given {len(given)} times')
            else:
                values[name] = str(given[0])[:_FORM_TEXT_LIMIT]
        if problems:
            raise RequestRejected("; ".join(problems), how=how)
        if not images:
            raise RequestRejected(f'missing file field "{FILE_FIELD}"', how=how)
        if len(images) > self.max_images:
            raise self._too_many(len(images))
        options = self._options(values, strict=False)
        data = [await upload.read() for upload in images]
        for upload in images:
            await upload.close()
        return ImagesRequest(images=data, options=options, single=len(data) == 1)

    def _read_json(self, body: bytes) -> ImagesRequest:
        try:
            parsed = self.json_model.model_validate_json(body, strict=True)
        except ValidationError as error:
            errors = error.errors(include_url=False)
            for item in errors:
                if item["type"] == "too_long" and tuple(item["loc"]) == (JSON_FIELD,):
                    raise self._too_many(len(item["input"])) from None
            raise self._invalid(errors) from None
        values = parsed.model_dump(exclude={JSON_FIELD})
        images = getattr(parsed, JSON_FIELD)
        return ImagesRequest(images=images, options=self.options(**values), single=len(images) == 1)

    def _options(self, values: dict[str, str], strict: bool) -> Options:
        try:
            return self.options.model_validate(values, strict=strict)
        except ValidationError as error:
            raise self._invalid(error.errors(include_url=False)) from None

    def _invalid(self, errors: list[Any]) -> RequestRejected:
        """The sentence for validation errors; what to send follows unless each error says it (a value's range)."""
        bounds = self.options.bounds()
        ranged = {(name,) for name in bounds}
        in_range = all(error["type"] in OUT_OF_RANGE and tuple(error["loc"]) in ranged for error in errors)
        return RequestRejected(describe_errors(errors, bounds), how="" if in_range else self.usage())
