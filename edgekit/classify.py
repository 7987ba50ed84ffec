"""Classify photos with an exported classifier artifact on its host runtime, next to PyTorch.

Each photo goes through `edgekit.preprocess` with the manifest's preprocessing block, then
through the artifact; with the PyTorch source at hand the same input tensors also go through
the module the artifact was exported from, so the two top-k lists differ only by what the
export changed. Scores are softmax probabilities of the logits.

An artifact exported with batch size N takes exactly N images per call: photos run N at a time
and the last group is filled up by repeating its last photo (those rows are dropped), so each
photo's scores do not depend on which others came with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit import exporters
from edgekit.artifact import Manifest, read_manifest
from edgekit.errors import EdgekitError, SourceError
from edgekit.preprocess import ImageError, load_image, preprocess_rgb

# Model kinds whose artifacts map one image to one logits row over `manifest.labels`.
CLASSIFIER_KINDS = ("mobilevit-classifier",)
DEFAULT_TOP_K = 5

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class ClassifyError(EdgekitError):
    exit_code = 2


@dataclass
class Prediction:
    index: int
    label: str
    score: float  # softmax probability


@dataclass
class ClassifiedImage:
    path: Path
    width: int = 0
    height: int = 0
    predictions: list[Prediction] = field(default_factory=list)
    # The PyTorch module's top-k on the same input tensor; None without a comparison.
    reference: list[Prediction] | None = None
    # Largest |artifact - PyTorch| probability over all classes; None without a comparison.
    max_score_difference: float | None = None
    error: ImageError | None = None

    @property
    def labels_agree(self) -> bool | None:
        """Artifact and PyTorch top-k: same labels in the same order (None: no comparison)."""
        if self.reference is None:
            return None
        return [p.index for p in self.predictions] == [p.index for p in self.reference]


@dataclass
class ClassifyReport:
    artifact: str
    format: str
    runtime: str
    status: str  # the manifest's: 'verified' or 'failed'
    random_weights: bool
    batch_size: int
    top_k: int
    images: list[ClassifiedImage]
    # Why there is no PyTorch comparison when one was asked for; None when there is one or
    # none was asked for.
    reference_unavailable: str | None = None

    @property
    def failed_images(self) -> list[ClassifiedImage]:
        return [image for image in self.images if image.error is not None]


def classify(
    artifact_dir: Path,
    images: list[Path],
    *,
    top_k: int = DEFAULT_TOP_K,
    threads: int | None = None,
    compare_with_pytorch: bool = True,
) -> ClassifyReport:
    """Top-k labels for each photo; a photo that cannot be read gets its error, the rest go on."""
    if top_k < 1:
        raise ClassifyError(f"--top {top_k} is not allowed.", hint="use 1 or more.")
    if not images:
        raise ClassifyError("No images given.", hint="pass one or more photo files.")
    manifest = read_manifest(artifact_dir)
    _check_classifier(manifest)
    component = manifest.component()
    image_spec, logits_spec = component.inputs[0], component.outputs[0]
    batch_size = image_spec.shape[0]
    top_k = min(top_k, len(manifest.labels))

    results: list[ClassifiedImage] = []
    tensors: list[np.ndarray] = []
    for path in images:
        try:
            photo = load_image(path)
            tensor = preprocess_rgb(photo, manifest.preprocessing)
        except ImageError as exc:
            results.append(ClassifiedImage(path=path, error=exc))
            continue
        if list(tensor.shape[1:]) != image_spec.shape[1:]:
            raise ClassifyError(
                f"{manifest.name}: its preprocessing gives {list(tensor.shape[1:])} but the model "
                f"takes {image_spec.shape[1:]}.",
                hint="re-export the artifact with this version of edgekit.",
            )
        results.append(ClassifiedImage(path=path, width=photo.width, height=photo.height))
        tensors.append(tensor.astype(image_spec.dtype, copy=False))
    good = [r for r in results if r.error is None]

    runtime = _artifact_runtime(artifact_dir, manifest, threads)
    runtime_name = f"{runtime.name} {runtime.version}"
    reference, unavailable = (None, None)
    if compare_with_pytorch and good:
        reference, unavailable = _pytorch_reference(manifest, batch_size)

    def run(runner: Runner) -> np.ndarray:
        return _logits(runner, tensors, batch_size, image_spec.name, logits_spec.name)

    if good:
        probabilities = softmax(run(runtime))
        reference_probabilities = softmax(run(reference)) if reference else None
        for row, result in enumerate(good):
            result.predictions = top_predictions(probabilities[row], manifest.labels, top_k)
            if reference_probabilities is not None:
                result.reference = top_predictions(
                    reference_probabilities[row], manifest.labels, top_k
                )
                result.max_score_difference = float(
                    np.abs(probabilities[row] - reference_probabilities[row]).max()
                )

    return ClassifyReport(
        artifact=manifest.name,
        format=manifest.format,
        runtime=runtime_name,
        status=manifest.status,
        random_weights=manifest.random_weights,
        batch_size=batch_size,
        top_k=top_k,
        images=results,
        reference_unavailable=unavailable,
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise probabilities, in float64 so small scores keep their digits."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_predictions(probabilities: np.ndarray, labels: list[str], k: int) -> list[Prediction]:
    """The k most probable classes, best first; equal scores keep label order."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [Prediction(int(i), labels[int(i)], float(probabilities[i])) for i in order]


def _logits(
    runner: Runner, tensors: list[np.ndarray], batch_size: int, input_name: str, output_name: str
) -> np.ndarray:
    rows = []
    for start in range(0, len(tensors), batch_size):
        group = tensors[start : start + batch_size]
        filled = group + [group[-1]] * (batch_size - len(group))
        logits = runner({input_name: np.concatenate(filled)})[output_name]
        rows.append(logits[: len(group)])
    return np.concatenate(rows)


def _check_classifier(manifest: Manifest) -> None:
    if (
        manifest.model_kind not in CLASSIFIER_KINDS
        or not manifest.labels
        or manifest.preprocessing is None
    ):
        raise ClassifyError(
            f"{manifest.name} is a {manifest.model_kind} artifact, not an image classifier "
            "(classify needs labels and preprocessing in its manifest).",
            hint="pass a classifier artifact, e.g. from `edgekit export tiny-mobilevit`.",
        )
    if len(manifest.components) != 1 or len(manifest.components[0].inputs) != 1:
        raise ClassifyError(
            f"{manifest.name} does not have the one model with one image input of a classifier.",
            hint="re-export the artifact with this version of edgekit.",
        )


def _artifact_runtime(artifact_dir: Path, manifest: Manifest, threads: int | None):
    exporters.require_host_runtime(manifest, action="classify")
    return exporters.open_runtime(artifact_dir, manifest, manifest.component(), threads=threads)


def _pytorch_reference(manifest: Manifest, batch_size: int) -> tuple[Runner | None, str | None]:
    """The module the artifact came from, checked by sha256; else why it is not available.

    A missing or changed source is no error: the artifact's own answer stands without it.
    """
    from edgekit import models

    try:
        loaded = models.reload(manifest.source, batch_size=batch_size)
    except SourceError as exc:
        return None, exc.message
    return loaded.run_torch, None
