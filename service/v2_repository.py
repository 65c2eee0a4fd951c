"""Triton's model repository and statistics extensions of the v2 protocol, as ``tritonclient.http`` calls them:

    POST /v2/repository/index                     {"ready": bool}? -> [{"name", "version", "state", "reason"}]
    POST /v2/repository/models/{name}/load        {"parameters": {"config": "<JSON>"}}? (config: version_policy)
    POST /v2/repository/models/{name}/unload      {"parameters": {"unload_dependents": bool}}?
    GET  /v2/models/stats, /v2/models/{name}/stats, /v2/models/{name}/versions/{version}/stats

Models load from the server's repository only: a load that carries files (Triton's ``file:`` parameters) is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, params
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from inference.repository import RepositoryError, VersionPolicy
from service.errors import RequestRejected, describe_errors
from service.openapi import error_responses, inline, path_parameters

CONFIG_FIELDS = {"name", "version_policy"}  # what a load's config may set here


class IndexRequest(BaseModel):
    """``POST /v2/repository/index``'s optional body."""

    model_config = ConfigDict(extra="forbid")
    ready: bool = Field(False, description="list only the versions that are ready")


class IndexEntry(BaseModel):
    """One model version in the repository index."""

    name: str
    version: str
    state: str = Field(description="READY or UNAVAILABLE")
    reason: str = Field(description="why it is unavailable")


class LoadParameters(BaseModel):
    model_config = ConfigDict(extra="allow")
    config: str | None = Field(None, description='a JSON model configuration; here: {"version_policy": {...}}')
    unload_dependents: bool | None = None


class LoadRequest(BaseModel):
    """A load's or an unload's optional body."""

    model_config = ConfigDict(extra="forbid")
    parameters: LoadParameters = Field(default_factory=LoadParameters)


class Statistics(BaseModel):
    """Triton's statistics: one entry per served model version."""

    model_stats: list[dict[str, Any]]


def _body(model: type[BaseModel], raw: bytes) -> Any:
    """The optional JSON body as ``model`` (an empty body: its defaults), else a 400."""
    try:
        return model.model_validate_json(raw or b"{}", strict=True)
    except ValidationError as error:
        raise RequestRejected(describe_errors(error.errors(include_url=False))) from None


def _policy(parameters: LoadParameters, name: str) -> VersionPolicy | None:
    """The version policy a load's ``config`` sets (None: the server's)."""
    files = [key for key in parameters.model_extra or {} if key.startswith("file:")]
    if files:
        raise RequestRejected("this server loads models from its repository only; put the file there as "
                              f"{name}/VERSION/model.onnx and load it without files")  # fmt: skip
    if parameters.model_extra:
        raise RequestRejected(f"unknown parameters {sorted(parameters.model_extra)}; a load takes config")
    if parameters.config is None:
        return None
    try:
        config = json.loads(parameters.config)
    except ValueError:
        raise RequestRejected('parameter "config" must be a JSON object') from None
    if not isinstance(config, dict) or set(config) - CONFIG_FIELDS or config.get("name", name) != name:
        raise RequestRejected(f'config may set "version_policy" (and "name" = {name!r}) only')
    if "version_policy" not in config:
        return None
    try:
        return VersionPolicy.from_triton(config["version_policy"])
    except RepositoryError as error:
        raise RequestRejected(str(error)) from None


def repository_router(models: Callable[[], Any], secured: Sequence[params.Depends]) -> APIRouter:
    """The repository and statistics routes; ``models()`` gives the served ``V2Models``."""
    router = APIRouter(tags=["Open Inference Protocol v2: model repository"])
    auth = (401,) if secured else ()

    def body_of(model: type[BaseModel]) -> dict[str, Any]:
        schema = inline(model.model_json_schema())
        return {"requestBody": {"required": False, "content": {"application/json": {"schema": schema}}}}

    @router.post("/v2/repository/index", response_model=list[IndexEntry], responses=error_responses(400, *auth),
                 dependencies=secured, openapi_extra=body_of(IndexRequest))  # fmt: skip
    async def index(request: Request) -> JSONResponse:
        """Every model version in the repository or served: READY, or UNAVAILABLE and why."""
        asked = _body(IndexRequest, await request.body())
        return JSONResponse(models().registry.index(ready_only=asked.ready))

    name_only = {"parameters": path_parameters("model_name")}

    @router.post("/v2/repository/models/{model_name}/load", responses=error_responses(400, 404, 409, *auth),
                 dependencies=secured, openapi_extra={**name_only, **body_of(LoadRequest)})  # fmt: skip
    async def load(request: Request) -> JSONResponse:
        """Load a repository model's versions (or reload those whose file changed); in-flight requests go on."""
        name = request.path_params["model_name"]
        asked = _body(LoadRequest, await request.body())
        await models().registry.load(name, _policy(asked.parameters, name))
        return JSONResponse({})

    @router.post("/v2/repository/models/{model_name}/unload", responses=error_responses(400, 404, *auth),
                 dependencies=secured, openapi_extra={**name_only, **body_of(LoadRequest)})  # fmt: skip
    async def unload(request: Request) -> JSONResponse:
        """Stop serving a model (its requests in flight are answered first)."""
        name = request.path_params["model_name"]
        _body(LoadRequest, await request.body())
        await models().registry.unload(name)
        return JSONResponse({})

    @router.get("/v2/models/stats", response_model=Statistics, responses=error_responses(*auth), dependencies=secured)
    async def all_stats() -> JSONResponse:
        """Statistics of every served model version."""
        return JSONResponse({"model_stats": [e.runner.stats.triton() for e in models().registry.versions()]})

    for path in ("/v2/models/{model_name}/stats", "/v2/models/{model_name}/versions/{model_version}/stats"):
        names = ("model_name", "model_version") if "model_version" in path else ("model_name",)

        @router.get(path, response_model=Statistics, responses=error_responses(404, *auth), dependencies=secured,
                    openapi_extra={"parameters": path_parameters(*names)})  # fmt: skip
        async def stats(request: Request) -> JSONResponse:
            """Statistics of a model's served versions (or of one): counts, queue and run times, batch sizes."""
            name, version = request.path_params["model_name"], request.path_params.get("model_version")
            registry = models().registry
            chosen = [registry.find(name, version)]
            if version is None:  # every served version of the name
                chosen = [entry for entry in registry.versions() if entry.runner.name == name]
            return JSONResponse({"model_stats": [entry.runner.stats.triton() for entry in chosen]})

    return router
