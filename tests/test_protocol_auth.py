"""API keys (``RESNET_LAB_API_KEYS``): every inference and metadata route needs one, the probes stay open, a key file
is read again when it changes, keys never reach the log, and serving beyond loopback without keys is warned of."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.auth import ApiKeys, parse_keys
from tests.conftest import API_KEYS
from tests.server import BIN, REPO_ROOT, free_port

PROTECTED = [
    ("GET", "/info"),
    ("POST", "/info"),
    ("POST", "/classify"),
    ("POST", "/detect"),
    ("GET", "/v2"),
    ("GET", "/v2/models/cifar_resnet20"),
    ("GET", "/v2/models/cifar_resnet20/ready"),
    ("POST", "/v2/models/cifar_resnet20/infer"),
    ("GET", "/schema.json"),
    ("GET", "/no/such/route"),  # refused before routing: no key, no information
]
OPEN = ["/livez", "/readyz", "/healthz", "/v2/health/live", "/v2/health/ready", "/metrics", "/docs.json", "/demo"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_every_route_but_the_probes_needs_a_key(keyed_server: httpx.Client, small_photos) -> None:
    for method, path in PROTECTED:
        for headers in ({}, bearer("wrong-key"), {"Authorization": f"Basic {API_KEYS[0]}"}, bearer(API_KEYS[0][:-1])):
            response = keyed_server.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert set(response.json()) == {"error"} and "Authorization: Bearer KEY" in response.json()["error"]
            assert response.headers["www-authenticate"] == "Bearer"
    for path in OPEN:
        assert keyed_server.get(path).status_code == 200, path
    photo = {"image": ("a.jpg", small_photos[0].read_bytes())}
    for key in API_KEYS:
        assert keyed_server.get("/info", headers=bearer(key)).json()["api_keys"] is True
        assert (
            keyed_server.post("/classify", files=photo, headers={"authorization": f"bearer {key}"}).status_code == 200
        )


def test_tritonclient_sends_its_key_as_a_header(keyed_server: httpx.Client, small_photos) -> None:
    client = triton.InferenceServerClient(url=str(keyed_server.base_url).removeprefix("http://").rstrip("/"))
    assert client.is_server_live() and client.is_server_ready()  # probes: no key needed
    with pytest.raises(InferenceServerException, match="missing API key") as refused:
        client.get_model_metadata("cifar_resnet20")
    assert refused.value.status() == "401"
    headers = bearer(API_KEYS[1])
    assert client.get_model_metadata("cifar_resnet20", headers=headers)["name"] == "cifar_resnet20"
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([small_photos[0].read_bytes()], dtype=object))
    assert client.infer("cifar_resnet20", [tensor], headers=headers).as_numpy("logits").shape == (1, 10)


def test_the_key_file_is_read_again_when_it_changes(keyed_server: httpx.Client) -> None:
    key_file = keyed_server.key_file  # type: ignore[attr-defined]
    original = key_file.read_text()
    try:
        key_file.write_text("rotated-key-zyxwvut\n")
        deadline = time.monotonic() + 10  # a coarse file-system clock can hide a change made within the same tick
        while keyed_server.get("/info", headers=bearer("rotated-key-zyxwvut")).status_code != 200:
            assert time.monotonic() < deadline, "the rotated key was never accepted"
            key_file.write_text(f"rotated-key-zyxwvut\n# {time.monotonic()}\n")
            time.sleep(0.2)
        assert keyed_server.get("/info", headers=bearer(API_KEYS[0])).status_code == 401
        key_file.unlink()  # an unreadable key file refuses everyone, never falls back to no keys
        assert keyed_server.get("/info", headers=bearer("rotated-key-zyxwvut")).status_code == 401
        assert keyed_server.get("/livez").status_code == 200
    finally:
        key_file.write_text(original)
    assert keyed_server.get("/info", headers=bearer(API_KEYS[0])).status_code == 200


def test_keys_never_reach_the_log(keyed_server: httpx.Client) -> None:
    keyed_server.get("/info", headers=bearer("a-wrong-key-to-look-for"))
    log = keyed_server.log_path.read_text()  # type: ignore[attr-defined]
    assert all(key not in log for key in (*API_KEYS, "a-wrong-key-to-look-for", "rotated-key-zyxwvut"))


def test_key_settings_parse_and_compare(tmp_path) -> None:
    assert parse_keys("a, b\n# comment\n\nc # trailing\n,,") == ["a", "b", "c"]
    keys = ApiKeys("alpha,beta")
    assert keys.enabled and keys.accepts("beta") and not keys.accepts("gamma") and not keys.accepts("")
    assert not ApiKeys("").enabled
    empty = tmp_path / "empty"
    empty.write_text("# no keys yet\n")
    assert ApiKeys(f"@{empty}").enabled and not ApiKeys(f"@{empty}").accepts("")  # configured: refuses all
    with pytest.raises(FileNotFoundError, match="cannot read the key file"):
        ApiKeys(f"@{tmp_path / 'missing'}")


def _serve_until_import_fails(host: str, **env: str) -> subprocess.CompletedProcess:
    """``bentoml serve --host HOST`` with no model file: it imports the service (the warning, if any) and stops."""
    command = [str(BIN / "bentoml"), "serve", "--host", host, "--port", str(free_port())]
    variables = {**os.environ, "RESNET_LAB_MODEL": "/nonexistent/model.onnx", "BENTOML_DO_NOT_TRACK": "True", **env}
    return subprocess.run(command, cwd=REPO_ROOT, env=variables, capture_output=True, text=True, timeout=120)


def test_serving_beyond_loopback_without_keys_prints_one_warning() -> None:
    exposed = _serve_until_import_fails("0.0.0.0")
    output = exposed.stdout + exposed.stderr  # BentoML's CLI logs to stdout
    assert exposed.returncode != 0 and "/nonexistent/model.onnx: no such file" in exposed.stderr
    warnings = [line for line in output.splitlines() if "without API keys" in line]
    assert len(warnings) == 1 and "RESNET_LAB_API_KEYS" in warnings[0], output
    for host, env in (("127.0.0.1", {}), ("0.0.0.0", {"RESNET_LAB_API_KEYS": "some-key"})):
        quiet = _serve_until_import_fails(host, **env)
        assert "no such file" in quiet.stderr and "without API keys" not in quiet.stdout + quiet.stderr, (host, env)
