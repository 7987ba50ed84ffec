"""Checks on weight files before a framework sees them, so a bad file gets one clear line.

Pickle-based files (.bin, .ckpt, ...) are refused unless the user consents (`allow_pickle`):
unpickling can call any Python function the file names. With consent they are read only by
torch's restricted unpickler (`weights_only=True`), which rebuilds tensors and plain containers
and refuses every other global, so even then nothing in the file runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edgekit.errors import PickleRefusedError, SourceError

PICKLE_SUFFIXES = frozenset({".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle"})
ALLOW_PICKLE_FLAG = "--allow-pickle"
# The key in SourceInfo.options (and the keyword of models.load) that records the consent, so
# bench and generate, which rebuild a source from its options, read the same file again.
ALLOW_PICKLE_OPTION = "allow_pickle"
# torch.save's default format is a zip archive; its legacy format and plain pickles begin with
# the PROTO opcode (0x80) and a protocol number.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_PICKLE_PROTOCOLS = range(2, 6)
# A safetensors file begins with its header length (8 bytes, little-endian), then the JSON "{".
_SAFETENSORS_JSON_OFFSET = 8
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def check_weight_files(
    folder: Path, candidates: list[str], *, allow_pickle: bool = False, loader: str = ""
) -> list[Path]:
    """Return the weight files present in `folder` (first candidate found), after checking them.

    A `.safetensors` file is opened and its header read: truncated or corrupt files fail here
    instead of deep inside transformers/diffusers with a traceback. A pickle-based file needs
    `allow_pickle`, and is then read once with the restricted unpickler, so a file holding more
    than tensors is refused here in one line. `loader` ("package.Class") names the class whose
    from_pretrained/save_pretrained converts the folder to safetensors, for the refusal's hint.
    """
    for name in candidates:
        path = folder / name
        found = [path] if path.is_file() else []
        if not found:
            # Sharded checkpoints: model-00001-of-00002.safetensors + an index file.
            stem, _, suffix = name.rpartition(".")
            found = sorted(folder.glob(f"{stem}-*-of-*.{suffix}"))
        for weights in found:
            if weights.suffix == ".safetensors":
                check_safetensors(weights)
            else:
                check_pickle_consent(
                    weights,
                    allow_pickle=allow_pickle,
                    convert_command=folder_convert_command(folder, loader),
                )
                load_pickled_weights(weights)
        if found:
            return found
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
        if has_pickle_header(path):
            raise SourceError(
                f"{path} is named .safetensors but holds a pickle (torch.save format); edgekit "
                "did not unpickle it.",
                hint="ask for a real safetensors file, or give it its real suffix (.bin, .ckpt) "
                f"and pass {ALLOW_PICKLE_FLAG} to read its tensors with the restricted unpickler.",
            ) from exc
        raise SourceError(
            f"{path} is not a readable safetensors file ({str(exc).splitlines()[0]}).",
            hint="the file is truncated or corrupt: copy or download it again.",
        ) from exc
    if not keys:
        raise SourceError(f"{path} holds no tensors.", hint="re-save the model's weights.")


def uses_pickle(weight_files: list[Path]) -> bool:
    return any(map(is_pickle_file, weight_files))


def consent_option(pickled: bool) -> dict[str, bool]:
    """The source option that records --allow-pickle, only where a pickle-based file was read."""
    return {ALLOW_PICKLE_OPTION: True} if pickled else {}


def is_pickle_file(path: Path) -> bool:
    """True for a pickle-based weight file: by its suffix, or by a zip/pickle header under any
    other name. Decided from the name and the first bytes; nothing is unpickled."""
    return path.suffix.lower() in PICKLE_SUFFIXES or has_pickle_header(path)


def has_pickle_header(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(_SAFETENSORS_JSON_OFFSET + 1)
    except OSError:
        return False
    # A header length such as 0x0280 makes a safetensors file begin with 0x80 0x02 (PROTO 2).
    if head[_SAFETENSORS_JSON_OFFSET:] == b"{":
        return False
    return head.startswith(_ZIP_MAGIC) or (
        len(head) > 1 and head[0] == _PICKLE_PROTO and head[1] in _PICKLE_PROTOCOLS
    )


def check_pickle_consent(path: Path, *, allow_pickle: bool, convert_command: str) -> None:
    """Refuse a pickle-based file unless the user passed --allow-pickle (`allow_pickle`)."""
    if allow_pickle:
        return
    raise PickleRefusedError(
        f"{path} is a pickle-based weight file; loading a pickle can run arbitrary code hidden "
        "in it, so edgekit does not load one without your consent.",
        hint=f"convert it to safetensors once: {convert_command} ; or pass {ALLOW_PICKLE_FLAG} "
        "to read it with torch's restricted unpickler (weights_only: tensors only, no code runs).",
    )


def load_pickled_weights(path: Path) -> dict[str, Any]:
    """A pickle-based checkpoint read with torch's restricted unpickler (weights_only=True).

    It rebuilds tensors and plain containers only and raises on any other global (a function
    to call, a class to build), so no code in the file runs; such a file is refused in one line.
    """
    import pickle
    import zipfile

    import torch

    try:
        # mmap: only the zip format supports it; it keeps a multi-GB checkpoint out of memory.
        state = torch.load(
            path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
        )
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise _unreadable(path, exc) from exc
        refused = _REFUSED_GLOBAL.search(str(exc))
        raise SourceError(
            f"{path} holds pickled Python objects beyond tensors"
            + (f" ({refused.group(1)})" if refused else "")
            + f", which edgekit never unpickles, not even with {ALLOW_PICKLE_FLAG}: they can run "
            "code.",
            hint="ask its publisher for a .safetensors file; only if you trust its origin, save "
            "its tensors as safetensors where running its code is acceptable "
            "(torch.load(..., weights_only=False)).",
        ) from exc
    except Exception as exc:  # RuntimeError (bad zip), EOFError (truncated), ValueError
        raise _unreadable(path, exc) from exc
    if not isinstance(state, dict):
        raise SourceError(
            f"{path} holds a {type(state).__name__}, not a dict of tensors.",
            hint="save the model's state_dict(), preferably as safetensors.",
        )
    return state


def _unreadable(path: Path, exc: BaseException) -> SourceError:
    return SourceError(
        f"{path} is not a readable PyTorch checkpoint ({str(exc).splitlines()[0]}).",
        hint="the file is truncated or corrupt: copy or download it again.",
    )


def folder_convert_command(folder: Path, loader: str) -> str:
    """A one-line conversion of a save_pretrained folder to safetensors, in place.

    transformers 5 and diffusers read a .bin with weights_only=True and save_pretrained writes
    safetensors by default; edgekit then picks the .safetensors over the .bin beside it.
    """
    package, _, name = loader.rpartition(".")
    if not package:
        return "re-save the model with save_pretrained(), which writes safetensors"
    where = repr(str(folder))
    return (
        f'python -c "from {package} import {name} as M; '
        f'M.from_pretrained({where}).save_pretrained({where})"'
    )


def checkpoint_convert_command(path: Path) -> str:
    """A one-line conversion of a single-file .ckpt to .safetensors beside it (tensors only)."""
    source, target = repr(str(path)), repr(str(path.with_suffix(".safetensors")))
    return (
        'python -c "import torch, safetensors.torch as st; '
        f"sd = torch.load({source}, map_location='cpu', weights_only=True); "
        "sd = sd.get('state_dict', sd); "
        "st.save_file({k: v.contiguous().clone() for k, v in sd.items() "
        f'if isinstance(v, torch.Tensor)}}, {target})"'
    )
