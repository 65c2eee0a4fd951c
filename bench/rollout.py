"""Requests lost when servers stop under load, counted: SIGTERM to one server, a rolling restart of two replicas
behind haproxy, one replica SIGKILLed behind haproxy (the scenarios of ``tests/test_shutdown.py``, from
``tests/rollout.py``).

Every request is one new connection from one of ``--concurrency`` aiohttp clients posting real CIFAR-10 test images
to ``/classify`` of the embedded default model. "refused": no connection was made (nothing was sent); "failed": a
connection was made but no 200 came back (a 5xx from haproxy, a reset). Servers run the image's command line.
With ``--baseline-ref REF`` the SIGTERM and rolling-restart scenarios also run on that commit's ``service/`` (the
server before graceful shutdown, say), side by side in the same run. Each scenario runs once: the counts are exact,
the seconds depend on the machine. Writes ``docs/bench/rollout.json``.

    .venv/bin/python -m bench.rollout
    .venv/bin/python -m bench.rollout --baseline-ref 25a0040
"""

from __future__ import annotations

import argparse
import subprocess
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from report.bench_file import Column, write_results
from service.settings import Settings
from tests.load_balancer import haproxy_binary
from tests.rollout import rolling_restart, sigkill_one, sigterm_under_load
from tests.server import REPO_ROOT, drain_timeout_s
from toolkit import cli, data_folder

COLUMNS = [
    Column("server", "server"),
    Column("scenario", "scenario"),
    Column("concurrency", "clients", "d"),
    Column("sent", "sent", ","),
    Column("answered", "answered", ","),
    Column("refused", "refused (no connection)", ","),
    Column("failed", "failed", ","),
    Column("shutdown_s", "SIGTERM to exit s", ".1f"),
    Column("bound_s", "bound s", ".0f"),
]


def checkout(ref: str, folder: Path) -> Path:
    """``service/`` and ``bentofile.yaml`` of commit ``ref``, extracted into ``folder``."""
    archive = subprocess.run(["git", "archive", ref, "service", "bentofile.yaml"], cwd=REPO_ROOT, check=True,
                             capture_output=True).stdout  # fmt: skip
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def scenarios(server: str, source: Path, args: argparse.Namespace, bodies: list[bytes], work: Path) -> list[dict]:
    """The SIGTERM and rolling-restart rows of one server (``source``: its checkout)."""
    env = {"BENTOML_HOME": str(work / "bentoml"), "RESNET_LAB_MODEL": "", "PYTHONPATH": str(source),
           Settings.env_name("lame_duck_seconds"): str(args.lame_duck)}  # fmt: skip
    folder = work / f"run-{len(list(work.glob('run-*')))}"
    (folder / "rolling").mkdir(parents=True)
    drained = sigterm_under_load(env, bodies, folder, args.sigterm_concurrency, warmup=200, source=source)
    rolled = rolling_restart(env, bodies, folder / "rolling", args.concurrency, args.haproxy, args.limit, source)
    print(server, "SIGTERM", drained, "\n", server, "rolling restart", rolled)
    return [
        {"server": server, "scenario": "SIGTERM, clients keep sending", "concurrency": args.sigterm_concurrency,
         "shutdown_s": drained["exit_s"], **_counts(drained)},
        {"server": server, "scenario": "rolling restart of 2 replicas behind haproxy", "concurrency": args.concurrency,
         "shutdown_s": max(restart["exit_s"] for restart in rolled["restarts"]), **_counts(rolled)},
    ]  # fmt: skip


def _counts(result: dict) -> dict:
    return {key: result[key] for key in ("sent", "answered", "refused", "failed", "bound_s")}


def _unbounded(row: dict) -> dict:
    """A baseline row: its server makes no promise on the time to exit."""
    return {**row, "bound_s": None}


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the scenarios on this checkout (and on ``--baseline-ref``) and write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    parser.add_argument("--concurrency", type=int, default=8, help="clients behind haproxy")
    parser.add_argument("--sigterm-concurrency", type=int, default=16, help="clients of the single server")
    parser.add_argument("--lame-duck", type=int, default=2, help="RESNET_LAB_LAME_DUCK_SECONDS of the servers")
    parser.add_argument("--limit", type=int, default=20_000, help="most requests in a rolling restart")
    parser.add_argument("--baseline-ref", default="", help="also run this commit's service (default: none)")
    args = parser.parse_args(argv)
    args.haproxy = haproxy_binary()
    bodies = [data for data, _ in data_folder.cifar_images(50)]
    work = Path(tempfile.mkdtemp(prefix="rollout-"))
    rows = scenarios("this commit", REPO_ROOT, args, bodies, work)
    if args.baseline_ref:
        baseline = checkout(args.baseline_ref, work / "baseline-source")
        rows += [_unbounded(row) for row in scenarios(f"`{args.baseline_ref}`", baseline, args, bodies, work)]
    env = {"BENTOML_HOME": str(work / "bentoml"), "RESNET_LAB_MODEL": ""}
    killed = sigkill_one(env, bodies, work, args.concurrency, args.haproxy)
    print("SIGKILL", killed)
    rows.append(
        {
            "server": "this commit",
            "scenario": "one of 2 replicas SIGKILLed behind haproxy",
            "concurrency": args.concurrency,
            "shutdown_s": None,
            **_counts({**killed, "bound_s": None}),
        }
    )
    notes = (
        f"each request a new connection posting a real CIFAR-10 test image to /classify (default model); lame duck "
        f"{args.lame_duck} s, drain timeout {drain_timeout_s()} s (the image's); haproxy checks /readyz every 0.2 s "
        f"and retries refused connections; the SIGKILL loses the requests in flight and those its dying listening "
        f"socket still took"
    )
    write_results("rollout", COLUMNS, rows, notes)
    return rows


if __name__ == "__main__":
    cli.entry_point(main)
