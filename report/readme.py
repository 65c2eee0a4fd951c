"""Regenerate the generated blocks of the README and the docs: ``python -m report.readme`` (``--check`` compares).

A block sits between ``<!-- generated: SOURCE -->`` and ``<!-- /generated -->``. SOURCE is a benchmark results file
(``docs/bench/NAME.json``, rendered by ``report.bench_file``), a Markdown table a command wrote
(``docs/tables/NAME.md``, e.g. the server's settings by ``python -m service.settings --write``), ``weights``
(``inference.weights``' table of published files), ``default_model`` (the shipped model's figures) or a JSON file
shown as is (``docs/examples/NAME.json``, e.g. a real answer of the shipped model).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from inference import weights
from toolkit import cli
from toolkit.atomic import atomic_write_text
from toolkit.errors import UsageError

from .bench_file import render
from .provenance import REPO_ROOT

README = REPO_ROOT / "README.md"


def documents() -> list:
    """Every Markdown file that may hold generated blocks: the README and ``docs/*.md``."""
    return [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]


BLOCK = re.compile(  # a block's body never holds another block's start
    r"(<!-- generated: (?P<source>\S+) -->\n)(?P<body>(?:(?!<!-- generated:).)*?)(<!-- /generated -->)", re.DOTALL
)


def generate(source: str) -> str:
    """The Markdown a block with ``source`` holds."""
    if source == "weights":
        return weights.markdown_table()
    if source == "default_model":
        return default_model_line()
    if source == "runtimes_line":
        return runtimes_line()
    path = REPO_ROOT / source
    if not path.is_file():
        raise UsageError(f"README block source {source} not found (run the benchmark that writes it)")
    if path.parent.name == "bench":
        return render(path)
    if path.suffix == ".md":
        return path.read_text().rstrip("\n")
    return "```json\n" + compact_json(json.loads(path.read_text())) + "\n```"


def compact_json(answer: dict) -> str:
    """An answer as JSON with each element of its lists on one line (short enough to read in a README)."""
    fields = []
    for key, value in answer.items():
        if isinstance(value, list) and value:
            items = ",\n".join(f"  {json.dumps(item)}" for item in value)
            fields.append(f"{json.dumps(key)}: [\n{items}\n]")
        else:
            fields.append(f"{json.dumps(key)}: {json.dumps(value)}")
    return "{" + ", ".join(fields) + "}"


def default_model_line() -> str:
    """The shipped model's test error beside the paper's and the bar, from its own metadata."""
    from inference.contract import DEFAULT_MODEL, Key

    from .modelcard import BAR, paper_error, read_metadata  # here: it imports the exporter, hence torch

    metadata = read_metadata(DEFAULT_MODEL)
    error = 100 * metadata.json_value(Key.METRICS)[-1]["test_error"]
    verdict = "meets" if error <= BAR else "misses: it is an interim default"
    return (
        f"**{metadata.model_name}: {error:.2f}% test error** on all 10,000 CIFAR-10 test images (paper Table 6: "
        f"{paper_error(metadata.model_name, error)}); the project's bar is {BAR:.1f}%, which this model {verdict}."
    )


RUNTIMES = REPO_ROOT / "docs" / "bench" / "runtimes.json"


def runtimes_line(path: Path = RUNTIMES) -> str:
    """One line: what runs where, and how fast, from ``bench.runtimes``' file."""
    data = json.loads(path.read_text())
    rows = {row["setting"]: row for row in data["rows"]}
    ort, served = rows["ONNX Runtime fp32"], {name: row.get("classify_c8") for name, row in rows.items()}
    parts = [f"ONNX Runtime fp32 {ort['classify_c8']:.0f}"]
    for name, label in (("OpenVINO bf16", "OpenVINO bf16"), ("int8 file, auto", "the int8 file")):
        if name in rows:
            parts.append(f"{label} {served[name]:.0f} ({served[name] / ort['classify_c8']:.1f}x)")
    detector = rows.get("detector, OpenVINO bf16") or rows.get("detector, OpenVINO fp32")
    detect = (
        f"; `/detect` in {detector['detect_s']:.2f} s instead of {rows['detector, ONNX Runtime fp32']['detect_s']:.2f}"
    )
    return (
        f"On a CPU the server runs OpenVINO (bf16 where the CPU has bf16 units and the file's check passed, int8 files "
        f"on the faster runtime) and on a GPU ONNX Runtime's CUDA. On {data['machine']}, ResNet-50 answers "
        f"`/classify` at {', '.join(parts)} images/s{detect} (`python -m bench.runtimes`, "
        f"[benchmarks](docs/benchmarks.md#runtimes))."
    )


def regenerate(text: str) -> str:
    """``text`` with every generated block rewritten from its source."""
    return BLOCK.sub(lambda match: match.group(1) + generate(match["source"]) + "\n" + match.group(4), text)


def main(argv: list[str] | None = None) -> bool:
    """Rewrite the documents' generated blocks (or, with ``--check``, say whether they are up to date); returns
    whether they were."""
    parser = argparse.ArgumentParser(
        prog="python -m report.readme", description=__doc__, formatter_class=cli.HelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only compare; exit 2 when a block drifted")
    args = parser.parse_args(argv)
    stale = [path for path in documents() if regenerate(path.read_text()) != path.read_text()]
    if args.check and stale:
        names = ", ".join(str(path.relative_to(REPO_ROOT)) for path in stale)
        raise UsageError(f"generated blocks drifted in {names}: run `python -m report.readme`")
    for path in [] if args.check else stale:
        atomic_write_text(path, regenerate(path.read_text()))
        print(f"rewrote the generated blocks of {path}")
    return not stale


if __name__ == "__main__":
    cli.entry_point(main)
