"""API input specs that accept only well-formed multipart forms and raise every client mistake as ``RequestRejected``.

BentoML parses an API's input with ``input_spec.from_http_request(request, serde)`` (``_bentoml_impl/server/app.py``
``api_endpoint``), before the handler runs. Its multipart path (``_bentoml_impl/serde.py`` ``MultipartSerde``) lets
client mistakes escape as non-BentoML exceptions, which its wrapper answers with a generic 500: starlette's
``HTTPException(400)`` for a body that is not valid multipart, ``UnicodeDecodeError`` / ``RecursionError`` from
``json.loads`` on a non-file field, httpx errors from downloading text sent in a file field as a URL. Here the form
is parsed once (starlette caches it on the request, so BentoML's serde reuses it), checked against the model's own
fields, then handed to BentoML; what goes wrong becomes a ``RequestRejected`` that names the mistake and says what
to send.
"""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Any

import bentoml
from pydantic import Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from service.bentoml_adapter import serde_for
from service.errors import RequestRejected, describe_errors

_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text"}


def _safe_filename(name: str | None) -> str:
    """At most 64 portable characters of the upload's file name, extension kept."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename((name or "").replace("\\", "/")))[-64:]


class MultipartInput(bentoml.IODescriptor):
    """Base for multipart-only inputs: file fields must be uploads, the others plain values, nothing else."""

    max_form_parts: typing.ClassVar[int] = 16  # starlette's defaults allow 1000 files and 1000 fields

    @classmethod
    def usage(cls) -> str:
        """What to send, from the model's fields: ``send multipart/form-data with the file in field "image" ...``."""
        files = [f'"{name}"' for name in cls.model_fields if name in cls.multipart_fields]
        others = []
        for name, info in cls.model_fields.items():
            if name not in cls.multipart_fields:
                word = _TYPE_WORDS.get(info.annotation, "a value")  # type: ignore[arg-type]
                others.append(f'"{name}" ({word}{"" if info.is_required() else ", optional"})')
        text = "send multipart/form-data with the file in field " + " and ".join(files)
        return text + (f", plus {', '.join(others)}" if others else "")

    @classmethod
    async def from_http_request(cls, request: Any, serde: Any) -> Any:
        how = cls.usage()
        media_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if media_type != "multipart/form-data":
            raise RequestRejected(f"Content-Type is {media_type or 'missing'}", how)
        if serde.media_type != media_type:  # BentoML looks media types up case-sensitively; RFC 9110 says they are not
            serde = serde_for(media_type)
        try:
            form = await request.form(max_files=cls.max_form_parts, max_fields=cls.max_form_parts)
        except HTTPException as error:  # starlette's MultiPartException, re-raised as a 400 (starlette/requests.py)
            if not 400 <= error.status_code < 500:
                raise
            raise RequestRejected(f"malformed multipart body ({str(error.detail).rstrip('.')})", how) from None
        problems = []
        for name in dict.fromkeys(form.keys()):
            values = form.getlist(name)
            uploads = sum(isinstance(value, UploadFile) for value in values)
            info = cls.model_fields.get(name)
            if info is None:
                problems.append(f'unexpected {"file" if uploads else "field"} "{name}"')
            elif name in cls.multipart_fields and uploads < len(values):
                problems.append(f'field "{name}" must be a file upload, not text')
            elif name not in cls.multipart_fields and uploads:
                problems.append(f'field "{name}" must be a plain form value, not a file')
            elif len(values) > 1 and typing.get_origin(info.annotation) is not list:
                problems.append(f'field "{name}" given {len(values)} times')
        if problems:
            raise RequestRejected("; ".join(problems), how)
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):  # BentoML makes the name the temp file's suffix: >255 bytes is a 500
                value.filename = _safe_filename(value.filename)
        try:
            return await super().from_http_request(request, serde)  # BentoML's serde, on the cached form
        except ValidationError as error:
            raise RequestRejected(describe_errors(error.errors(include_url=False)), how) from None
        except RecursionError:  # json.loads on a deeply nested field value (serde.py MultipartSerde.parse_request)
            raise RequestRejected("a form value is nested too deeply", how) from None


class ClassifyInput(MultipartInput):
    """Classify one uploaded image."""  # mirrors VisionService.classify(image, top_k): keep them in step

    image: Path = Field(description="the image file (JPEG, PNG, GIF, WebP, BMP or TIFF)")
    top_k: int = Field(5, description="how many classes to return, 1 to the number of labels")


class DetectInput(MultipartInput):
    """Detect objects in one uploaded image."""  # mirrors VisionService.detect(...): keep them in step

    image: Path = Field(description="the image file (JPEG, PNG, GIF, WebP, BMP or TIFF)")
    score_threshold: float = Field(0.5, description="drop detections scoring less, 0 to 1")
    max_detections: int = Field(
        100, description="return at most this many detections, 1 to 1000 (the graph's own cap, in /info, also holds)"
    )
