"""``/classify`` and ``/detect`` take several images per request (repeated form parts, or base64 in a JSON body):
the answers come in input order, each what that image alone gets; the service never fetches a URL it is given."""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import PROTOCOL_MAX_IMAGES


def _form(files: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (f"{index}.jpg", data, "application/octet-stream")) for index, data in enumerate(files)]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_several_images_answer_in_order_each_as_alone(vision_server, small_photos) -> None:
    photos = [path.read_bytes() for path in small_photos[:5]]
    alone = [vision_server.post("/classify", files={"image": ("a.jpg", p)}, data={"top_k": "3"}).json() for p in photos]
    assert all(set(answer) == {"model", "model_version", "predictions"} for answer in alone)  # one image
    sent = [photos[0], photos[1], b"not an image", photos[2], photos[3], photos[4]]
    response = vision_server.post("/classify", files=_form(sent), data={"top_k": "3"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"model", "model_version", "results"} and body["model"] == alone[0]["model"]
    results = body["results"]
    assert len(results) == 6 and set(results[2]) == {"error"} and "not an image" in results[2]["error"]
    assert [results[i] for i in (0, 1, 3, 4, 5)] == alone  # the same numbers as one at a time
    # one image that fails keeps today's answer: its 4xx
    refused = vision_server.post("/classify", files=_form([b"not an image"]))
    assert refused.status_code == 400 and set(refused.json()) == {"error"}


def test_a_json_body_with_base64_images_answers_as_the_form(vision_server, small_photos) -> None:
    photos = [path.read_bytes() for path in small_photos[5:8]]
    form = vision_server.post("/classify", files=_form(photos), data={"top_k": "2"}).json()
    body = vision_server.post("/classify", json={"images": [_b64(p) for p in photos], "top_k": 2})
    assert body.status_code == 200 and body.json() == form
    one = vision_server.post("/classify", json={"images": [_b64(photos[0])]}).json()
    assert one == vision_server.post("/classify", files={"image": ("a.jpg", photos[0])}).json()
    assert len(one["predictions"]) == 5  # the default top_k


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"images": ["aGk="], "top_k": True}, 'field "top_k" must be an integer'),
        ({"images": ["aGk="], "top_k": "3"}, 'field "top_k" must be an integer'),
        ({"images": ["aGk="], "top_k": 0}, "top_k must be an integer between 1 and 10, got 0"),
        ({"images": ["%%%not base64"]}, "is not base64"),
        ({"images": "aGk="}, 'field "images"'),
        ({"images": []}, 'field "images"'),
        ({"top_k": 3}, 'missing field "images"'),
        ({"images": ["aGk="], "colour": "blue"}, 'unexpected field "colour"'),
        (["aGk="], "the body"),
    ],
)
def test_json_mistakes_are_a_400_that_says_what_to_send(vision_server, body: object, words: str) -> None:
    response = vision_server.post("/classify", json=body)
    assert response.status_code == 400 and words in response.json()["error"], response.text
    if "between" not in words:  # a value out of its range says what it must be; other mistakes, what to send
        assert "application/json" in response.json()["error"]


def test_more_images_than_the_limit_is_a_400_as_the_schema_says(vision_server, small_photos) -> None:
    photo = small_photos[0].read_bytes()
    for count in (PROTOCOL_MAX_IMAGES + 1, PROTOCOL_MAX_IMAGES + 5):
        for route in ("/classify", "/detect"):
            response = vision_server.post(route, files=_form([photo] * count))
            assert response.status_code == 400 and f"the limit is {PROTOCOL_MAX_IMAGES}" in response.json()["error"]
        response = vision_server.post("/classify", json={"images": [_b64(photo)] * count})
        assert response.status_code == 400, response.text
    full = vision_server.post("/classify", files=_form([photo] * PROTOCOL_MAX_IMAGES))
    assert full.status_code == 200 and len(full.json()["results"]) == PROTOCOL_MAX_IMAGES


def test_other_media_types_are_a_415(vision_server) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "image/jpeg"):
        response = vision_server.post("/classify", content=b"x=1", headers={"content-type": content_type})
        assert response.status_code == 415 and "multipart/form-data" in response.json()["error"], content_type


def test_detect_answers_several_images_in_order(vision_server, shapes_root) -> None:
    pictures = [path.read_bytes() for path in sorted((shapes_root / "val2017").glob("*.png"))[:3]]
    alone = [vision_server.post("/detect", files={"image": ("a.png", p)}).json() for p in pictures]
    together = vision_server.post("/detect", json={"images": [_b64(p) for p in [*pictures, b"junk"]]})
    assert together.status_code == 200
    results = together.json()["results"]
    assert results[:3] == alone and set(results[3]) == {"error"}
    limited = vision_server.post("/detect", files=_form(pictures), data={"score_threshold": "0", "max_detections": "1"})
    assert all(len(entry["detections"]) == 1 for entry in limited.json()["results"])


@pytest.fixture()
def listener() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that records every request it gets: (its URL, the paths asked for)."""
    asked: list[str] = []

    class Record(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            asked.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Record)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cat.jpg", asked
    server.shutdown()
    thread.join()


def test_a_url_instead_of_image_bytes_is_refused_and_never_fetched(vision_server, listener) -> None:
    url, asked = listener
    v2 = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [url]}]}
    responses = [
        vision_server.post("/classify", files={"image": (None, url)}),  # a form text field where the file goes
        vision_server.post("/detect", files={"image": (None, url)}),
        vision_server.post("/classify", json={"images": [url]}),
        vision_server.post("/detect", json={"images": [url]}),
        vision_server.post("/v2/models/cifar_resnet20/infer", json=v2),
    ]
    for response in responses:
        assert response.status_code == 400 and "never fetches URLs" in response.json()["error"], response.text
    assert httpx.get(url).status_code == 200 and asked == ["/cat.jpg"]  # the listener works; only this test asked
