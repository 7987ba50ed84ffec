"""Artifact folders: the model file(s) plus `manifest.json`, written atomically.

The manifest is what demo apps and `edgekit bench` read; apps never parse file names. Its JSON
Schema is generated from these pydantic models and committed as
`edgekit/schemas/manifest.schema.json` (`python -m edgekit.artifact` rewrites it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from edgekit.errors import ArtifactError, OutputError
from edgekit.json_schema import json_schema, write_json_schema
from edgekit.models.base import PipelineInfo, Preprocessing, SourceInfo, TensorSpec
from edgekit.quant.plan import QuantPlan
from edgekit.quant.spec import CalibrationRecord, PlanCheck
from edgekit.validate import Verification

# 3.0: verification over several inputs (input_seeds, centered SQNR, runtime_error), explicit
# preprocessing and scheduler blocks.
MANIFEST_SCHEMA_VERSION = "3.1"
MANIFEST_NAME = "manifest.json"
SCHEMA_PATH = Path(__file__).parent / "schemas" / "manifest.schema.json"
_TEMP_PREFIX = ".edgekit-tmp-"

log = logging.getLogger(__name__)


class FileEntry(BaseModel):
    path: str = Field(description="Relative to the artifact folder.")
    size_bytes: int
    sha256: str


class ExportInfo(BaseModel):
    duration_s: float = Field(description="Seconds the converter took.")
    verify_duration_s: float | None = Field(
        None,
        description="Seconds verification added: the PyTorch reference runs, the runtime's load "
        "and runs, the comparison.",
    )
    details: dict[str, Any] = Field(default_factory=dict, description="Exporter-specific facts.")


class ComponentManifest(BaseModel):
    """One exported model inside an artifact (a classifier has one; an SD pipeline up to three)."""

    name: str = Field(description="'model', or 'text-encoder' / 'unet' / 'vae-decoder'.")
    model_kind: str = Field(description="'mobilevit-classifier', 'sd-unet', ...")
    model_file: str = Field(description="Relative to the artifact folder.")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameter_count: int
    source: SourceInfo = Field(description="The weights this component came from.")
    export: ExportInfo
    verification: Verification
    quant: PlanCheck | None = Field(
        None,
        description="The precision each layer holds, read back from the model file, against the "
        "plan's; a mismatch fails the artifact.",
    )
    calibration: CalibrationRecord | None = Field(
        None, description="The data static int8 layers were calibrated on (quantized plans)."
    )
    size_bytes: int | None = Field(None, description="Bytes of this component's model file(s).")
    fp32_weight_bytes: int | None = Field(
        None, description="Bytes the same weights take in fp32: parameter count x 4."
    )


class Manifest(BaseModel):
    """Everything known about one exported artifact. Demo apps read this, never file names."""

    schema_version: str = MANIFEST_SCHEMA_VERSION
    name: str
    created_utc: str
    status: Literal["verified", "failed", "structure-only"] = Field(
        description="'verified': numerics passed for every component; 'failed': a check failed; "
        "'structure-only': no runtime on this OS, so only the structure was checked."
    )
    model_kind: str = Field(description="'mobilevit-classifier', 'sd-pipeline', ...")
    random_weights: bool = Field(description="True when the weights are a preset's random ones.")
    source: SourceInfo
    format: str
    precision: str
    quant_plan: QuantPlan | None = Field(
        None, description="The quantization plan asked for with --quant (named or a file)."
    )
    profile: dict[str, Any] | None = Field(
        None, description="The deployment target profile the artifact was exported for."
    )
    preprocessing: Preprocessing | None = None
    labels: list[str] | None = None
    pipeline: PipelineInfo | None = Field(
        None, description="Stable Diffusion: how components, tokenizer and scheduler fit."
    )
    components: list[ComponentManifest]
    files: list[FileEntry]
    tool_versions: dict[str, str]

    def component(self, name: str | None = None) -> ComponentManifest:
        """The named component, or the only one when `name` is None."""
        if name is None and len(self.components) == 1:
            return self.components[0]
        for component in self.components:
            if component.name == name:
                return component
        known = ", ".join(c.name for c in self.components)
        raise ArtifactError(
            f"Artifact {self.name} has no component '{name}'; it has: {known}.",
            hint="pass one of those names.",
        )


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entries(folder: Path) -> list[FileEntry]:
    return [
        FileEntry(path=str(p.relative_to(folder)), size_bytes=p.stat().st_size, sha256=hash_file(p))
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p != folder / MANIFEST_NAME
    ]


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def prepare_output_dir(out_dir: Path) -> Path:
    """Create `out_dir` if needed and prove it is writable before any slow work starts.

    Also removes staging folders that a killed edgekit process left behind (their owner's pid
    is in the name and no longer runs): a SIGKILL skips every `finally`.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f"{_temp_prefix()}probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"Cannot write to output folder '{out_dir}': {exc.strerror or exc}.",
            hint="choose a folder you can write to (--out).",
        ) from exc
    _remove_orphaned_staging(out_dir)
    return out_dir


def _temp_prefix() -> str:
    return f"{_TEMP_PREFIX}{os.getpid()}-"


