"""The OpenAPI document (``/docs.json``) is true: required fields required, every status the server can answer
listed with its JSON schema, constraints stated as schema constraints; schemathesis finds nothing against the
live server."""

from __future__ import annotations

import os
import subprocess

import httpx

from tests.conftest import API_KEYS, PROTOCOL_MAX_IMAGES
from tests.server import BIN, REPO_ROOT

SEED = 20261203
EXAMPLES = 40  # per operation and phase


def test_the_document_states_what_the_server_does(keyed_server: httpx.Client) -> None:
    document = keyed_server.get("/docs.json").json()
    classify = document["paths"]["/classify"]["post"]
    body = classify["requestBody"]
    assert body["required"] is True and set(body["content"]) == {"multipart/form-data", "application/json"}
    form, encoded = body["content"]["multipart/form-data"]["schema"], body["content"]["application/json"]["schema"]
    assert form["required"] == ["image"] and encoded["required"] == ["images"]
    assert form["properties"]["image"]["maxItems"] == encoded["properties"]["images"]["maxItems"] == PROTOCOL_MAX_IMAGES
    top_k = encoded["properties"]["top_k"]
    assert (top_k["type"], top_k["minimum"], top_k["maximum"]) == ("integer", 1, 10)  # the served model's 10 classes
    for status in ("400", "401", "413", "415", "429", "503"):
        assert classify["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }, status
    detect = document["paths"]["/detect"]["post"]
    threshold = detect["requestBody"]["content"]["application/json"]["schema"]["properties"]["score_threshold"]
    assert (threshold["minimum"], threshold["maximum"]) == (0, 1) and {"404", "503"} <= set(detect["responses"])
    infer = document["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert {"400", "401", "404", "413", "503"} <= set(infer["responses"])
    assert [parameter["name"] for parameter in infer["parameters"]] == ["model_name"]
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "a key of RESNET_LAB_API_KEYS",
    }
    assert classify["security"] == [{"apiKey": []}] and "security" not in document["paths"]["/v2/health/live"]["get"]
    assert "422" not in str({path: item for path, item in document["paths"].items() if path.startswith("/v2")})
    operations = [operation for item in document["paths"].values() for operation in item.values()]
    ids = [operation["operationId"] for operation in operations if "operationId" in operation]
    assert len(ids) == len(set(ids)) and {"info_get", "info_post"} <= set(ids)  # OpenAPI: each id once


def test_schemathesis_finds_nothing(keyed_server: httpx.Client, tmp_path) -> None:
    # Every check, a fixed seed, a bounded number of examples; the hooks make schema-valid images real images.
    metadata = keyed_server.get("/v2/models/cifar_resnet20", headers={"Authorization": f"Bearer {API_KEYS[0]}"}).json()
    command = [
        str(BIN / "st"), "--config-file", str(REPO_ROOT / "tests" / "schemathesis.toml"), "run",
        f"{keyed_server.base_url}/docs.json", "--checks", "all", "--seed", str(SEED), "--max-examples", str(EXAMPLES),
        "--header", f"Authorization: Bearer {API_KEYS[0]}", "--no-color",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),  # the hooks module
        "ST_MODEL_NAME": metadata["name"],
        "ST_MODEL_VERSION": metadata["versions"][0],
    }
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "generated" in result.stdout and " found " not in result.stdout  # cases ran, and none failed
