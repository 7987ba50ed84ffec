"""`edgekit classify`: a classifier artifact on real photos, its top-5 against PyTorch's."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from transformers import MobileViTImageProcessorPil
from transformers.image_utils import load_image as hf_load_image
from typer.testing import CliRunner

from edgekit import exporters, models
from edgekit.artifact import MANIFEST_NAME
from edgekit.classify import _logits, classify, softmax
from edgekit.cli import app
from tests.test_preprocess import CHELSEA, GRACE_HOPPER

runner = CliRunner()

# fp32 ONNX vs PyTorch on the same input: probabilities measured 1e-7 apart on these photos.
SCORE_TOLERANCE = 1e-5
# The CLI prints 4 decimals: half a unit of the last one, plus the runtime difference.
PRINTED_SCORE_TOLERANCE = 0.5e-4 + SCORE_TOLERANCE
TOP_K = 5
# tiny-mobilevit's published-style preprocessing, built with transformers, not with edgekit.
TINY_PROCESSOR_SETTINGS = {"size": {"shortest_edge": 72}, "crop_size": 64, "resample": 2}
TABLE_ROW = re.compile(r"│\s*(\d+)\s*│\s*(\S+)\s*│\s*([\d.]+)\s*│(?:\s*(\S+)\s*│\s*([\d.]+)\s*│)?")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    from edgekit.export import export_artifact

    folder, _ = export_artifact(
        models.load("tiny-mobilevit"), "onnx", tmp_path_factory.mktemp("classify-artifacts")
    )
    return folder


@pytest.fixture(scope="module")
def pytorch_top5() -> dict[Path, list[tuple[str, float]]]:
    """PyTorch's top-5 per photo, preprocessed by transformers: independent of edgekit's code."""
    loaded = models.load("tiny-mobilevit")
    processor = MobileViTImageProcessorPil.from_dict(TINY_PROCESSOR_SETTINGS)
    top = {}
    for photo in (CHELSEA, GRACE_HOPPER):
        pixels = processor(hf_load_image(str(photo)), return_tensors="np")["pixel_values"]
        probabilities = softmax(loaded.run_torch({"pixel_values": pixels})["logits"])[0]
        order = np.argsort(-probabilities)[:TOP_K]
        top[photo] = [(loaded.labels[i], float(probabilities[i])) for i in order]
    return top


def _edited_copy(artifact: Path, tmp_path: Path, **changes) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(artifact, folder)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        target = manifest
        for parent in parents:
            target = target[parent]
        target[key] = value
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return folder


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_top5_and_scores_match_pytorch_on_real_photos(artifact, pytorch_top5):
    report = classify(artifact, [CHELSEA, GRACE_HOPPER])
    assert report.reference_unavailable is None
    for image in report.images:
        expected = pytorch_top5[image.path]
        assert [p.label for p in image.predictions] == [label for label, _ in expected]
        assert [p.label for p in image.reference] == [label for label, _ in expected]
        for prediction, (_, score) in zip(image.predictions, expected, strict=True):
            assert abs(prediction.score - score) <= SCORE_TOLERANCE
        assert image.labels_agree and image.max_score_difference <= SCORE_TOLERANCE
    assert (report.images[0].width, report.images[0].height) == (451, 300)


def test_cli_prints_the_pytorch_scores(artifact, pytorch_top5):
    result = runner.invoke(app, ["classify", str(artifact), str(CHELSEA)])
    assert result.exit_code == 0, result.output
    rows = [m.groups() for m in TABLE_ROW.finditer(result.output)]
    assert [int(r[0]) for r in rows] == list(range(1, TOP_K + 1))
    for (_, label, score, torch_label, torch_score), (label_ref, score_ref) in zip(
        rows, pytorch_top5[CHELSEA], strict=True
    ):
        assert label == torch_label == label_ref
        assert abs(float(score) - score_ref) <= PRINTED_SCORE_TOLERANCE
        assert abs(float(torch_score) - score_ref) <= PRINTED_SCORE_TOLERANCE
    assert "top-5 labels identical to PyTorch" in result.output


def test_bad_images_get_one_line_each_and_the_rest_are_classified(artifact, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("holiday pictures")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(GRACE_HOPPER.read_bytes()[:5000])
    result = runner.invoke(
        app, ["classify", str(artifact), str(notes), str(CHELSEA), str(truncated), "--no-compare"]
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    errors = _error_lines(result.output)
    assert len(errors) == 2, result.output
    assert "notes.txt' is not an image Pillow can decode" in errors[0]
    assert "cut.jpg' cannot be read: image file is truncated" in errors[1]
    assert str(CHELSEA) in result.output
    assert len(TABLE_ROW.findall(result.output)) == TOP_K
    assert "PyTorch score" not in result.output  # --no-compare


def test_non_classifier_artifact_is_refused(artifact, tmp_path):
    unet_like = _edited_copy(
        artifact, tmp_path, model_kind="sd-unet", labels=None, preprocessing=None
    )
    result = runner.invoke(app, ["classify", str(unet_like), str(CHELSEA)])
    assert result.exit_code == 2
    errors = _error_lines(result.output)
    assert len(errors) == 1, result.output
    assert "is a sd-unet artifact, not an image classifier" in errors[0]
    assert "Traceback" not in result.output


def test_format_without_host_runtime_is_refused(artifact, tmp_path):
    if exporters.get("coreml").host_runtime_unavailable_reason() is None:
        pytest.skip("Core ML runs on this host")
    coreml = _edited_copy(artifact, tmp_path, format="coreml")
    result = runner.invoke(app, ["classify", str(coreml), str(CHELSEA)])
    assert result.exit_code == 2
    errors = _error_lines(result.output)
    assert len(errors) == 1 and "Cannot classify with the coreml artifact here" in errors[0]


def test_changed_source_leaves_the_artifact_answer_without_comparison(artifact, tmp_path):
    changed = _edited_copy(artifact, tmp_path, source__sha256="0" * 64)
    result = runner.invoke(app, ["classify", str(changed), str(CHELSEA)])
    assert result.exit_code == 0, result.output
    assert "PyTorch comparison unavailable" in result.output
    assert "changed since the export" in result.output
    assert len(TABLE_ROW.findall(result.output)) == TOP_K
    assert "PyTorch score" not in result.output


def test_top_must_be_positive(artifact):
    result = runner.invoke(app, ["classify", str(artifact), str(CHELSEA), "--top", "0"])
    assert result.exit_code == 2
    assert _error_lines(result.output) == ["error: --top 0 is not allowed. Hint: use 1 or more."]


def test_batched_artifact_runs_photos_in_filled_groups():
    """Batch 2, three photos: two calls, the second filled with a repeat, its extra row dropped."""
    calls = []

    def runner_of_batch_two(inputs):
        batch = inputs["pixel_values"]
        assert batch.shape[0] == 2
        calls.append(batch[:, 0, 0, 0].tolist())
        return {"logits": batch[:, :, 0, 0]}

    tensors = [np.full((1, 3, 4, 4), float(i), dtype=np.float32) for i in range(3)]
    logits = _logits(runner_of_batch_two, tensors, 2, "pixel_values", "logits")
    assert calls == [[0.0, 1.0], [2.0, 2.0]]
    assert logits[:, 0].tolist() == [0.0, 1.0, 2.0]
