"""The service's HTTP routes beside BentoML's: ``/info``, the ``/demo`` page, the Open Inference Protocol v2
(``service.v2_routes``) and the description of ``/classify`` and ``/detect``, as one FastAPI app that the service
mounts (``@bentoml.asgi_app``); BentoML merges its OpenAPI paths into ``/docs.json``.

Handlers reach the running service through ``bentoml.get_current_service()``. The demo page is self-contained (no
external scripts, fonts or CDNs): it posts a picked image to ``/classify`` and ``/detect`` and draws the answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException
from fastapi import FastAPI, Security
from fastapi.security import HTTPBearer
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from service.errors import RequestRejected, error_response
from service.openapi import (
    ClassifyAnswer,
    ClassifyResults,
    DetectAnswer,
    DetectResults,
    error_responses,
    upload_body,
)
from service.uploads import UploadReader
from service.v2_routes import v2_router

DEMO_DIR = Path(__file__).resolve().parent / "demo"
API_KEY = HTTPBearer(auto_error=False, scheme_name="apiKey", description="a key of RESNET_LAB_API_KEYS")


def running_service() -> Any:
    """The service instance answering requests, or a 503 until it is up."""
    try:
        return bentoml.get_current_service()
    except BentoMLException:
        raise RequestRejected("model not loaded yet; retry shortly", 503) from None


def web_app(classify: UploadReader, detect: UploadReader, keys_enabled: bool) -> FastAPI:
    """The routes; ``classify``/``detect`` describe those endpoints' bodies; ``keys_enabled``: routes need a key."""
    app = FastAPI(title="resnet-lab", openapi_url=None, docs_url=None, redoc_url=None)  # BentoML serves /docs.json
    secured = [Security(API_KEY)] if keys_enabled else []  # documents the key; RequireApiKey checks it
    auth = (401,) if keys_enabled else ()

    @app.exception_handler(RequestRejected)
    async def rejected(_: Request, error: RequestRejected) -> JSONResponse:
        return error_response(error)

    @app.api_route("/info", methods=["GET", "POST"], include_in_schema=False, dependencies=secured)
    async def info() -> JSONResponse:
        """The served models: sizes, the runtime and precision each runs in and why, the limits, batching so far."""
        return JSONResponse(running_service().describe())

    for method in ("get", "post"):  # described one method at a time: OpenAPI wants each operation id once
        app.add_api_route("/info", info, methods=[method.upper()], operation_id=f"info_{method}",
                          responses=error_responses(503, *auth), dependencies=secured)  # fmt: skip

    # /classify and /detect are answered by the BentoML APIs of the same paths, which run first; these operations
    # describe them in /docs.json and call the same code.
    @app.post(
        "/classify",
        response_model=ClassifyAnswer | ClassifyResults,
        responses=error_responses(400, 404, 413, 415, 503, *auth),
        dependencies=secured,
        openapi_extra=upload_body(classify),
        description="The most likely classes of each image. One image: its answer (or its error, with a 4xx); "
        'several: `{"model", "results": [...]}` in input order, an image that failed holding its own `{"error"}`.',
    )
    async def classify_route(request: Request) -> Response:
        """Classify images."""
        return await running_service().answer_classify(request)

    @app.post(
        "/detect",
        response_model=DetectAnswer | DetectResults,
        responses=error_responses(400, 404, 413, 415, 503, *auth),
        dependencies=secured,
        openapi_extra=upload_body(detect),
        description="Objects in each image: boxes in its pixels as displayed (EXIF orientation applied), COCO "
        "category ids, labels, scores, best first. Several images: as for /classify. 404 on a server without a "
        "detector.",
    )
    async def detect_route(request: Request) -> Response:
        """Detect objects in images."""
        return await running_service().answer_detect(request)

    @app.get("/demo", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(DEMO_DIR / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/demo.js", include_in_schema=False)
    async def script() -> FileResponse:
        return FileResponse(DEMO_DIR / "demo.js", media_type="text/javascript; charset=utf-8")

    app.include_router(v2_router(lambda: running_service().v2, secured))
    return app
