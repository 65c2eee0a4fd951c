"""The server's settings: one typed object, read once from ``RESNET_LAB_*`` variables by the entry module
(``service.service``) and passed to ``service.app.build_service``.

They extend the settings every model consumer shares (``inference.settings.InferenceSettings``: runtime, precision,
threads, decoding). Each field names its variable and says what it means; docs/serving.md's table is generated from
here (``python -m service.settings --write docs/tables/settings.md``), so the two cannot drift.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from inference.settings import InferenceSettings, setting
from toolkit.atomic import atomic_write_text
from toolkit.cli import HelpFormatter


@dataclass(frozen=True)
class Settings(InferenceSettings):
    """Everything the server can be told through ``RESNET_LAB_*`` variables."""

    model: str = setting(
        "RESNET_LAB_MODEL", "", "classifier to serve: a .onnx file or a model-store tag; empty: the embedded default"
    )
    detector: str = setting(
        "RESNET_LAB_DETECTOR",
        "",
        "detector for /detect: a .onnx file or a model-store tag; empty: no detector (/detect answers 404)",
    )
    model_repository: str = setting(
        "RESNET_LAB_MODEL_REPOSITORY",
        "",
        "a folder of models in Triton's layout, NAME/VERSION/model.onnx, served beside RESNET_LAB_MODEL and "
        "RESNET_LAB_DETECTOR and loaded or unloaded while serving (/v2/repository); empty: none",
    )
    version_policy: str = setting(
        "RESNET_LAB_VERSION_POLICY",
        "latest:1",
        "which versions of a repository model are served: latest:N, all, or specific:V1,V2 (a load may override it)",
    )
    max_loaded_models: int = setting(
        "RESNET_LAB_MAX_LOADED_MODELS", 0, "most model versions loaded at once; a load beyond it gets a 409 (0: no cap)"
    )
    max_loaded_mb: int = setting(
        "RESNET_LAB_MAX_LOADED_MB",
        0,
        "most memory the loaded models may hold together (each measured as it loads); a load beyond it gets a 409 "
        "(0: no cap)",
    )
    detect_concurrency: int = setting(
        "RESNET_LAB_DETECT_CONCURRENCY", 1, "detections run at once (each run uses every core); others wait"
    )
    max_batch_size: int = setting("RESNET_LAB_MAX_BATCH_SIZE", 32, "most images per model run (batching)")
    max_latency_ms: int = setting(
        "RESNET_LAB_MAX_LATENCY_MS", 20_000, "waiting longer for the batching queue or a detection slot: 503"
    )
    lame_duck_seconds: int = setting(
        "RESNET_LAB_LAME_DUCK_SECONDS",
        0,
        "after SIGTERM: /readyz answers 503 while requests are still served this long (for a load balancer to "
        "notice), then the server drains and exits",
    )
    max_upload_bytes: int = setting(
        "RESNET_LAB_MAX_UPLOAD_BYTES", 20 * 1024 * 1024, "larger request bodies (all images together) get a 413"
    )
    max_images: int = setting(
        "RESNET_LAB_MAX_IMAGES", 32, "most images in one request (/classify, /detect, /v2 infer); more get a 400"
    )
    decode_threads: int = setting(
        "RESNET_LAB_DECODE_THREADS", os.cpu_count() or 1, "uploads decoded at once", shown="the core count"
    )
    api_keys: str = setting(
        "RESNET_LAB_API_KEYS",
        "",
        "comma-separated API keys, or @/path/to/file (one per line, re-read when it changes); set: every route but "
        "the probes and docs needs `Authorization: Bearer KEY`",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("detect_concurrency", "max_batch_size", "max_images", "decode_threads"):
            if getattr(self, name) < 1:
                self._refuse(name, "must be at least 1")
        for name in ("max_loaded_models", "max_loaded_mb"):
            if getattr(self, name) < 0:
                self._refuse(name, "must be 0 (no cap) or more")


TABLE = Path(__file__).resolve().parents[1] / "docs" / "tables" / "settings.md"  # docs/serving.md shows it


def main(argv: list[str] | None = None) -> str:
    """CLI: print the settings table, or write it where docs/serving.md takes it from."""
    parser = argparse.ArgumentParser(
        prog="python -m service.settings", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("--write", action="store_true", help=f"write it to {TABLE.relative_to(TABLE.parents[2])}")
    args = parser.parse_args(argv)
    table = Settings.markdown_table()
    if args.write:
        atomic_write_text(TABLE, table + "\n")
        print(f"wrote {TABLE}")
    else:
        print(table)
    return table


if __name__ == "__main__":
    main()
