"""The README's example answer, from the real service: ``python -m bench.readme_example``.

Starts ``bentoml serve`` with the embedded default model, uploads the shipped photo of a cat (``tests/data``) as
the README's ``curl`` line does, and writes the answer to ``docs/examples/classify.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import httpx

from report.provenance import REPO_ROOT
from tests.server import bentoml_serve
from toolkit import cli
from toolkit.atomic import atomic_write_text

PHOTO = REPO_ROOT / "tests" / "data" / "coco" / "val2017" / "000000119828.jpg"  # the README's curl line sends it
TOP_K = 3
EXAMPLE = REPO_ROOT / "docs" / "examples" / "classify.json"


def ask(url: str) -> dict:
    """The service's answer for the example photo."""
    photo = PHOTO
    response = httpx.post(
        url + "/classify", files={"image": (photo.name, photo.read_bytes())}, data={"top_k": str(TOP_K)}, timeout=60
    )
    response.raise_for_status()
    return response.json()


def main(argv: list[str] | None = None) -> dict:
    """Serve the default model, ask, write the example file."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.readme_example", description=__doc__, formatter_class=cli.HelpFormatter
    )
    parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="example-"))
    with bentoml_serve({"RESNET_LAB_MODEL": "", "BENTOML_HOME": str(work / "bentoml")}, work / "serve.log") as server:
        answer = ask(server.url)
    atomic_write_text(EXAMPLE, json.dumps(answer, indent=1) + "\n")
    print(f"wrote {EXAMPLE}")
    return answer


if __name__ == "__main__":
    cli.entry_point(main)
