"""The service's parts on their own: settings from the environment, the batching adapter, the ONNX contract."""

from __future__ import annotations

import asyncio
import inspect
import re

import pytest
from helpers import REPO_ROOT

from service import batching
from service.contract import CLASSIFICATION, DETECTION, ContractError, Key, ModelMetadata
from service.settings import Settings, markdown_table


def test_settings_read_every_variable_once_and_reject_bad_values() -> None:
    settings = Settings.from_env({"RESNET_LAB_MAX_BATCH_SIZE": "8", "RESNET_LAB_ORT_SPIN": "0", "OTHER": "x"})
    assert settings.max_batch_size == 8 and settings.ort_spin is False
    assert settings.max_latency_ms == Settings().max_latency_ms  # unset: the default
    with pytest.raises(SystemExit, match="RESNET_LAB_MAX_LATENCY_MS='soon' must be an integer"):
        Settings.from_env({"RESNET_LAB_MAX_LATENCY_MS": "soon"})
    with pytest.raises(SystemExit, match="must be 0 or 1"):
        Settings.from_env({"RESNET_LAB_ORT_SPIN": "maybe"})


def test_readme_settings_table_is_the_generated_one() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert markdown_table() in readme, "README's settings table drifted: paste `python -m service.settings`"
    documented = set(re.findall(r"RESNET_LAB_[A-Z_]+", markdown_table()))
    used = set(re.findall(r"RESNET_LAB_[A-Z_]+", (REPO_ROOT / "service" / "settings.py").read_text()))
    assert documented == used


def test_bentoml_batching_queue_is_where_the_adapter_expects_it() -> None:
    # The adapter imports BentoML's private CorkDispatcher; an upgrade that moves or changes it must fail here.
    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    parameters = inspect.signature(CorkDispatcher).parameters
    assert {"max_latency_in_ms", "max_batch_size", "fallback", "get_batch_size"} <= set(parameters)

    async def run() -> list[int]:
        calls: list[int] = []

        async def double(items: list[int]) -> list[int]:
            calls.append(len(items))
            return [2 * item for item in items]

        enqueue = batching.batching_queue(double, max_batch_size=8, max_latency_ms=5_000, overloaded=lambda: None)
        results = await asyncio.gather(*(enqueue(item) for item in range(6)))
        assert sum(calls) == 6
        return list(results)

    assert asyncio.run(run()) == [0, 2, 4, 6, 8, 10]


def test_contract_round_trips_and_refuses_foreign_files() -> None:
    classifier = ModelMetadata(CLASSIFICATION, "resnet18", "abc", labels=["a", "b"], resize_size=256, crop_size=224)
    assert ModelMetadata.from_props(classifier.to_props()) == classifier
    detector = ModelMetadata(DETECTION, "r50c4", categories=[{"id": 3, "name": "cat"}], extra={Key.RECIPE: "{}"})
    assert ModelMetadata.from_props(detector.to_props()) == detector
    legacy = {key: value for key, value in classifier.to_props().items() if key != Key.TASK}
    assert ModelMetadata.from_props(legacy).task == CLASSIFICATION  # files exported before `task` existed
    with pytest.raises(ContractError, match="lacks metadata"):
        ModelMetadata.from_props({"producer": "someone else"})
    with pytest.raises(ContractError, match="task='segmentation'"):
        ModelMetadata.from_props({Key.TASK: "segmentation"})
