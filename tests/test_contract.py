"""The contract vectors in tests/contract/ are edgekit's behaviour, written down for the apps.

Two ways they could go wrong, each with its test: edgekit changes and the committed vectors do
not (regenerating them must give the committed bytes), or the vectors say something edgekit
does not do (each kind is read back here and recomputed with edgekit directly). The Kotlin core
(tests/test_android_core.py) and the Swift core read the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
from PIL import Image

from edgekit.artifact import SCHEMA_PATH as MANIFEST_SCHEMA_PATH
from edgekit.artifact import Manifest
from edgekit.bench.timing import reliability, summarize
from edgekit.classify import softmax, top_predictions
from edgekit.models import clip_tokenizer
from edgekit.models.base import Interpolation, Preprocessing
from edgekit.preprocess import preprocess_rgb
from edgekit.scheduling import DDIMSampler, SchedulerSpec
from tests.contract.generate import (
    CONTRACT_DIR,
    GENERATED_FOLDERS,
    MANIFEST_FILE,
    MAX_CONTRACT_BYTES,
    generate,
)

# What an app reads from a manifest; the rest (export durations, tool versions, verification
# numbers, file hashes) changes with every export and is not part of the contract.
MANIFEST_CONTRACT_KEYS = (
    "schema_version",
    "name",
    "status",
    "model_kind",
    "random_weights",
    "format",
    "precision",
    "preprocessing",
    "labels",
    "pipeline",
)
COMPONENT_CONTRACT_KEYS = ("name", "model_kind", "model_file", "inputs", "outputs")


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _read_f32(path: Path, shape: list[int]) -> np.ndarray:
    return np.fromfile(path, dtype="<f4").reshape(shape)


def _contract_view(manifest: dict) -> dict:
    view = {key: manifest[key] for key in MANIFEST_CONTRACT_KEYS}
    view["components"] = [
        {key: component[key] for key in COMPONENT_CONTRACT_KEYS}
        for component in manifest["components"]
    ]
    return view


def _files_under(folder: Path) -> dict[str, Path]:
    return {
        str(path.relative_to(folder)): path
        for name in GENERATED_FOLDERS
        for path in sorted((folder / name).rglob("*"))
        if path.is_file()
    }


def test_regenerated_vectors_equal_the_committed_ones(tmp_path, mobilevit_artifacts):
    generate(tmp_path, classifier_artifact=mobilevit_artifacts["onnx"])
    fresh, committed = _files_under(tmp_path), _files_under(CONTRACT_DIR)
    assert sorted(fresh) == sorted(committed), "run `python -m tests.contract.generate`"
    differing = [name for name in fresh if fresh[name].read_bytes() != committed[name].read_bytes()]
    assert not differing, f"stale vectors {differing}: run `python -m tests.contract.generate`"
    fresh_manifest = _read_json(tmp_path / MANIFEST_FILE)
    assert _contract_view(fresh_manifest) == _contract_view(
        _read_json(CONTRACT_DIR / MANIFEST_FILE)
    )


def test_committed_manifest_is_a_valid_classifier_manifest():
    data = _read_json(CONTRACT_DIR / MANIFEST_FILE)
    jsonschema.Draft202012Validator(_read_json(MANIFEST_SCHEMA_PATH)).validate(data)
    manifest = Manifest.model_validate(data)
    assert manifest.status == "verified"
    assert manifest.model_kind == "mobilevit-classifier"
    assert len(manifest.labels) == manifest.component().outputs[0].shape[-1]
    assert [*manifest.preprocessing.output_size] == manifest.component().inputs[0].shape[2:]


def test_vectors_stay_small():
    total = sum(path.stat().st_size for path in CONTRACT_DIR.rglob("*") if path.is_file())
    assert total < MAX_CONTRACT_BYTES


def test_preprocess_vectors_are_what_edgekit_makes_of_the_photos():
    cases = _read_json(CONTRACT_DIR / "preprocess" / "cases.json")["cases"]
    shapes, interpolations = set(), set()
    for case in cases:
        pixels = np.fromfile(CONTRACT_DIR / "preprocess" / case["rgb"], dtype=np.uint8)
        image = Image.fromarray(pixels.reshape(case["height"], case["width"], 3), mode="RGB")
        preprocessing = Preprocessing.model_validate(case["preprocessing"])
        expected = _read_f32(CONTRACT_DIR / "preprocess" / case["input"], case["shape"])
        assert np.array_equal(preprocess_rgb(image, preprocessing), expected), case["name"]
        shapes.add("landscape" if image.width > image.height else "portrait-or-square")
        crop = preprocessing.output_size
        if image.height < crop[0] or image.width < crop[1]:
            shapes.add("smaller-than-crop")
        interpolations.add(preprocessing.interpolation)
    # The apps must reproduce every filter a manifest may name, on photos of every kind.
    assert interpolations == set(Interpolation)
    assert shapes == {"landscape", "portrait-or-square", "smaller-than-crop"}


def test_the_manifest_preprocessing_has_its_own_case():
    block = _read_json(CONTRACT_DIR / MANIFEST_FILE)["preprocessing"]
    cases = _read_json(CONTRACT_DIR / "preprocess" / "cases.json")["cases"]
    assert block in [case["preprocessing"] for case in cases]


def test_classify_vectors_are_edgekit_top_k():
    data = _read_json(CONTRACT_DIR / "classify" / "cases.json")
    assert data["labels"] == _read_json(CONTRACT_DIR / MANIFEST_FILE)["labels"]
    for case in data["cases"]:
        probabilities = softmax(np.asarray([case["logits"]], dtype=np.float32))[0]
        predictions = top_predictions(probabilities, data["labels"], case["k"])
        assert [(p.index, p.label, p.score) for p in predictions] == [
            (e["index"], e["label"], e["probability"]) for e in case["expected"]
        ], case["name"]
        assert probabilities.tolist() == case["probabilities"]
    tie = next(case for case in data["cases"] if case["name"] == "ties-top5")
    assert [e["index"] for e in tie["expected"]] == [1, 4, 7, 0, 2]  # equal scores: by index


def test_tokenizer_vectors_are_transformers_ids_over_the_shipped_files():
    folder = CONTRACT_DIR / "tokenizer"
    data = _read_json(folder / "cases.json")
    tokenizer = clip_tokenizer.load_tokenizer(folder)  # only vocab.json and merges.txt there
    prompts = [case["prompt"] for case in data["cases"]]
    ids = clip_tokenizer.encode(tokenizer, prompts)
    assert ids.tolist() == [case["ids"] for case in data["cases"]]
    lengths = [len(case["ids"]) for case in data["cases"]]
    assert set(lengths) == {clip_tokenizer.MAX_LENGTH}
    # The over-long prompt is truncated: it ends in eos with no padding before it.
    longest = data["cases"][-1]["ids"]
    eos = tokenizer.convert_tokens_to_ids(clip_tokenizer.EOS)
    assert longest[-1] == eos and eos not in longest[:-1]


def test_scheduler_vectors_are_edgekit_ddim():
    folder = CONTRACT_DIR / "scheduler"
    data = _read_json(folder / "cases.json")
    specs = {name: SchedulerSpec.model_validate(spec) for name, spec in data["specs"].items()}
    for case in data["timesteps"]:
        assert DDIMSampler(specs[case["spec"]]).set_timesteps(case["steps"]) == case["timesteps"]
    for case in data["steps"]:
        sampler = DDIMSampler(specs[case["spec"]])
        sampler.set_timesteps(case["steps"])
        sample = _read_f32(folder / case["sample"], case["shape"])
        model_output = _read_f32(folder / case["model_output"], case["shape"])
        prev = sampler.step(model_output, case["timestep"], sample).prev_sample
        assert np.array_equal(prev, _read_f32(folder / case["prev_sample"], case["shape"]))
    last_steps = [case for case in data["steps"] if case["name"].endswith("-last")]
    assert len(last_steps) == len(specs)  # each spec's final step, with its negative t_prev
    for case in data["guidance"]:
        uncond = _read_f32(folder / case["uncond"], case["shape"])
        cond = _read_f32(folder / case["cond"], case["shape"])
        guided = uncond + np.float32(case["scale"]) * (cond - uncond)
        assert np.array_equal(guided, _read_f32(folder / case["guided"], case["shape"]))


def test_bench_vectors_are_edgekit_statistics():
    cases = _read_json(CONTRACT_DIR / "bench" / "samples.json")["cases"]
    for case in cases:
        stats = summarize(case["samples_ms"])
        assert stats.model_dump(mode="json") == case["expected"], case["name"]
        verdict = reliability(stats, [], case["samples_ms"])
        assert verdict.model_dump(mode="json") == case["reliability"], case["name"]
    verdicts = {case["reliability"]["reliable"] for case in cases}
    assert verdicts == {True, False}
