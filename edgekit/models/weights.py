"""Checks on weight files before a framework sees them, so a bad file gets one clear line."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import SourceError


def check_weight_files(folder: Path, candidates: list[str]) -> list[Path]:
    """Return the weight files present in `folder` (first candidate found), after checking them.

    A `.safetensors` file is opened and its header read: truncated or corrupt files fail here
    instead of deep inside transformers/diffusers with a traceback.
    """
    for name in candidates:
        path = folder / name
        if path.is_file():
            if path.suffix == ".safetensors":
                check_safetensors(path)
            return [path]
        # Sharded checkpoints: model-00001-of-00002.safetensors + an index file.
        stem, _, suffix = name.rpartition(".")
        shards = sorted(folder.glob(f"{stem}-*-of-*.{suffix}"))
        if shards:
            for shard in shards:
                if shard.suffix == ".safetensors":
                    check_safetensors(shard)
            return shards
    raise SourceError(
        f"No weights in {folder}: expected one of {', '.join(candidates)}.",
        hint="point at the folder that save_pretrained() wrote, or use a preset name.",
    )


def check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as exc:  # safetensors raises SafetensorError or OSError depending on damage
        raise SourceError(
            f"{path} is not a readable safetensors file ({str(exc).splitlines()[0]}).",
            hint="the file is truncated or corrupt: copy or download it again.",
        ) from exc
    if not keys:
        raise SourceError(f"{path} holds no tensors.", hint="re-save the model's weights.")
