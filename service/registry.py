"""The served models: the files the settings name (pinned: served for the server's life) and a model repository's
(``inference.repository``), loaded, replaced and unloaded while requests are answered.

A load opens each new or changed file in one loading thread, verifies it with a probe run and measures the memory
it took; only when every version it asked for is ready does the served set change, in one assignment. Requests
already given a model keep it: a replaced or unloaded version answers what it holds and is closed after its last
request. A load that fails, or that would pass ``RESNET_LAB_MAX_LOADED_MODELS`` or ``RESNET_LAB_MAX_LOADED_MB``,
leaves the served set as it was.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import anyio

from inference.contract import CLASSIFICATION, DETECTION
from inference.model import LoadedModel
from inference.repository import FileState, ModelRepository, NoSuchModel, RepositoryError, VersionPolicy
from service.classifier import Classifier
from service.detector import Detector
from service.errors import RequestRejected
from service.settings import Settings
from toolkit.errors import UsageError

logger = logging.getLogger("bentoml.resnet_lab")
READY, UNAVAILABLE = "READY", "UNAVAILABLE"  # Triton's model states in the repository index
KIND_WORDS = {CLASSIFICATION: "classifier", DETECTION: "detector"}
Runner = Classifier | Detector


def resident_bytes() -> int:
    """This process's resident memory now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Served:
    """One served model version: what runs it and what it costs."""

    runner: Runner
    kind: str
    pinned: bool
    state: FileState | None
    resident_bytes: int
    file_bytes: int
    in_flight: int = field(default=0)
    v2: Any = field(default=None)  # its v2 model, made on first use (``service.v2_models``)

    def describe(self) -> dict[str, Any]:
        """Its line in /info's ``models``."""
        runs = self.runner.model.describe()
        return {
            "name": self.runner.name,
            "version": self.runner.version,
            "kind": KIND_WORDS[self.kind],
            "pinned": self.pinned,
            "path": str(self.runner.model.path),
            "runtime": runs["runtime"],
            "precision": runs["precision"],
            "device": runs["device"],
            "file_bytes": self.file_bytes,
            "resident_bytes": self.resident_bytes,
        }


def open_model(path: Path, settings: Settings, task: str | None = None, aside: bool = False) -> tuple[LoadedModel, int]:
    """Load and verify a file; the memory it took (``ModelNotFound``, ``RuntimeUnavailable``). ``aside``: while
    serving, the low-priority helper does the costly part (``LoadedModel.load_aside``)."""
    before = resident_bytes()
    if aside:
        model = LoadedModel.load_aside(path, settings, task)
    else:
        model = LoadedModel.load(path, settings, task)
        model.verify()
    return model, max(resident_bytes() - before, 0)


