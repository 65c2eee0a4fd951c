"""What an offline job reads: the files named by ``--input`` and their bytes, local or on any pyarrow filesystem.

``--input`` is a folder (every file below it, hidden ones skipped), a glob (``photos/**/*.jpg``), a text file of
paths (``.txt``: one per line, relative ones from the list's folder, ``#`` comments), or the same on a pyarrow
filesystem URI (``s3://bucket/prefix``, ``gs://...``, ``file:///...``). The listing happens once, on the driver;
the bytes are read where the image is decoded, so a file that cannot be read becomes that row's error, never the
job's.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import os
from pathlib import Path

from pyarrow import fs

GLOB_CHARACTERS = "*?["
BUCKET_SCHEMES = ("s3", "gs", "gcs")  # URIs whose path inside the filesystem is bucket/key
LIST_SUFFIX = ".txt"  # an --input file with this suffix lists paths; any other file is one input


class InputNotFound(ValueError):
    """``--input`` names nothing readable, or nothing at all; the message says what was looked for."""


class FileRefused(ValueError):
    """One input file that cannot be read (missing, unreadable, over the byte limit): that row's error."""


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` (a pyarrow filesystem URI), False for a local path."""
    return "://" in path


@functools.lru_cache(maxsize=16)
def _filesystem(scheme_and_host: str) -> fs.FileSystem:
    """One filesystem per scheme and bucket/host in each process (making an S3 client is not free)."""
    return fs.FileSystem.from_uri(scheme_and_host)[0]


def split_uri(uri: str) -> tuple[fs.FileSystem, str]:
    """(filesystem, path inside it) of a URI."""
    scheme, _, rest = uri.partition("://")
    if scheme == "file":
        return fs.LocalFileSystem(), rest
    if scheme in BUCKET_SCHEMES:  # the path inside is bucket/key: no client made per file
        return _filesystem(f"{scheme}://{rest.split('/', 1)[0]}"), rest
    return fs.FileSystem.from_uri(uri)


def list_inputs(spec: str) -> list[str]:
    """Every input file ``spec`` names, sorted: absolute local paths (links not followed: a row names the path
    listed), or URIs."""
    if is_uri(spec):
        paths = _list_uri(spec)
    elif any(character in spec for character in GLOB_CHARACTERS):
        paths = sorted(os.path.abspath(path) for path in glob.glob(spec, recursive=True) if Path(path).is_file())
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            paths = sorted(os.path.abspath(found) for found in _walk(path))
        elif path.is_file():
            paths = _read_list(path) if path.suffix == LIST_SUFFIX else [os.path.abspath(path)]
        else:
            raise InputNotFound(f"--input {spec}: no such file or folder")
    if not paths:
        raise InputNotFound(f"--input {spec} names no files")
    return paths


def _walk(folder: Path) -> list[Path]:
    """Files below ``folder``, hidden files and folders left out."""
    found = []
    for root, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [Path(root) / name for name in files if not name.startswith(".")]
    return found


def _hidden(relative: str) -> bool:
    """Whether a listed path (below the listed folder) is or lies in a hidden file or folder."""
    return any(part.startswith(".") for part in relative.split("/"))


def _read_list(list_file: Path) -> list[str]:
    """The paths of a list file, relative ones resolved from its folder; missing files are kept (error rows)."""
    return [
        entry if is_uri(entry) else os.path.abspath(list_file.parent / Path(entry).expanduser())
        for entry in _entries(list_file.read_text())
    ]


def _entries(text: str) -> list[str]:
    """A list file's lines, blank ones and ``#`` comments left out."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _in_list(entry: str, list_uri: str) -> str:
    """An entry of a URI list file as a URI: kept if it is one, an absolute path on the list's filesystem, or a path
    relative to the list's folder."""
    if is_uri(entry):
        return entry
    if not entry.startswith("/"):
        return f"{list_uri.rsplit('/', 1)[0]}/{entry}"
    scheme, _, rest = list_uri.partition("://")
    if scheme == "file":
        return f"file://{entry}"
    if scheme in BUCKET_SCHEMES:
        return f"{scheme}://{entry.lstrip('/')}"  # /bucket/key
    return f"{scheme}://{rest.split('/', 1)[0]}{entry}"


def _list_uri(spec: str) -> list[str]:
    """Files under a URI prefix, matching a URI glob (where ``*`` may cross ``/``), or listed in a URI .txt file."""
    cut = min((spec.find(character) for character in GLOB_CHARACTERS if character in spec), default=-1)
    base = spec if cut < 0 else spec[: spec.rfind("/", 0, cut) + 1]
    try:
        filesystem, root = split_uri(base)
        kind = filesystem.get_file_info(root).type
        if kind == fs.FileType.File and cut < 0:
            if not spec.endswith(LIST_SUFFIX):
                return [spec]
            with filesystem.open_input_stream(root) as stream:
                return [_in_list(entry, spec) for entry in _entries(stream.read().decode())]
        is_folder = kind == fs.FileType.Directory
        listing = filesystem.get_file_info(fs.FileSelector(root, recursive=True)) if is_folder else []
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise InputNotFound(f"--input {spec}: cannot list it ({error})") from None
    if not is_folder:
        raise InputNotFound(f"--input {spec}: {base} is neither a file nor a folder")
    scheme, _, rest = spec.partition("://")
    host = "" if scheme == "file" or scheme in BUCKET_SCHEMES else rest.split("/", 1)[0]  # hdfs://host:port/path
    files = [
        f"{scheme}://{host}{entry.path}"
        for entry in listing
        if entry.type == fs.FileType.File and not _hidden(entry.path[len(root) :])
    ]
    return sorted(path for path in files if cut < 0 or fnmatch.fnmatchcase(path, spec))


def read_bytes(path: str, max_bytes: int) -> bytes:
    """The file's bytes; ``FileRefused`` when it is missing, unreadable, or larger than ``max_bytes``."""
    try:
        if is_uri(path):
            filesystem, inner = split_uri(path)
            size = filesystem.get_file_info(inner).size
            if size is None:
                raise FileRefused("no such file")
            if size > max_bytes:
                raise FileRefused(f"file too large: {size:,} bytes, the limit is {max_bytes:,}")
            with filesystem.open_input_stream(inner) as stream:
                return stream.read()
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > max_bytes:
                raise FileRefused(f"file too large: {size:,} bytes, the limit is {max_bytes:,}")
            return stream.read()
    except OSError as error:
        raise FileRefused(f"cannot read the file: {error.strerror or error}") from None
