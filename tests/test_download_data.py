"""``make data`` (``training.download_data``) against a real HTTP server the test starts, standing in for the public
hosts through the mirror setting: files verified before they are moved into place, nothing left behind by a refused
or interrupted download, and a second run that fetches nothing."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from torchvision.datasets import CIFAR10

from tests.helpers import REPO_ROOT, SHIPPED_COCO
from toolkit import data_folder
from toolkit.errors import UsageError
from training import download_data
from training.cifar10 import load_cifar10
from training.download_data import Source, Sources

LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_archive(images_per_batch: int = 20) -> bytes:
    """A ``cifar-10-python.tar.gz`` in the official layout with a few images per batch."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:

        def add(name: str, content: dict) -> None:
            data = pickle.dumps(content)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for name in [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch"]:
            add(name, {"data": rng.integers(0, 256, (images_per_batch, 3072), dtype=np.uint8),
                       "labels": [index % 10 for index in range(images_per_batch)]})  # fmt: skip
        add("batches.meta", {"label_names": LABEL_NAMES})
    return buffer.getvalue()


def annotation_archive() -> bytes:
    """An ``annotations_trainval2017.zip`` holding the shipped photos' official val2017 annotations."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "annotations/instances_val2017.json", (SHIPPED_COCO / "annotations" / "instances_val2017.json").read_text()
        )
    return buffer.getvalue()


class Mirror:
    """A local HTTP server with the public hosts' paths; counts requests and can cut one file short."""

    def __init__(self, root: Path) -> None:
        self.root, self.requests, self.truncate = root, [], set()
        mirror = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                if self.path in mirror.truncate:  # the connection drops halfway through the body
                    data = (root / self.path.lstrip("/")).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def publish(root: Path, url: str, data: bytes) -> Source:
    """Put ``data`` where ``url``'s path points, under ``root``; its source with the right md5."""
    path = root / url.split("/", 3)[3]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Source(url, hashlib.md5(data).hexdigest())


@pytest.fixture()
def mirror(tmp_path: Path) -> Iterator[tuple[Mirror, Sources]]:
    root = tmp_path / "mirror"
    official = Sources()
    sources = Sources(
        cifar10=publish(root, official.cifar10.url, cifar_archive()),
        coco_annotations=publish(root, official.coco_annotations.url, annotation_archive()),
    )
    for photo in (SHIPPED_COCO / "val2017").iterdir():
        publish(root, official.coco_val_images + photo.name, photo.read_bytes())
    server = Mirror(root)
    yield server, sources
    server.close()


def leftovers(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, hidden staging folders included."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) if folder.exists() else []


def test_the_official_sources_are_the_published_files() -> None:
    official = Sources()
    assert (official.cifar10.url, official.cifar10.md5) == (CIFAR10.url, CIFAR10.tgz_md5)  # torchvision's record
    assert official.coco_annotations.md5 == "f4bbac642086de4f52a3fdda2de5fa2c"  # annotations_trainval2017.zip
    assert download_data.mirrored(official.cifar10.url, "http://10.0.0.1:8000/") == (
        "http://10.0.0.1:8000/~kriz/cifar-10-python.tar.gz"
    )


def test_a_data_folder_is_written_verified_and_a_second_run_fetches_nothing(mirror, tmp_path) -> None:
    server, sources = mirror
    output = tmp_path / "data"
    download_data.download_data(output, coco_val_images=5, sources=sources, mirror=server.url)
    train = load_cifar10(data_folder.locate("cifar10", output), train=True)
    assert len(train) == 100 and data_folder.locate("cifar10", output).name == "cifar-10-batches-py"
    coco = COCO(str(output / "coco" / "annotations" / "instances_val2017.json"))
    assert len(coco.getImgIds()) == 5 and len(coco.getCatIds()) == 80
    assert [path.name for path in data_folder.coco_val_files(root=output)] == sorted(
        image["file_name"] for image in coco.loadImgs(coco.getImgIds())
    )
    assert len(data_folder.cifar_images(20, output)) == 20
    assert "RESNET_LAB_DATA" in (output / "MANIFEST.md").read_text()
    assert not [name for name in leftovers(output) if name.startswith(".")]
    fetched = len(server.requests)
    assert len(set(server.requests)) == 2 + 5  # two archives and five photos
    download_data.download_data(output, coco_val_images=5, sources=sources, mirror=server.url)
    assert len(server.requests) == fetched  # everything was there and complete: nothing downloaded


def test_a_checksum_mismatch_is_refused_and_leaves_nothing(mirror, tmp_path) -> None:
    server, sources = mirror
    wrong = Sources(cifar10=Source(sources.cifar10.url, "0" * 32), coco_annotations=sources.coco_annotations)
    output = tmp_path / "data"
    with pytest.raises(UsageError, match="is not the published file .*nothing was written"):
        download_data.download_data(output, coco_val_images=2, sources=wrong, mirror=server.url)
    assert server.requests and not output.exists()


def test_an_interrupted_download_leaves_no_partial_file(mirror, tmp_path) -> None:
    server, sources = mirror
    server.truncate.add("/annotations/annotations_trainval2017.zip")
    output = tmp_path / "data"
    with pytest.raises(UsageError, match="annotations_trainval2017.zip is not the published file .*cut short"):
        download_data.download_data(output, coco_val_images=2, sources=sources, mirror=server.url)
    # CIFAR-10 came first and is complete; of COCO nothing at all, no staging folder, no half file
    cifar = ["batches.meta", "test_batch", *(f"data_batch_{index}" for index in range(1, 6))]
    expected = ["cifar10", "cifar10/cifar-10-batches-py", *(f"cifar10/cifar-10-batches-py/{name}" for name in cifar)]
    assert leftovers(output) == sorted(expected)


def test_without_a_network_the_command_fails_at_once_with_one_line(tmp_path) -> None:
    output = tmp_path / "data"
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "training.download_data", "--output-dir", str(output), "--mirror", closed],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and not output.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot download http://127.0.0.1:9/~kriz/"), result.stderr
    assert json.dumps("needs a network")[1:-1] in lines[0]
