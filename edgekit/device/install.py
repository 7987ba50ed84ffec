"""`edgekit install`: copy an artifact folder into a demo app's asset folder, whole or not at all.

What is copied is what the manifest lists (model files, tokenizer files, scheduler config of a
pipeline) plus the manifest itself; stray files beside them (bench reports, emulation records)
stay behind. Each file is hashed while it is copied and must match the manifest, so a file that
changed after export never reaches the app. The copy is made in a temp folder beside the
destination and renamed into place (an existing install is swapped out in the same rename, by
`edgekit.artifact.publish`), so the app's folder holds the old complete artifact or the new
complete one, never a mix or a fragment.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from edgekit.artifact import (
    MANIFEST_NAME,
    Manifest,
    prepare_output_dir,
    publish,
    read_manifest,
    staging_dir,
)
from edgekit.device.apps import DEMO_APPS, AppCheckout, asset_folder, check_format, resolve_app
from edgekit.errors import ArtifactError, EdgekitError, OutputError

log = logging.getLogger(__name__)

_COPY_BLOCK_BYTES = 1 << 20


class InstallError(EdgekitError):
    """An artifact that must not go into the app as it is (failed verification)."""

    exit_code = 2


@dataclass
class InstalledFile:
    path: str  # relative to the artifact folder
    size_bytes: int


@dataclass
class InstallResult:
    checkout: AppCheckout
    manifest: Manifest
    destination: Path
    files: list[InstalledFile]
    replaced: bool  # an earlier install of the same artifact name was swapped out
    forced: bool  # verification had failed and --force installed it anyway


def install_artifact(artifact: Path, app: str, *, force: bool = False) -> InstallResult:
    manifest = read_manifest(artifact)
    if app in DEMO_APPS:  # a format the app cannot run is refused before looking for the app
        check_format(DEMO_APPS[app], manifest.format)
    checkout = resolve_app(app)
    check_format(checkout.app, manifest.format)
    failed = manifest.status == "failed"
    if failed and not force:
        raise InstallError(
            f"Artifact '{artifact}' failed verification ({_first_failure(manifest)}), so "
            f"{checkout.app.name} would show wrong results.",
            hint="re-export it (see `edgekit export --help` for precision and tolerance), or "
            "pass --force to install it anyway.",
        )
    sources = [(entry, artifact / entry.path) for entry in manifest.files]
    for entry, source in sources:
        if not source.is_file():
            raise ArtifactError(
                f"Artifact '{artifact}' lacks {entry.path}, which its manifest lists.",
                hint="re-export the artifact; a folder missing files would fail in the app.",
            )
    parent = prepare_output_dir(asset_folder(checkout, manifest.format, manifest.profile))
    destination = parent / artifact.resolve().name
    # The staging folder is beside the destination (same filesystem: the rename is atomic) and
    # is removed on any error, so a copy that fails midway leaves nothing in the app.
    with staging_dir(parent) as staging:
        for entry, source in sources:
            target = staging / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                digest = _copy_file(source, target)
            except OSError as exc:
                raise OutputError(
                    f"Cannot copy {entry.path} into {parent}: {exc.strerror or exc}; nothing "
                    "was installed.",
                    hint="free space or fix permissions there, then run install again.",
                ) from exc
            if digest != entry.sha256:
                raise ArtifactError(
                    f"{source} changed after export: its sha256 is {digest[:12]}..., the "
                    f"manifest says {entry.sha256[:12]}....",
                    hint="re-export the artifact instead of editing its files.",
                )
        replaced = publish(staging, manifest, destination)
    log.info("installed %s into %s", artifact, destination)
    files = [InstalledFile(MANIFEST_NAME, (destination / MANIFEST_NAME).stat().st_size)]
    files += [InstalledFile(entry.path, entry.size_bytes) for entry in manifest.files]
    return InstallResult(checkout, manifest, destination, files, replaced, forced=failed)


def _copy_file(source: Path, target: Path) -> str:
    """Copy one file and return the sha256 of the bytes written (one read, not two)."""
    digest = hashlib.sha256()
    with source.open("rb") as reader, target.open("wb") as writer:
        for block in iter(lambda: reader.read(_COPY_BLOCK_BYTES), b""):
            digest.update(block)
            writer.write(block)
    return digest.hexdigest()


def _first_failure(manifest: Manifest) -> str:
    for component in manifest.components:
        failures = component.verification.failures
        if component.verification.status == "failed":
            detail = failures[0] if failures else component.verification.message
            return f"{component.name}: {detail}"
    return "the manifest's status is failed"
