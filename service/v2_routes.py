"""The Open Inference Protocol v2 over HTTP/REST (KServe ``required_api``): health, server and model metadata,
readiness and inference, for each served model (``service.v2_models``). Errors are ``{"error": "..."}`` with a 4xx.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import metadata as distributions
from typing import Any

import anyio
from fastapi import APIRouter, params
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from service import shutdown
from service.errors import RequestRejected
from service.openapi import error_responses, inline, path_parameters
from service.v2_repository import repository_router
from service.v2_wire import (
    HEADER_LENGTH,
    InferenceRequest,
    InferenceResponse,
    Liveness,
    ModelMetadata,
    ModelReadiness,
    Readiness,
    ServerMetadata,
    binary_outputs,
    encode_response,
    parse_request,
)

SERVER_NAME = "resnet-lab"
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics"]
MODEL = "/v2/models/{model_name}"
VERSIONED = "/v2/models/{model_name}/versions/{model_version}"
INFER_DESCRIPTION = (
    "Run a model on v2 tensors. The body is the JSON request, or (Triton's binary tensor extension, what "
    "`tritonclient.http` sends) that JSON followed by the raw data of inputs whose `parameters.binary_data_size` is "
    "set, with the header `Inference-Header-Content-Length` giving the JSON's length. Outputs come as raw data "
    "after the JSON when `parameters.binary_data_output` is true or a requested output sets `binary_data`; the answer "
    "is then `application/octet-stream` with the same header."
)
REQUEST_SCHEMA = inline(InferenceRequest.model_json_schema())


def server_version() -> str:
    """This package's version where it is installed (a bento ships the source alone: "unknown")."""
    try:
        return distributions.version(SERVER_NAME)
    except distributions.PackageNotFoundError:
        return "unknown"


def v2_router(models: Callable[[], Any], secured: Sequence[params.Depends]) -> APIRouter:
    """The ``/v2`` routes; ``models()`` gives the served ``V2Models``; ``secured``: dependencies documenting keys."""
    router = APIRouter(tags=["Open Inference Protocol v2"])
    auth = (401,) if secured else ()

    @router.get("/v2/health/live", response_model=Liveness, responses=error_responses())
    async def live() -> Liveness:
        """Whether the server is live (open to probes)."""
        return Liveness(live=True)

    not_ready = {503: {"model": Readiness, "description": "Shutting down (SIGTERM): send new requests elsewhere"}}

    @router.get("/v2/health/ready", response_model=Readiness, responses={**error_responses(), **not_ready})
    async def ready() -> JSONResponse:
        """Whether the server is ready: its models are loaded and it is not shutting down (open to probes)."""
        is_ready = not shutdown.draining()
        return JSONResponse(Readiness(ready=is_ready).model_dump(), status_code=200 if is_ready else 503)

    @router.get("/v2", response_model=ServerMetadata, responses=error_responses(*auth), dependencies=secured)
    async def server() -> ServerMetadata:
        """Server metadata: name, version, protocol extensions."""
        return ServerMetadata(name=SERVER_NAME, version=server_version(), extensions=EXTENSIONS)

    def model_of(request: Request) -> Any:
        path = request.path_params
        return models().find(path["model_name"], path.get("model_version"))

    router.include_router(repository_router(models, secured))
    for path in (MODEL, VERSIONED):
        names = ("model_name", "model_version") if path == VERSIONED else ("model_name",)
        extra = {"parameters": path_parameters(*names)}

        @router.get(path, response_model=ModelMetadata, responses=error_responses(404, *auth), dependencies=secured,
                    openapi_extra=extra)  # fmt: skip
        async def model_metadata(request: Request) -> JSONResponse:
            """A model's metadata: versions, platform, inputs and outputs with datatypes and shapes (-1: any)."""
            path = request.path_params
            return JSONResponse(models().metadata(path["model_name"], path.get("model_version")).model_dump())

        @router.get(f"{path}/ready", response_model=ModelReadiness, responses=error_responses(404, *auth),
                    dependencies=secured, openapi_extra=extra)  # fmt: skip
        async def model_ready(request: Request) -> ModelReadiness:
            """Whether a model is ready (loaded models always are)."""
            return ModelReadiness(name=model_of(request).name, ready=True)

        request_body = {"required": True, "content": {"application/json": {"schema": REQUEST_SCHEMA}}}

        @router.post(
            f"{path}/infer",
            response_model=InferenceResponse,
            responses={
                200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                **error_responses(400, 404, 413, 503, *auth),
            },
            dependencies=secured,
            openapi_extra={**extra, "requestBody": request_body},
            description=INFER_DESCRIPTION,
        )
        async def infer(request: Request) -> Response:
            """Inference (JSON or binary tensor data)."""
            model = model_of(request)
            try:
                body = await request.body()
            except ClientDisconnect:
                raise RequestRejected("the client disconnected before the request was complete") from None
            parsed, tensors = await anyio.to_thread.run_sync(parse_request, body, request.headers.get(HEADER_LENGTH))
            with models().serving(model):
                outputs = await model.infer(parsed, tensors)
            answer = InferenceResponse(model_name=model.name, model_version=model.version, id=parsed.id, outputs=[])
            payload, headers = encode_response(answer, outputs, binary_outputs(parsed, [o.name for o in outputs]))
            return Response(payload, headers=headers)

    return router
