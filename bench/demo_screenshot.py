"""The README's picture of the demo page: ``python -m bench.demo_screenshot --detector F --image I``.

Serves the embedded default classifier and the given detector with ``bentoml serve``, serves the image from a second
local port, and has a real headless Chromium (Debian's ``chromium`` package) load ``/demo?image=...`` and save a
screenshot to ``--output`` (``docs/figures/demo.png``).
"""

from __future__ import annotations

import argparse
import functools
import shutil
import subprocess
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from report.provenance import REPO_ROOT
from tests.server import bentoml_serve
from toolkit import cli
from toolkit.errors import UsageError

OUT = REPO_ROOT / "docs" / "figures" / "demo.png"
CHROMIUM_FLAGS = [  # what this sandbox needs; no background network, no first-run chatter
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--hide-scrollbars",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1100,720",
    "--virtual-time-budget=20000",
]  # fmt: skip


class CorsHandler(SimpleHTTPRequestHandler):
    """Static files the demo page (another origin) may fetch."""

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def log_message(self, *_: object) -> None:
        pass


def screenshot(detector: Path, image: Path, out: Path = OUT) -> Path:
    """Serve, load the page in Chromium with ``?image=``, save the PNG."""
    browser = shutil.which("chromium")
    if browser is None:
        raise UsageError("chromium not found: apt-get install chromium (Debian's package)")
    work = Path(tempfile.mkdtemp(prefix="demo-shot-"))
    shutil.copyfile(image, work / image.name)
    files = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(CorsHandler, directory=str(work)))
    threading.Thread(target=files.serve_forever, daemon=True).start()
    env = {"RESNET_LAB_MODEL": "", "RESNET_LAB_DETECTOR": str(detector), "BENTOML_HOME": str(work / "bentoml")}
    try:
        with bentoml_serve(env, work / "serve.log") as server:
            url = f"{server.url}/demo?image=http://127.0.0.1:{files.server_port}/{image.name}"
            command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={work / 'profile'}", f"--screenshot={out}", url]
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(command, check=True, capture_output=True, timeout=120)
    finally:
        files.shutdown()
    return out


def main(argv: list[str] | None = None) -> Path:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.demo_screenshot", description=__doc__, formatter_class=cli.HelpFormatter
    )
    parser.add_argument("--detector", type=Path, required=True, help="an exported detector (.onnx)")
    parser.add_argument("--image", type=Path, required=True, help="the picture to show")
    parser.add_argument("--output", type=Path, default=OUT, help="PNG to write")
    args = parser.parse_args(argv)
    out = screenshot(args.detector, args.image, args.output)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    cli.entry_point(main)
