"""The costly part of loading a model while serving, done aside: one helper process at the lowest CPU priority
(``SCHED_IDLE``) reads the file, chooses its runtime, compiles it for OpenVINO into a cache folder and runs a probe
image through it; the serving process then imports the compiled model (``LoadedModel.load_aside``) for about a
tenth of the CPU time. The cores stay with the requests being answered.

A thread could not do this: Linux priorities are per thread and inherited, so the runtime threads a niced loader
started would stay niced for the model's life, and an unprivileged process cannot raise them back. The helper
starts on the first load and lives as long as its parent (it ends when its stdin closes).

    python -m inference.runtimes.compile_aside      # the helper: JSON requests on stdin, one answer line each
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import fields
from pathlib import Path
from typing import Any

from inference.settings import InferenceSettings

LOWEST_PRIORITY = 19
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # where ``inference`` is importable from


class CompileAside:
    """The serving process's side: ``prepare(...)``, answered by the helper process (started on first use,
    restarted if it died). Calls are serialised."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def prepare(
        self, path: Path, task: str | None, settings: InferenceSettings, use_gpu: bool, cache_dir: Path
    ) -> dict[str, Any]:
        """Load and verify ``path`` in the helper, OpenVINO's compiled model left in ``cache_dir``: the file's
        ``props`` and the ``runtime``, ``precision`` and ``reason`` it chose (``RuntimeError`` saying why not)."""
        shared = {field.name: getattr(settings, field.name) for field in fields(InferenceSettings)}
        return self._ask({"path": str(path), "task": task, "settings": shared, "use_gpu": use_gpu,
                          "cache_dir": str(cache_dir)})  # fmt: skip

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            process = self._running()
            try:
                process.stdin.write(json.dumps(request) + "\n")
                process.stdin.flush()
                line = process.stdout.readline()
            except OSError:
                line = ""
            if not line:
                self._process = None
                raise RuntimeError(f"the compile helper ended (exit code {process.poll()})")
            answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def _running(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            search_path = [str(PACKAGE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            self._process = subprocess.Popen(
                [sys.executable, "-m", "inference.runtimes.compile_aside"],
                env={**os.environ, "PYTHONPATH": os.pathsep.join(search_path)},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
        return self._process


_HELPER = CompileAside()


def helper() -> CompileAside:
    """This process's helper."""
    return _HELPER


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    """One request, in the helper."""
    from inference.model import LoadedModel

    path, task = Path(request["path"]), request["task"]
    settings = InferenceSettings(**request["settings"])
    model = LoadedModel.load(path, settings, task, request["use_gpu"], cache_dir=request["cache_dir"])
    model.verify()
    # the props as the load read them: reading them again opened a second ONNX Runtime session on the file
    return {"props": model.metadata.to_props(), "runtime": model.session.runtime, "precision": model.precision,
            "reason": model.reason}  # fmt: skip


def main() -> None:
    """The helper: at nice 19 (before any runtime thread exists, so all of them inherit it), until stdin closes."""
    os.nice(LOWEST_PRIORITY)
    if hasattr(os, "SCHED_IDLE"):  # Linux: run only when a core has nothing else to run
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    for line in sys.stdin:
        try:
            answer = _answer(json.loads(line))
        except Exception as error:  # a file the runtimes cannot load: the parent says why
            answer = {"error": str(error)[:500]}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
