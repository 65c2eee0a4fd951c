"""The container image, built and run: `make image` timed, then the image as Kubernetes runs it, checked
(``tests/container.py``: the numeric non-root user the manifests name, ``BENTOML_PORT``, ``/classify``, the probes,
exit 0 on SIGTERM within the grace period). Writes ``docs/bench/image.json``.

    .venv/bin/python -m bench.image --cold       # every image of the engine removed first: a build from nothing
"""

from __future__ import annotations

import argparse

from report.bench_file import Column, write_results
from tests.container import build, engine, observe, run
from toolkit import cli
from toolkit.errors import UsageError

COLUMNS = [Column("check", "check"), Column("result", "result"), Column("expected", "expected")]


def main(argv: list[str] | None = None) -> list[dict]:
    """Build, run, check, write the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.image", description=__doc__,
                                     formatter_class=cli.HelpFormatter)  # fmt: skip
    parser.add_argument("--image", default="resnet-lab:cpu", help="the tag `make image` builds")
    parser.add_argument("--cold", action="store_true", help="remove every image of the engine first")
    args = parser.parse_args(argv)
    tool = engine()
    if tool is None:
        raise UsageError("no container engine: start docker, or install podman (apt-get install podman runc)")
    if args.cold:
        run([tool, "rmi", "--all", "--force"])
    seconds = build(args.image)
    seen = observe(tool, args.image)
    state = "from nothing" if args.cold else "cached layers"
    rows = [
        {"check": f"make image ({tool}, {state})", "result": f"{seconds:.0f} s", "expected": "-"},
        {"check": "image size", "result": f"{seen.size_mb:,.0f} MB", "expected": "-"},
        {"check": "the image's USER", "result": seen.configured_user, "expected": f"{seen.expected_user} (manifests)"},
        {"check": "process user id", "result": seen.process_uid, "expected": seen.expected_user.split(":")[0]},
        {"check": "ready on BENTOML_PORT", "result": f"{seen.ready_seconds:.0f} s", "expected": "200"},
        {"check": "/classify", "result": f"{seen.classify_status}: {seen.top_label}", "expected": "200"},
        {"check": "/livez, /readyz, /healthz", "result": str(seen.probes), "expected": "[200, 200, 200]"},
        {
            "check": "SIGTERM: exit code, seconds",
            "result": f"{seen.exit_code}, {seen.stop_seconds:.1f} s",
            "expected": f"0, within {seen.grace_seconds} s",
        },  # fmt: skip
    ]
    for row in rows:
        print(row)
    write_results("image", COLUMNS, rows, f"{tool}; the image `make image` builds on this machine")
    return rows


if __name__ == "__main__":
    cli.entry_point(main)
