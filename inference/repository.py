"""A model repository in Triton's layout: ``ROOT/NAME/VERSION/model.onnx``, the folder name the model's name, each
numeric subfolder one version; a version policy says which versions are served.

    models/
      resnet18/1/model.onnx
      resnet18/2/model.onnx
      detector/1/model.onnx

Only the layout is read here: which kind of model a file holds comes from its metadata (``inference.contract``).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.contract import ONNX_FILE_NAME
from toolkit.atomic import atomic_write
from toolkit.errors import UsageError

LATEST, ALL, SPECIFIC = "latest", "all", "specific"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # a folder name that is also a safe URL path segment


class RepositoryError(UsageError):
    """A repository or a version policy that cannot be used as given: the message says what to change."""


class NoSuchModel(RepositoryError):
    """The repository holds no model of that name (or none of its versions the policy selects)."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model are served: the latest ``count``, all, or the listed ``versions`` (Triton's
    ``version_policy``)."""

    kind: str = LATEST
    count: int = 1
    versions: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """``latest``, ``latest:N``, ``all`` or ``specific:1,3`` (``RepositoryError`` otherwise)."""
        kind, _, argument = text.strip().partition(":")
        try:
            if kind == LATEST:
                return cls(LATEST, count=int(argument or 1)).checked()
            if kind == ALL and not argument:
                return cls(ALL)
            if kind == SPECIFIC:
                return cls(SPECIFIC, versions=tuple(int(part) for part in argument.split(","))).checked()
        except ValueError:
            pass
        raise RepositoryError(f"version policy {text!r}: use latest, latest:N, all or specific:V1,V2")

    @classmethod
    def from_triton(cls, config: dict[str, Any]) -> VersionPolicy:
        """A model configuration's ``version_policy`` (``{"latest": {"num_versions": 2}}``, ``{"all": {}}``,
        ``{"specific": {"versions": [1, 3]}}``)."""
        if not isinstance(config, dict) or len(config) != 1:
            raise RepositoryError('version_policy must be one of {"latest": {"num_versions": N}}, {"all": {}}, '
                                  '{"specific": {"versions": [V, ...]}}')  # fmt: skip
        ((kind, value),) = config.items()
        value = value if isinstance(value, dict) else {}
        try:
            if kind == LATEST:
                return cls(LATEST, count=int(value.get("num_versions", 1))).checked()
            if kind == ALL:
                return cls(ALL)
            if kind == SPECIFIC:
                return cls(SPECIFIC, versions=tuple(int(v) for v in value.get("versions", []))).checked()
        except (TypeError, ValueError):
            pass
        raise RepositoryError(f"version_policy {config!r}: latest with num_versions >= 1, all, or specific versions")

    def checked(self) -> VersionPolicy:
        """Itself, if it can select anything."""
        if self.kind == LATEST and self.count < 1:
            raise RepositoryError("version policy latest:N needs N >= 1")
        if self.kind == SPECIFIC and (not self.versions or min(self.versions) < 0):
            raise RepositoryError("version policy specific:V1,V2 needs at least one version, none negative")
        return self

    def select(self, versions: list[int]) -> list[int]:
        """The versions served out of those present, in ascending order."""
        present = sorted(versions)
        if self.kind == LATEST:
            return present[-self.count :]
        if self.kind == SPECIFIC:
            return [version for version in present if version in self.versions]
        return present

    def __str__(self) -> str:
        if self.kind == LATEST:
            return f"{LATEST}:{self.count}"
        if self.kind == SPECIFIC:
            return f"{SPECIFIC}:{','.join(map(str, self.versions))}"
        return ALL


@dataclass(frozen=True)
class FileState:
    """What tells a changed file from the one loaded: size, modification time and inode."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileState:
        """The file's state now (``OSError`` if it is gone)."""
        stat = path.stat()
        return cls(stat.st_size, stat.st_mtime_ns, stat.st_ino)


@dataclass(frozen=True)
class ModelRepository:
    """The folder of models; each call reads it afresh (files may change while a server runs)."""

    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike) -> ModelRepository:
        """The repository at ``root`` (``RepositoryError`` if it is not a folder)."""
        path = Path(root).expanduser()
        if not path.is_dir():
            raise RepositoryError(
                f"model repository {path}: no such folder; make one as NAME/VERSION/{ONNX_FILE_NAME} "
                "(e.g. models/resnet50/1/model.onnx)"
            )
        return cls(path)

    def place(self, name: str, version: int, source: str | os.PathLike) -> Path:
        """Copy ``source`` in as ``name``/``version`` atomically (a server loading it sees the old file or the new)."""
        if not NAME.fullmatch(name) or version < 0:
            raise RepositoryError(f"model {name!r} version {version}: use a folder name of letters, digits, _ . - "
                                  "and a version of 0 or more")  # fmt: skip
        with open(source, "rb") as model:
            return atomic_write(
                self.root / name / str(version) / ONNX_FILE_NAME, lambda out: shutil.copyfileobj(model, out)
            )

    def names(self) -> list[str]:
        """The models in it: folders with at least one version, sorted."""
        return sorted(entry.name for entry in self._folders(self.root) if self.versions(entry.name))

    def versions(self, name: str) -> dict[int, Path]:
        """A model's versions present: version -> its model file."""
        folder = self.root / name
        if not NAME.fullmatch(name) or not folder.is_dir():
            return {}
        found = {}
        for entry in self._folders(folder):
            if entry.name.isdigit() and (entry / ONNX_FILE_NAME).is_file():
                found[int(entry.name)] = entry / ONNX_FILE_NAME
        return found

    def select(self, name: str, policy: VersionPolicy) -> dict[int, Path]:
        """The versions ``policy`` serves of ``name`` (``NoSuchModel`` if none)."""
        present = self.versions(name)
        if not present:
            raise NoSuchModel(f"no model {name!r} in the repository {self.root} (expected {name}/1/{ONNX_FILE_NAME})")
        chosen = policy.select(list(present))
        if not chosen:
            raise NoSuchModel(f"model {name!r}: version policy {policy} selects none of {sorted(present)}")
        return {version: present[version] for version in chosen}

    @staticmethod
    def _folders(path: Path) -> list[Path]:
        try:
            return [entry for entry in path.iterdir() if entry.is_dir() and not entry.name.startswith(".")]
        except OSError:
            return []
