"""What `make serve` costs on a fresh clone: the environment it builds (MB, packages) and the seconds from `make serve`
to the first `/classify` answer, for this commit and for an earlier one (``--before``, the commit before the server's
install was made lean), side by side in one run.

Each commit is cloned into a temp folder with no `.venv`; `make serve` runs there with a pip cache of its own (so
neither run reuses the other's downloads; wheels pip finds on this machine's disk it still takes from there: torch's
CUDA build lies on this disk, so the earlier commit's time here understates a real network's). Writes
``docs/bench/install.json``.

    .venv/bin/python -m bench.install --before b2540dd
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from report.bench_file import Column, write_results
from report.provenance import REPO_ROOT
from tests.server import LocalServer
from toolkit import cli

PHOTO = REPO_ROOT / "tests" / "data" / "coco" / "val2017" / "000000119828.jpg"
COLUMNS = [
    Column("commit", "commit"),
    Column("what", "what"),
    Column("seconds", "make serve to first answer, s", ".0f"),
    Column("megabytes", ".venv MB", ",.0f"),
    Column("packages", "packages", "d"),
    Column("torch", "torch installed"),
]


def folder_megabytes(folder: Path) -> float:
    """The size of everything under ``folder`` (``du``'s apparent size), in MB."""
    output = subprocess.run(["du", "-sb", str(folder)], capture_output=True, text=True, check=True).stdout
    return int(output.split()[0]) / 1e6


def first_answer(commit: str, work: Path, timeout: float) -> dict:
    """Clone ``commit``, run `make serve`, ask ``/classify``; the row."""
    clone = work / commit
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", commit], check=True)
    env = {"PORT": "{port}", "PIP_CACHE_DIR": str(work / f"pip-{commit}"), "BENTOML_HOME": str(work / "bentoml")}
    env |= {name: "" for name in ("RESNET_LAB_MODEL", "VIRTUAL_ENV")}
    started = time.perf_counter()
    with LocalServer(["make", "serve"], env, work / f"{commit}.log", cwd=clone, timeout=timeout) as server:
        answer = httpx.post(f"{server.url}/classify", files={"image": PHOTO.read_bytes()}, timeout=120)
        answer.raise_for_status()
        seconds = time.perf_counter() - started
    venv = clone / ".venv"
    listed = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=freeze"], capture_output=True, text=True)
    packages = [line for line in listed.stdout.splitlines() if line and not line.startswith("-e")]
    return {
        "commit": commit,
        "seconds": seconds,
        "megabytes": folder_megabytes(venv),
        "packages": len(packages),
        "torch": "yes" if any(line.lower().startswith("torch==") for line in packages) else "no",
    }


def main(argv: list[str] | None = None) -> list[dict]:
    """Measure both commits and write the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.install", description=__doc__,
                                     formatter_class=cli.HelpFormatter)  # fmt: skip
    parser.add_argument("--before", required=True, help="the earlier commit to compare with")
    parser.add_argument("--after", default="HEAD", help="the commit measured as this one")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds `make serve` may take to answer")
    args = parser.parse_args(argv)
    after = subprocess.run(["git", "rev-parse", "--short", args.after], cwd=REPO_ROOT, capture_output=True,
                           text=True, check=True).stdout.strip()  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench-install-"))
    try:
        rows = []
        for commit, what in ((args.before, "before: everything"), (after, "after: the server alone")):
            rows.append({**first_answer(commit, work, args.timeout), "what": what})
            print(rows[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes = (
        "fresh clones, no .venv, a pip cache of their own; wheels on this machine's disk (torch's CUDA build among "
        f"them) are taken from there; {os.cpu_count()} cores"
    )
    write_results("install", COLUMNS, rows, notes)
    return rows


if __name__ == "__main__":
    cli.entry_point(main)
