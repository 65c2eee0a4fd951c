"""The service's plain web routes beside the BentoML APIs: ``/info`` and the ``/demo`` page with its script.

The page is self-contained (no external scripts, fonts or CDNs): it posts a picked image to ``/classify`` and
``/detect`` and draws the answers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

DEMO_DIR = Path(__file__).resolve().parent / "demo"


def web_app(describe: Callable[[], dict[str, Any] | None]) -> Starlette:
    """/info (``describe()``, or a 503 until the service is up), /demo and /demo.js."""

    async def info(_: Request) -> JSONResponse:
        described = describe()
        if described is None:
            return JSONResponse({"error": "model not loaded yet"}, status_code=503)
        return JSONResponse(described)

    async def page(_: Request) -> FileResponse:
        return FileResponse(DEMO_DIR / "index.html", media_type="text/html; charset=utf-8")

    async def script(_: Request) -> FileResponse:
        return FileResponse(DEMO_DIR / "demo.js", media_type="text/javascript; charset=utf-8")

    return Starlette(
        routes=[
            Route("/info", info, methods=["GET", "POST"]),
            Route("/demo", page, methods=["GET"]),
            Route("/demo.js", script, methods=["GET"]),
        ]
    )
