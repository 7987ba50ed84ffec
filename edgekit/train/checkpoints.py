"""Training checkpoints: whole or absent, never half-written.

A checkpoint is everything `accelerator.save_state` writes (model weights, optimizer, LR
scheduler, gradient scaler, the RNG states of every process, the objects registered with
`register_for_checkpointing`) plus a marker file, saved into a temporary folder inside the
checkpoints folder and renamed to `checkpoint-<step>` only once complete. A process killed
mid-save leaves a temporary folder that `latest` never picks (and the next save clears); a
folder without the marker (copied by hand, cut short by a full disk) is not picked either.

The temporary folder's name depends only on the step: under `accelerate launch` every process
writes its own RNG state file into the same folder, so they must agree on it without talking.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError

CHECKPOINTS_DIR = "checkpoints"
_NAME = "checkpoint-{step:06d}"
_NAME_PATTERN = re.compile(r"^checkpoint-(\d+)$")
_TEMP_PREFIX = ".tmp-"
# Written last, before the rename: what the checkpoint is, for humans and for resume checks.
MARKER_FILE = "edgekit-checkpoint.json"
# Tests set it to a step: every process SIGKILLs itself once that step's checkpoint is complete,
# as a crash or a preempted node would, so resume is tested on a process that never cleaned up.
KILL_AFTER_CHECKPOINT_ENV = "EDGEKIT_TEST_KILL_AFTER_CHECKPOINT"


class CheckpointError(EdgekitError):
    exit_code = 2


def checkpoints_dir(out: Path) -> Path:
    return out / CHECKPOINTS_DIR


def complete(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME_PATTERN.match(path.name)
        if match and (path / MARKER_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve(resume: str, folder: Path) -> Path:
    """The checkpoint `--resume` names: 'latest' (the newest complete one in `folder`) or a
    path to a complete checkpoint."""
    if resume == "latest":
        found = complete(folder)
        if not found:
            raise CheckpointError(
                f"--resume latest: no complete checkpoint in '{folder}'.",
                hint="start without --resume, or check --out (checkpoints are saved in "
                f"OUT/{CHECKPOINTS_DIR} every checkpoint_every steps).",
            )
        return found[-1][1]
    path = Path(resume).expanduser()
    if not (path / MARKER_FILE).is_file():
        state = "is not a complete checkpoint" if path.is_dir() else "does not exist"
        raise CheckpointError(
            f"--resume '{resume}' {state} (a checkpoint folder holds {MARKER_FILE}).",
            hint=f"pass 'latest' or a checkpoint-<step> folder from OUT/{CHECKPOINTS_DIR}.",
        )
    return path


def read_marker(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / MARKER_FILE).read_text())


def settings_changes(marker: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """How the settings a run resumes with differ from those its checkpoint recorded (the
    marker's `state`): `key old -> new`, or `key changed` for content hashes (`*sha256`)."""
    saved = marker.get("state", {})
    return [
        f"{key} changed" if key.endswith("sha256") else f"{key} {saved.get(key)!r} -> {value!r}"
        for key, value in current.items()
        if saved.get(key) != value
    ]


def save(
    accelerator,
    folder: Path,
    step: int,
    marker: dict[str, Any],
    keep: int | None,
    *,
    safetensors: bool = True,
) -> Path:
    """Save the accelerator's whole state as checkpoint `step`; keep the newest `keep`.
    Every process calls this (each writes its own RNG state). `safetensors=False` writes the
    models with torch.save instead (loaded back with weights_only): for models that reach one
    tensor under two names, which safetensors' loader refuses."""
    final = folder / _NAME.format(step=step)
    temp = folder / f"{_TEMP_PREFIX}{final.name}"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temp, ignore_errors=True)  # left by a run killed while saving this step
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temp), safe_serialization=safetensors)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temp / MARKER_FILE).write_text(json.dumps({"step": step, **marker}, indent=2) + "\n")
        if final.exists():  # a resumed run passing a step an earlier run had saved
            shutil.rmtree(final)
        temp.rename(final)
        if keep is not None:
            for _, old in complete(folder)[:-keep]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    if os.environ.get(KILL_AFTER_CHECKPOINT_ENV) == str(step):
        os.kill(os.getpid(), signal.SIGKILL)
    return final


def remove_temporary(folder: Path) -> None:
    """Clear the temporary folders of saves that were killed (main process, at start)."""
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.startswith(_TEMP_PREFIX) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