def _remove_orphaned_staging(out_dir: Path) -> None:
    for leftover in out_dir.glob(f"{_TEMP_PREFIX}*"):
        pid_text = leftover.name[len(_TEMP_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


@contextmanager
def staging_dir(out_dir: Path) -> Iterator[Path]:
    """A temp folder inside `out_dir` (same filesystem, so the final rename is atomic).

    It is removed on any error or interrupt: a failed export leaves nothing behind. After
    `publish` swapped an old artifact out, the old one lives here and goes with it.
    """
    staging = Path(tempfile.mkdtemp(prefix=_temp_prefix(), dir=out_dir))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish_step(name: str) -> None:
    """A named point between two steps of `publish`; tests interrupt publish here."""


def publish(staging: Path, manifest: Manifest, final_dir: Path) -> bool:
    """Write the manifest into `staging` and make it `final_dir` in one atomic step.

    An existing artifact at `final_dir` is swapped out in the same step (renameat2
    RENAME_EXCHANGE on Linux, renamex_np RENAME_SWAP on macOS), so at every instant `final_dir`
    holds the old complete artifact or the new complete one; the old one is then in `staging`,
    which `staging_dir` removes. Returns True when an artifact was replaced.
    """
    manifest_path = staging / MANIFEST_NAME
    manifest_path.write_text(manifest.model_dump_json(indent=2) + "\n")
    _publish_step("manifest-written")
    staging.chmod(0o755)  # mkdtemp makes it 0700; artifacts are meant to be shared
    _publish_step("permissions-set")
    if not final_dir.exists():
        os.rename(staging, final_dir)  # atomic; fails (not overwrites) if the name appeared
        _publish_step("renamed")
        return False
    if not final_dir.is_dir():
        raise OutputError(
            f"'{final_dir}' exists and is not an artifact folder, so it is not replaced.",
            hint="move that file away or pass another --name / --out.",
        )
    if _exchange(staging, final_dir):
        _publish_step("swapped")
    else:
        _replace_in_two_renames(staging, final_dir)
    shutil.rmtree(staging, ignore_errors=True)  # the old artifact
    _publish_step("old-removed")
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the OS or filesystem cannot."""
    import ctypes
    import ctypes.util
    import sys

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        result = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rename_swap = 2
        result = libc.renamex_np(os.fsencode(a), os.fsencode(b), rename_swap)
    else:
        return False
    if result == 0:
        return True
    log.debug("atomic exchange unavailable: %s", os.strerror(ctypes.get_errno()))
    return False


def _replace_in_two_renames(staging: Path, final_dir: Path) -> None:
    """Fallback without an exchange syscall: old -> aside, new -> final. Between the two renames
    `final_dir` is briefly missing; an interrupt there puts the old artifact back."""
    aside = staging.with_name(f"{staging.name}-old")
    os.rename(final_dir, aside)
    try:
        _publish_step("old-moved-aside")
        os.rename(staging, final_dir)
    except BaseException:
        if not final_dir.exists():
            os.rename(aside, final_dir)
        raise
    finally:
        if aside.exists():
            # Leave the old artifact where staging_dir's cleanup finds it.
            shutil.rmtree(staging, ignore_errors=True)
            os.rename(aside, staging)
    _publish_step("swapped")


def write_text_atomic(path: Path, text: str) -> Path:
    """Write a report file whole or not at all (temp file beside it, then rename)."""
    return write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "wb", dir=path.parent, prefix=_TEMP_PREFIX, suffix=path.suffix, delete=False
        ) as handle:
            handle.write(data)
        # NamedTemporaryFile creates the file 0600; a report or image is shared like any file
        # the user writes, so it gets what open() would give it: 0666 minus the umask.
        os.chmod(handle.name, 0o666 & ~_current_umask())
        os.replace(handle.name, path)
    except OSError as exc:
        raise OutputError(
            f"Cannot write '{path}': {exc.strerror or exc}.",
            hint="choose a path in a folder you can write to.",
        ) from exc
    return path


def _current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc). Elsewhere
    os.umask must set it to read it; the stand-in 077 only makes a file that another thread
    creates in that instant private, never more open."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o077)
    os.umask(current)
    return current


def read_manifest(artifact_dir: Path) -> Manifest:
    path = artifact_dir / MANIFEST_NAME
    if not artifact_dir.is_dir():
        raise ArtifactError(
            f"No artifact folder at '{artifact_dir}'.",
            hint="pass a folder that `edgekit export` wrote.",
        )
    if not path.is_file():
        raise ArtifactError(
            f"'{artifact_dir}' has no {MANIFEST_NAME}, so it is not an edgekit artifact.",
            hint="pass a folder that `edgekit export` wrote.",
        )
    try:
        return Manifest.model_validate_json(path.read_text())
    except (ValidationError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise ArtifactError(
            f"{path} is not a valid edgekit manifest ({first}).",
            hint="re-export the artifact with this version of edgekit.",
        ) from exc


def manifest_json_schema() -> dict[str, Any]:
    return json_schema(Manifest, name="manifest", version=MANIFEST_SCHEMA_VERSION)


def write_schema(path: Path = SCHEMA_PATH) -> None:
    write_json_schema(manifest_json_schema(), path)


if __name__ == "__main__":
    write_schema()
