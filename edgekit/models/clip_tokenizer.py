"""CLIP's BPE tokenizer, offline.

Stable Diffusion 1.x prompts go through OpenAI CLIP's BPE vocabulary. The vocabulary ships with
edgekit (`data/bpe_simple_vocab_16e6.txt.gz`, MIT, from the open_clip_torch wheel; see
`data/LICENSE-open_clip.txt`), so nothing is downloaded. From it we write the Hugging Face files
(`vocab.json`, `merges.txt`, ...) that transformers and apple's ml-stable-diffusion Swift package
both read, and load the tokenizer with `from_pretrained(folder)`: in transformers 5.x,
`CLIPTokenizer(vocab_file=..., merges_file=...)` silently builds an empty tokenizer.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

BPE_VOCAB = Path(__file__).parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# CLIP's BPE table lists more merges than the model uses: the vocabulary is 49408 entries =
# 2 x 256 byte tokens + 48894 merges + 2 special tokens (openai/CLIP simple_tokenizer.py).
_MERGES_USED = 49152 - 256 - 2
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    lines = gzip.decompress(BPE_VOCAB.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : _MERGES_USED + 1]
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in merges]
    tokens += [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def write_tokenizer_files(folder: Path) -> list[Path]:
    """Write the Hugging Face CLIP tokenizer files for SD 1.x into `folder`."""
    vocab, merges = _vocab_and_merges()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    # SD 1.x pads with the end token, to the 77 positions CLIP was trained with.
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": MAX_LENGTH,
                "bos_token": BOS,
                "eos_token": EOS,
                "unk_token": EOS,
                "pad_token": EOS,
                "do_lower_case": True,
            },
            indent=2,
        )
    )
    (folder / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "bos_token": BOS,
                "eos_token": EOS,
                "unk_token": EOS,
                "pad_token": EOS,
            },
            indent=2,
        )
    )
    return [folder / name for name in TOKENIZER_FILES]


def load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


def encode(tokenizer, prompts: list[str]) -> np.ndarray:
    """Prompts -> int32 token ids, (N, 77), padded and truncated like SD 1.x pipelines."""
    import numpy as np

    ids = tokenizer(
        prompts, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="np"
    ).input_ids
    return ids.astype(np.int32)
