"""The service's settings, read once from the environment into one typed object.

Each field names its environment variable and says what it means; the README's settings table is generated from
here (``python -m service.settings``), so the two cannot drift.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields


class SettingsError(ValueError):
    """A malformed ``RESNET_LAB_*`` variable: the message names it and says what it must be."""


def _setting(env: str, default: object, meaning: str) -> object:
    return field(default=default, metadata={"env": env, "meaning": meaning})


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told through ``RESNET_LAB_*`` variables."""

    model: str = _setting(
        "RESNET_LAB_MODEL", "", "classifier to serve: a .onnx file or a model-store tag; empty: the embedded default"
    )
    detector: str = _setting(
        "RESNET_LAB_DETECTOR", "", "detector for /detect: a .onnx file or a model-store tag; empty: /detect answers 503"
    )
    detect_concurrency: int = _setting(
        "RESNET_LAB_DETECT_CONCURRENCY", 1, "detections run at once (each ORT run uses every core); others wait"
    )
    max_batch_size: int = _setting("RESNET_LAB_MAX_BATCH_SIZE", 32, "most images per ONNX Runtime call (batching)")
    max_latency_ms: int = _setting(
        "RESNET_LAB_MAX_LATENCY_MS", 20_000, "waiting longer for the batching queue or a detection slot: 503"
    )
    lame_duck_seconds: int = _setting(
        "RESNET_LAB_LAME_DUCK_SECONDS",
        0,
        "after SIGTERM: /readyz answers 503 while requests are still served this long (for a load balancer to "
        "notice), then the server drains and exits",
    )
    max_upload_bytes: int = _setting(
        "RESNET_LAB_MAX_UPLOAD_BYTES", 20 * 1024 * 1024, "larger request bodies (all images together) get a 413"
    )
    max_images: int = _setting(
        "RESNET_LAB_MAX_IMAGES", 32, "most images in one request (/classify, /detect, /v2 infer); more get a 413"
    )
    max_image_pixels: int = _setting(
        "RESNET_LAB_MAX_IMAGE_PIXELS", 50_000_000, "images declaring more pixels get a 413 (before decoding)"
    )
    exact_decode: bool = _setting(
        "RESNET_LAB_EXACT_DECODE",
        False,
        "1: decode every pixel of large JPEGs; 0: reduced-scale decode where it keeps the answers (inputs >= 64 px)",
    )
    decode_threads: int = _setting("RESNET_LAB_DECODE_THREADS", os.cpu_count() or 1, "uploads decoded at once")
    ort_threads: int = _setting("RESNET_LAB_ORT_THREADS", 0, "ONNX Runtime intra-op threads (0: one per core)")
    ort_spin: bool = _setting(
        "RESNET_LAB_ORT_SPIN", True, "ONNX Runtime workers spin between runs (its default; faster here)"
    )
    providers: str = _setting(
        "RESNET_LAB_PROVIDERS", "", "comma-separated ONNX Runtime providers; empty: CUDA where a GPU works, else CPU"
    )
    api_keys: str = _setting(
        "RESNET_LAB_API_KEYS",
        "",
        "comma-separated API keys, or @/path/to/file (one per line, re-read when it changes); set: every route but "
        "the probes and docs needs `Authorization: Bearer KEY`",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every ``RESNET_LAB_*`` variable; a malformed one raises ``SettingsError`` with the reason."""
        environ = os.environ if environ is None else environ
        values = {}
        for spec in fields(cls):
            raw = environ.get(spec.metadata["env"], "")
            if raw != "":
                values[spec.name] = _parse(spec.metadata["env"], raw, type(spec.default))
        return cls(**values)


def env_name(setting: str) -> str:
    """The environment variable of the ``Settings`` field named ``setting``."""
    for spec in fields(Settings):
        if spec.name == setting:
            return spec.metadata["env"]
    raise KeyError(setting)


def _parse(name: str, raw: str, kind: type) -> object:
    if kind is bool:
        if raw.lower() not in ("0", "1", "true", "false"):
            raise SettingsError(f"{name}={raw!r} must be 0 or 1")
        return raw.lower() in ("1", "true")
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} must be an integer") from None
    return raw


def _shown_default(name: str, value: object) -> str:
    if name == "decode_threads":
        return "the core count"
    if isinstance(value, bool):
        return str(int(value))
    return f"{value:,}" if isinstance(value, int) else (str(value) or "(empty)")


def markdown_table() -> str:
    """The README's settings table: variable, default, meaning."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for spec in fields(Settings):
        default = _shown_default(spec.name, spec.default)
        lines.append(f"| `{spec.metadata['env']}` | {default} | {spec.metadata['meaning']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    """CLI: print the settings table (what the README shows)."""
    # not training.cli's formatter: service sits below training (which reads images with service.imaging), and
    # this command has no options whose defaults it would show
    parser = argparse.ArgumentParser(
        prog="python -m service.settings", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.parse_args(argv)
    table = markdown_table()
    print(table)
    return table


if __name__ == "__main__":
    main()
