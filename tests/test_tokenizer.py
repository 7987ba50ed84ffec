"""The packaged CLIP tokenizer reproduces OpenAI CLIP's token ids, offline."""

from __future__ import annotations

from edgekit.models import clip_tokenizer


def test_known_clip_ids(tmp_path):
    files = clip_tokenizer.write_tokenizer_files(tmp_path)
    assert [f.name for f in files] == list(clip_tokenizer.TOKENIZER_FILES)
    tokenizer = clip_tokenizer.load_tokenizer(tmp_path)
    assert len(tokenizer) == 49408
    ids = clip_tokenizer.encode(tokenizer, ["a photo of a cat", "a photo of sks dog"])
    assert ids.shape == (2, 77) and str(ids.dtype) == "int32"
    # Ids as published for CLIP ViT-L/14's tokenizer; 48136 is DreamBooth's favourite "sks".
    assert ids[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 49407]
    assert ids[1, 4] == 48136
    assert (ids[0, 7:] == 49407).all()  # padded with the end token, as SD 1.x does


def test_long_prompts_are_truncated(tmp_path):
    clip_tokenizer.write_tokenizer_files(tmp_path)
    tokenizer = clip_tokenizer.load_tokenizer(tmp_path)
    ids = clip_tokenizer.encode(tokenizer, ["cat " * 200])
    assert ids.shape == (1, 77) and ids[0, -1] == 49407