class Registry:
    """The served models by name and version, the repository they come from, the caps on them."""

    def __init__(self, settings: Settings, repository: ModelRepository | None, policy: VersionPolicy) -> None:
        self.settings, self.repository, self.policy = settings, repository, policy
        self.served: dict[str, dict[str, Served]] = {}  # replaced whole on each change, never edited in place
        self.failures: dict[str, str] = {}  # name -> why it is not served (a failed load, an unload)
        self._lock = asyncio.Lock()
        self._load_slot = anyio.CapacityLimiter(1)  # one loading thread: loads never take the decode threads
        self._retiring: set[asyncio.Task] = set()

    # -- serving ------------------------------------------------------------------------------------------------

    def pin(self, path: Path, kind: str, name: str, version: str) -> None:
        """Serve ``path`` for the server's life (the single-model settings); at start, before requests."""
        model, used = open_model(path, self.settings, kind)
        self._add(name, {version: self._served(model, name, version, pinned=True, state=None, used=used)})

    def load_all(self) -> None:
        """At start: every repository model the version policy selects (a file that fails stops the server)."""
        if self.repository is None:
            return
        for name in self.repository.names():
            if name in self.served:
                raise RepositoryError(f"model {name!r} is both in the repository and named by RESNET_LAB_MODEL or "
                                      "RESNET_LAB_DETECTOR; rename its folder")  # fmt: skip
            versions = {}
            for number, path in self.repository.select(name, self.policy).items():
                state = FileState.of(path)
                model, used = open_model(path, self.settings)
                versions[str(number)] = self._served(model, name, str(number), pinned=False, state=state, used=used)
            self._check_caps(versions, replaced={})
            self._add(name, versions)

    def _add(self, name: str, versions: dict[str, Served]) -> None:
        kinds = {entry.kind for entry in versions.values()}
        if len(kinds) > 1:
            raise RepositoryError(f"model {name!r}: its versions mix classifiers and detectors; keep one kind a name")
        self.served = {**self.served, name: versions}
        for version, entry in versions.items():
            runs = entry.runner.model.describe()
            logger.info("resnet-lab serves %s version %s (%s) from %s: %s %s on %s in %s (%s); %.0f MB resident",
                        name, version, KIND_WORDS[entry.kind], entry.runner.model.path, runs["runtime"],
                        runs["version"], runs["device"], runs["precision"], runs["reason"],
                        entry.resident_bytes / 2**20)  # fmt: skip

    def _served(self, model: LoadedModel, name: str, version: str, pinned: bool, state: FileState | None,
                used: int) -> Served:  # fmt: skip
        kind = model.metadata.task
        runner_type = Classifier if kind == CLASSIFICATION else Detector
        runner = runner_type(model, name, version, self.settings)
        return Served(runner, kind, pinned, state, used, model.path.stat().st_size)

    def find(self, name: str, version: str | None = None) -> Served:
        """The served version of ``name`` (the highest when ``version`` is None), else a 404 saying why."""
        versions = self.served.get(name)
        if not versions:
            if self.repository is not None and self.repository.versions(name):
                reason = self.failures.get(name, "not loaded")
                raise RequestRejected(f"model {name!r} is not loaded ({reason}); load it with POST "
                                      f"/v2/repository/models/{name}/load", HTTPStatus.NOT_FOUND)  # fmt: skip
            raise RequestRejected(f"no model {name!r}; served: {sorted(self.served)}", HTTPStatus.NOT_FOUND)
        if version is None:
            return versions[max(versions, key=_version_order)]
        if version not in versions:
            raise RequestRejected(
                f"model {name!r} has no version {version!r} loaded; it has {sorted(versions, key=_version_order)}",
                HTTPStatus.NOT_FOUND,
            )
        return versions[version]

    def default(self, kind: str) -> Served | None:
        """The model a request that names none gets: the pinned one of ``kind``, else the first served by name."""
        entries = [self.find(name) for name in sorted(self.served)]
        of_kind = [entry for entry in entries if entry.kind == kind]
        pinned = [entry for entry in of_kind if entry.pinned]
        return (pinned or of_kind or [None])[0]

    def pick(self, name: str | None, kind: str) -> Served:
        """The model a ``/classify`` or ``/detect`` request asks for (``model``; None: the default), of ``kind``."""
        entry = self.find(name) if name else self.default(kind)
        if entry is None:
            raise RequestRejected(f"no {KIND_WORDS[kind]} is loaded", HTTPStatus.NOT_FOUND)
        if entry.kind != kind:
            other = "/detect" if entry.kind == DETECTION else "/classify"
            raise RequestRejected(f"model {name!r} is a {KIND_WORDS[entry.kind]}; send it to {other}")
        return entry

    @contextmanager
    def using(self, entry: Served) -> Iterator[Served]:
        """Hold ``entry`` for one request (an unloaded version is closed after its last)."""
        entry.in_flight += 1
        try:
            yield entry
        finally:
            entry.in_flight -= 1

    def versions(self) -> Iterator[Served]:
        """Every served version, by name then version."""
        for name in sorted(self.served):
            versions = self.served[name]
            for version in sorted(versions, key=_version_order):
                yield versions[version]

    # -- the repository extension -------------------------------------------------------------------------------

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: each version present or served, with its state and why it is unavailable."""
        rows = []
        names = set(self.served) | set(self.repository.names() if self.repository else [])
        for name in sorted(names):
            served = self.served.get(name, {})
            present = {str(number) for number in (self.repository.versions(name) if self.repository else {})}
            for version in sorted(present | set(served), key=_version_order):
                if version in served:
                    rows.append({"name": name, "version": version, "state": READY, "reason": ""})
                elif not ready_only:
                    reason = self.failures.get(name, "not selected by the version policy" if served else "not loaded")
                    rows.append({"name": name, "version": version, "state": UNAVAILABLE, "reason": reason})
        return rows

    def _repository(self) -> ModelRepository:
        if self.repository is None:
            raise RequestRejected("this server has no model repository: start it with RESNET_LAB_MODEL_REPOSITORY=DIR")
        return self.repository

    def _not_pinned(self, name: str) -> None:
        versions = self.served.get(name, {})
        if any(entry.pinned for entry in versions.values()):
            raise RequestRejected(f"model {name!r} is served from RESNET_LAB_MODEL or RESNET_LAB_DETECTOR for the "
                                  "server's life; it cannot be loaded or unloaded")  # fmt: skip

    async def load(self, name: str, policy: VersionPolicy | None = None) -> list[str]:
        """Load (or reload what changed of) ``name``'s versions that ``policy`` selects; the versions served."""
        repository = self._repository()
        async with self._lock:
            self._not_pinned(name)
            try:
                chosen = repository.select(name, policy or self.policy)
            except NoSuchModel as missing:
                raise RequestRejected(str(missing), HTTPStatus.NOT_FOUND) from None
            current = self.served.get(name, {})
            opened: dict[str, Served] = {}
            try:
                await self._open_changed(name, chosen, current, opened)
                versions = {str(number): opened.get(str(number)) or current[str(number)] for number in chosen}
                self._check_caps(versions, replaced=current)
                self._add(name, versions)
            except (UsageError, OSError, RuntimeError, RequestRejected) as error:
                for entry in opened.values():
                    entry.runner.close()
                self.failures[name] = f"load failed: {error}"
                if isinstance(error, RequestRejected):
                    raise
                raise RequestRejected(f"model {name!r} not loaded: {error}") from None
            self.failures.pop(name, None)
            for version, entry in current.items():
                if versions.get(version) is not entry:
                    self._retire(entry)
            return sorted(versions, key=_version_order)

    async def _open_changed(
        self, name: str, chosen: dict[int, Path], current: dict[str, Served], opened: dict[str, Served]
    ) -> None:
        """Open into ``opened`` each chosen version that is not served or whose file changed, one at a time."""
        for number, path in chosen.items():
            version, state = str(number), FileState.of(path)
            if version in current and current[version].state == state:
                continue  # unchanged: keeps serving as it is
            model, used = await anyio.to_thread.run_sync(open_model, path, self.settings, None, True,
                                                         limiter=self._load_slot)  # fmt: skip
            opened[version] = self._served(model, name, version, pinned=False, state=state, used=used)

    async def unload(self, name: str) -> None:
        """Stop serving every version of ``name`` (its requests in flight are answered first)."""
        async with self._lock:
            self._not_pinned(name)
            present = self.repository is not None and self.repository.versions(name)
            if name not in self.served and not present:
                raise RequestRejected(f"no model {name!r}; served: {sorted(self.served)}", HTTPStatus.NOT_FOUND)
            removed = self.served.get(name, {})
            self.served = {other: versions for other, versions in self.served.items() if other != name}
            self.failures[name] = "unloaded"
            for entry in removed.values():
                self._retire(entry)
            logger.info("resnet-lab unloaded %s (versions %s)", name, sorted(removed, key=_version_order))

    def _check_caps(self, versions: dict[str, Served], replaced: dict[str, Served]) -> None:
        """``RequestRejected`` (409) if serving ``versions`` in place of ``replaced`` passes a cap."""
        others = [entry for entry in self._all() if entry not in replaced.values()]
        count = len(others) + len(versions)
        cap = self.settings.max_loaded_models
        if cap and count > cap:
            raise RequestRejected(f"{count} model versions would be loaded; RESNET_LAB_MAX_LOADED_MODELS is {cap}: "
                                  "unload one first", HTTPStatus.CONFLICT)  # fmt: skip
        megabytes = sum(entry.resident_bytes for entry in [*others, *versions.values()]) / 2**20
        cap = self.settings.max_loaded_mb
        if cap and megabytes > cap:
            raise RequestRejected(f"the loaded models would hold {megabytes:.0f} MB; RESNET_LAB_MAX_LOADED_MB is "
                                  f"{cap}: unload one first", HTTPStatus.CONFLICT)  # fmt: skip

    def _all(self) -> list[Served]:
        return [entry for versions in self.served.values() for entry in versions.values()]

    def _retire(self, entry: Served) -> None:
        """Close ``entry`` once its last request is answered (in the background)."""

        async def retire() -> None:
            while entry.in_flight:
                await asyncio.sleep(0.05)
            entry.runner.close()

        task = asyncio.get_running_loop().create_task(retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


def _version_order(version: str) -> tuple[int, int | str]:
    """Numbers in numeric order, before hash versions."""
    return (0, int(version)) if version.isdigit() else (1, version)
