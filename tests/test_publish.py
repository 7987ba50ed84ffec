"""Publishing an artifact over an old one is atomic: interrupted at any step, the folder holds the
old complete artifact or the new complete one, and no hidden staging folder is left behind."""

from __future__ import annotations

import os
import shutil

import pytest

from edgekit import artifact
from edgekit.artifact import (
    MANIFEST_NAME,
    file_entries,
    hash_file,
    prepare_output_dir,
    publish,
    read_manifest,
    staging_dir,
)

STEPS_WITH_EXCHANGE = ["manifest-written", "permissions-set", "swapped", "old-removed"]
STEPS_WITHOUT_EXCHANGE = [
    "manifest-written",
    "permissions-set",
    "old-moved-aside",
    "swapped",
    "old-removed",
]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C at a chosen step of publish."""


def _which(folder) -> str:
    """'old' or 'new' if `folder` is a complete artifact (every file as its manifest lists it,
    nothing else), else fail the test."""
    manifest = read_manifest(folder)
    listed = {entry.path: entry.sha256 for entry in manifest.files}
    present = {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    }
    assert present == set(listed), f"{folder} is incomplete or mixed: {present ^ set(listed)}"
    for path, digest in listed.items():
        assert hash_file(folder / path) == digest
    return manifest.created_utc


@pytest.fixture
def old_artifact(tmp_path, mobilevit_artifacts):
    out = tmp_path / "out"
    out.mkdir()
    final = out / "model-artifact"
    shutil.copytree(mobilevit_artifacts["onnx"], final)
    manifest = read_manifest(final).model_copy(update={"created_utc": "old"})
    (final / MANIFEST_NAME).write_text(manifest.model_dump_json())
    return final


def _stage_new(staging, old_final):
    """A new artifact in `staging`: different model bytes, a file the old one lacks."""
    for path in old_final.iterdir():
        if path.name != MANIFEST_NAME:
            shutil.copy(path, staging / path.name)
    model_file = next(p for p in staging.iterdir() if p.suffix == ".onnx")
    model_file.write_bytes(model_file.read_bytes() + b"\0")  # new contents, same name
    (staging / "notes.txt").write_text("only in the new artifact")
    manifest = read_manifest(old_final).model_copy(
        update={"created_utc": "new", "files": file_entries(staging)}
    )
    return manifest


def _publish_interrupted_at(monkeypatch, final, stop_at: str | None, seen: list[str]) -> None:
    def step(name):
        seen.append(name)
        # At every step the folder is whole; only the fallback for systems without an atomic
        # exchange has a gap between its two renames (an interrupt there is undone).
        if name != "old-moved-aside":
            assert _which(final) in {"old", "new"}
        if name == stop_at:
            raise Interrupted

    monkeypatch.setattr(artifact, "_publish_step", step)
    with staging_dir(final.parent) as staging:
        manifest = _stage_new(staging, final)
        publish(staging, manifest, final)


def _leftovers(out):
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".edgekit-tmp-"))


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_interrupt_at_every_step_keeps_a_whole_artifact(old_artifact, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(artifact, "_exchange", lambda a, b: False)
    steps = STEPS_WITH_EXCHANGE if exchange else STEPS_WITHOUT_EXCHANGE
    pristine_old = old_artifact.parent.parent / "pristine-old"
    shutil.copytree(old_artifact, pristine_old)
    seen: list[str] = []
    _publish_interrupted_at(monkeypatch, old_artifact, None, seen)
    assert seen == steps  # the steps the interrupts below hit are the real ones
    assert _which(old_artifact) == "new"

    for index, stop_at in enumerate(steps):
        # Start each round from the old artifact again.
        shutil.rmtree(old_artifact)
        shutil.copytree(pristine_old, old_artifact)
        seen.clear()
        with pytest.raises(Interrupted):
            _publish_interrupted_at(monkeypatch, old_artifact, stop_at, seen)
        swapped = steps.index("swapped")
        assert _which(old_artifact) == ("new" if index >= swapped else "old"), stop_at
        assert _leftovers(old_artifact.parent) == [], stop_at


def test_failed_export_leaves_the_old_artifact(old_artifact):
    with pytest.raises(RuntimeError), staging_dir(old_artifact.parent) as staging:
        (staging / "half-written.onnx").write_bytes(b"\0" * 10)
        raise RuntimeError("the converter crashed")
    assert _which(old_artifact) == "old"
    assert _leftovers(old_artifact.parent) == []


def test_first_publish_is_one_rename(tmp_path, old_artifact, monkeypatch):
    final = tmp_path / "fresh"
    seen: list[str] = []
    monkeypatch.setattr(artifact, "_publish_step", seen.append)
    with staging_dir(tmp_path) as staging:
        manifest = _stage_new(staging, old_artifact)
        assert publish(staging, manifest, final) is False
    assert seen == ["manifest-written", "permissions-set", "renamed"]
    assert _which(final) == "new"


def test_staging_left_by_a_killed_process_is_removed(tmp_path):
    dead = tmp_path / ".edgekit-tmp-999999999-abcd"  # no such pid
    dead.mkdir()
    (dead / "model.onnx").write_bytes(b"\0")
    mine = tmp_path / f".edgekit-tmp-{os.getpid()}-live"
    mine.mkdir()
    prepare_output_dir(tmp_path)
    assert not dead.exists() and mine.exists()
