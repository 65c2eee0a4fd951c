"""The service never answers 500 to a client's mistake, keeps its own pixel limit, and survives losing its worker."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
from PIL import Image

from inference import imaging
from tests.fuzz_requests import request as fuzz_request
from tests.fuzz_requests import small_png
from tests.helpers import tiny_png_declaring

WHAT_TO_SEND = 'multipart/form-data with the file in field "image"'


@pytest.fixture(scope="module")
def server(serve, cifar_export) -> Iterator[httpx.Client]:
    with serve(cifar_export["output"]) as client:
        yield client


def assert_json_error(response: httpx.Response, status: int = 400) -> str:
    """A ``{"error": "<sentence>"}`` body with ``status``; returns the sentence."""
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str), body
    return body["error"]


def test_malformed_multipart_bodies_are_a_json_400_saying_what_to_send(server: httpx.Client) -> None:
    png = small_png(random.Random(0))
    cases = {
        "no boundary": dict(content=b"--x\r\nabc\r\n--x--\r\n", headers={"content-type": "multipart/form-data"}),
        "not multipart": dict(content=b"just some bytes", headers={"content-type": "multipart/form-data; boundary=x"}),
        "an extra field": dict(files={"image": ("a.png", png)}, data={"colour": "blue"}),
        "another field name": dict(files={"file": ("a.png", png)}),
    }
    for name, request in cases.items():
        error = assert_json_error(server.post("/classify", **request))
        assert WHAT_TO_SEND in error, (name, error)
    assert server.post("/classify", files={"image": ("a.png", png)}).status_code == 200


def test_validation_errors_are_sentences_not_pydantic_internals(server: httpx.Client) -> None:
    png = small_png(random.Random(1))
    response = server.post("/classify", files={"image": ("a.png", png)}, data={"top_k": "five"})
    error = assert_json_error(response)
    assert 'field "top_k" must be an integer' in error and "pydantic" not in response.text
    error = assert_json_error(server.post("/classify", files={"image": ("a.png", png)}, data={"top_k": "0"}))
    assert error == "top_k must be an integer between 1 and 10, got 0"


def test_fuzzed_requests_never_get_a_server_error(server: httpx.Client) -> None:
    rng = random.Random(20261127)
    statuses: dict[int, int] = {}
    started = time.monotonic()
    for _ in range(300):
        headers, body = fuzz_request(rng)
        response = server.post("/classify", content=body, headers={k: v for k, v in headers.items() if v})
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (headers, body[:300], response.text)
        if response.status_code >= 400:
            assert_json_error(response, response.status_code)
        assert time.monotonic() - started < 240, "fuzzing took too long"
    print(f"fuzz statuses: {dict(sorted(statuses.items()))}")
    assert len(statuses) > 1  # both answers and refusals were exercised
    assert server.get("/readyz").status_code == 200
    assert server.post("/classify", files={"image": ("a.png", small_png(rng))}).status_code == 200


def test_pixel_limits_are_ours_whatever_pils_own() -> None:
    declared = tiny_png_declaring(9600, 9600)  # 92 Mpx: over PIL's default limit of 89.5 Mpx
    with pytest.raises(imaging.ImageRejected, match="over the limit of 50,000,000") as refused:
        imaging.load_rgb(declared, max_pixels=50_000_000)
    assert refused.value.status == 413
    previous = Image.MAX_IMAGE_PIXELS
    try:
        imaging.set_pixel_limit(100_000_000)
        with pytest.raises(imaging.ImageRejected, match="cannot decode") as broken:  # let through, then found truncated
            imaging.load_rgb(declared)
        assert broken.value.status == 400
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def test_an_image_of_60_megapixels_against_limits_of_50_and_70(serve, cifar_export, tmp_path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (7746, 7746), (90, 140, 200)).save(buffer, "PNG")  # 60.0 Mpx, a few hundred kB
    upload = {"image": ("big.png", buffer.getvalue())}
    with serve(cifar_export["output"], RESNET_LAB_MAX_IMAGE_PIXELS="50000000") as client:
        assert "over the limit of 50,000,000" in assert_json_error(client.post("/classify", files=upload), 413)
    with serve(cifar_export["output"], RESNET_LAB_MAX_IMAGE_PIXELS="70000000") as client:
        assert client.post("/classify", files=upload).status_code == 200


def _worker(client: httpx.Client) -> psutil.Process:
    """The BentoML worker process that serves requests and holds the model."""
    for pid in client.server.pids():  # type: ignore[attr-defined]
        process = psutil.Process(pid)
        if "_bentoml_impl.worker.service" in " ".join(process.cmdline()):
            return process
    raise AssertionError("no BentoML worker process found")


def test_the_server_answers_again_after_its_worker_is_killed_under_load(serve, cifar_export, small_photos) -> None:
    uploads = [path.read_bytes() for path in small_photos]
    with serve(cifar_export["output"]) as client:
        killed = _worker(client)
        stop = threading.Event()

        spans: list[tuple[float, float]] = []  # (sent, finished) of every load request

        def load() -> None:  # requests in flight while the worker dies; their failures are expected
            with httpx.Client(base_url=str(client.base_url), timeout=15) as own:
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        own.post("/classify", files={"image": ("a.jpg", random.choice(uploads))})
                    except httpx.HTTPError:
                        pass
                    spans.append((sent, time.monotonic()))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        os.kill(killed.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        answered = None
        while time.monotonic() - killed_at < 30 and answered is None:
            try:
                with httpx.Client(base_url=str(client.base_url), timeout=15) as fresh:  # a new connection
                    response = fresh.post("/classify", files={"image": ("a.jpg", uploads[0])})
                if response.status_code == 200:
                    answered = time.monotonic() - killed_at
            except httpx.HTTPError:
                time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert answered is not None and answered < 30, f"no answer within 30 s of killing the worker ({answered})"
        assert any(sent < killed_at < finished for sent, finished in spans), "no request was in flight at the kill"
        print(f"answered again {answered:.1f} s after the worker was killed")
        assert _worker(client).pid != killed.pid
        assert json.loads(client.get("/info").text)["model"] == "cifar_resnet20"
