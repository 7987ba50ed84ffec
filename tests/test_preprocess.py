"""edgekit.preprocess gives the very tensors transformers' own processor gives, on real photos.

The photos ship inside wheels (scikit-image's sample data, matplotlib's grace_hopper.jpg), so
the tests stay offline. The reference is transformers' PIL processor fed by
`transformers.image_utils.load_image`, as its pipelines do; "identical" means np.array_equal.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import skimage
from PIL import Image
from pydantic import ValidationError
from transformers import CLIPImageProcessorPil, MobileViTImageProcessorPil
from transformers.image_utils import load_image as hf_load_image

from edgekit import models
from edgekit.artifact import MANIFEST_NAME, manifest_json_schema, read_manifest
from edgekit.errors import SourceError
from edgekit.models.base import Preprocessing
from edgekit.models.mobilevit import MOBILEVIT_PRESETS, _default_preprocessing
from edgekit.preprocess import ImageError, load_image, preprocess, resized_size

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
CHELSEA = SKIMAGE_DATA / "chelsea.png"  # 451x300 RGB, landscape
COFFEE = SKIMAGE_DATA / "coffee.png"  # 600x400 RGB
ASTRONAUT = SKIMAGE_DATA / "astronaut.png"  # 512x512 RGB
GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"  # 512x600
PHOTOS = [CHELSEA, COFFEE, ASTRONAUT, GRACE_HOPPER]

# apple/mobilevit-small's preprocessor_config.json as published (legacy keys and int sizes).
PUBLISHED_MOBILEVIT_CONFIG = {
    "crop_size": 256,
    "do_center_crop": True,
    "do_flip_channels": True,
    "do_resize": True,
    "feature_extractor_type": "MobileViTFeatureExtractor",
    "resample": 2,
    "size": 288,
}
# MobileViT processor settings beyond the defaults; each exercises a different code path.
OTHER_SETTINGS = {
    "rgb-bicubic": {
        "size": {"shortest_edge": 72},
        "crop_size": {"height": 64, "width": 64},
        "resample": 3,
        "do_flip_channel_order": False,
    },
    # The resized photo is smaller than the crop: zero padding, non-square window.
    "lanczos-padded-crop": {
        "size": {"shortest_edge": 50},
        "crop_size": {"height": 64, "width": 80},
        "resample": 1,
    },
    "exact-size-nearest-no-crop": {
        "size": {"height": 61, "width": 77},
        "do_center_crop": False,
        "resample": 0,
    },
    "no-resize-box": {
        "do_resize": False,
        "crop_size": {"height": 256, "width": 256},
        "resample": 4,
    },
    # MobileViT's processor ignores do_normalize and the mean/std: so must the manifest.
    "normalize-ignored": {
        "size": {"shortest_edge": 72},
        "crop_size": {"height": 64, "width": 64},
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    },
}


def hf_tensor(processor, image_path: Path) -> np.ndarray:
    return processor(hf_load_image(str(image_path)), return_tensors="np")["pixel_values"]


def folder_with_processor(tmp_path: Path, source: Path, settings: dict) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(source, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    return folder


@pytest.fixture(scope="module")
def exported_fixture_folder(mobilevit_folder, tmp_path_factory) -> Path:
    """The conftest MobileViT folder (shortest edge 72, crop 64, BGR) exported to ONNX."""
    from edgekit.export import export_artifact

    folder, _ = export_artifact(
        models.load(mobilevit_folder), "onnx", tmp_path_factory.mktemp("preprocess-artifacts")
    )
    return folder


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.name)
def test_published_mobilevit_config_is_identical_to_transformers(photo, tmp_path, mobilevit_folder):
    folder = folder_with_processor(tmp_path, mobilevit_folder, PUBLISHED_MOBILEVIT_CONFIG)
    pre = models.load(folder).preprocessing
    expected = hf_tensor(MobileViTImageProcessorPil.from_dict(PUBLISHED_MOBILEVIT_CONFIG), photo)
    actual = preprocess(photo, pre)
    assert actual.shape == (1, 3, 256, 256) and actual.dtype == np.float32
    assert np.array_equal(actual, expected)


def test_presets_carry_the_published_settings(tmp_path, mobilevit_folder):
    folder = folder_with_processor(tmp_path, mobilevit_folder, PUBLISHED_MOBILEVIT_CONFIG)
    image_size = MOBILEVIT_PRESETS["mobilevit-small"]["image_size"]
    assert _default_preprocessing(image_size) == models.load(folder).preprocessing


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.name)
def test_exported_manifest_is_identical_to_transformers(photo, exported_fixture_folder):
    pre = read_manifest(exported_fixture_folder).preprocessing
    source = read_manifest(exported_fixture_folder).source.path
    expected = hf_tensor(MobileViTImageProcessorPil.from_pretrained(source), photo)
    assert np.array_equal(preprocess(photo, pre), expected)


def test_manifest_stores_enumerated_strings(exported_fixture_folder):
    stored = json.loads((exported_fixture_folder / MANIFEST_NAME).read_text())["preprocessing"]
    schema = manifest_json_schema()["$defs"]
    assert stored["resize"] == "shortest-edge" and stored["crop"] == "center"
    assert stored["channel_order"] == "BGR" and stored["layout"] == "NCHW"
    assert stored["interpolation"] in schema["Interpolation"]["enum"]
    assert set(schema["Interpolation"]["enum"]) >= {"nearest", "bilinear", "bicubic", "lanczos"}


@pytest.mark.parametrize("name", OTHER_SETTINGS)
@pytest.mark.parametrize("photo", [CHELSEA, GRACE_HOPPER], ids=lambda p: p.name)
def test_other_settings_are_identical_to_transformers(name, photo, tmp_path, mobilevit_folder):
    settings = OTHER_SETTINGS[name]
    folder = folder_with_processor(tmp_path, mobilevit_folder, settings)
    pre = models.load(folder).preprocessing
    expected = hf_tensor(MobileViTImageProcessorPil.from_dict(settings), photo)
    actual = preprocess(photo, pre)
    assert actual.shape == expected.shape
    assert np.array_equal(actual, expected)


def test_normalization_rgb_bicubic_nhwc_from_a_manifest(exported_fixture_folder, tmp_path):
    """A CLIP-style block (normalize, RGB, bicubic) read back from a manifest on disk."""
    clip = CLIPImageProcessorPil()
    block = Preprocessing(
        resize="shortest-edge",
        resize_shortest_edge=clip.size.shortest_edge,
        interpolation="bicubic",
        crop="center",
        crop_height=clip.crop_size.height,
        crop_width=clip.crop_size.width,
        rescale_factor=clip.rescale_factor,
        mean=list(clip.image_mean),
        std=list(clip.image_std),
        channel_order="RGB",
        layout="NHWC",
    )
    manifest = read_manifest(exported_fixture_folder).model_copy(update={"preprocessing": block})
    folder = tmp_path / "clip-style"
    folder.mkdir()
    (folder / MANIFEST_NAME).write_text(manifest.model_dump_json())
    pre = read_manifest(folder).preprocessing
    for photo in (CHELSEA, GRACE_HOPPER):
        expected = hf_tensor(clip, photo).transpose(0, 2, 3, 1)  # HF gives NCHW
        actual = preprocess(photo, pre)
        assert actual.shape == (1, 224, 224, 3)
        assert np.array_equal(actual, expected)


def _palette_with_transparency(path: Path) -> None:
    image = Image.open(CHELSEA).convert("P", palette=Image.Palette.ADAPTIVE)
    image.save(path, transparency=0)


def _cmyk_jpeg(path: Path) -> None:
    Image.open(CHELSEA).convert("CMYK").save(path, quality=90)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("greyscale.png", lambda p: shutil.copy(SKIMAGE_DATA / "camera.png", p)),
        ("rgba.png", lambda p: shutil.copy(SKIMAGE_DATA / "horse.png", p)),
        ("palette.png", _palette_with_transparency),
        ("cmyk.jpg", _cmyk_jpeg),
    ],
)
def test_non_rgb_images_convert_as_transformers_loads_them(name, make, tmp_path):
    path = tmp_path / name
    make(path)
    assert Image.open(path).mode != "RGB"
    processor = MobileViTImageProcessorPil.from_dict(PUBLISHED_MOBILEVIT_CONFIG)
    pre = _default_preprocessing(256)
    assert np.array_equal(preprocess(path, pre), hf_tensor(processor, path))


def test_exif_orientation_is_applied_like_transformers_load_image(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: stored landscape, shown rotated 90 degrees clockwise
    Image.open(CHELSEA).save(path, exif=exif, quality=95)
    assert load_image(path).size == (300, 451)  # upright: portrait
    pre = _default_preprocessing(64)
    processor = MobileViTImageProcessorPil.from_dict(
        {"size": {"shortest_edge": 72}, "crop_size": 64, "resample": 2}
    )
    assert np.array_equal(preprocess(path, pre), hf_tensor(processor, path))
    # The processor alone, given the file as stored, would see it sideways.
    sideways = processor(Image.open(path), return_tensors="np")["pixel_values"]
    assert not np.array_equal(preprocess(path, pre), sideways)


def test_shortest_edge_truncates_like_transformers():
    pre = _default_preprocessing(256)  # shortest edge 288
    # 451 * 288 / 300 = 432.96: truncated to 432, where rounding would give 433.
    assert resized_size(300, 451, pre) == (288, 432)
    assert resized_size(451, 300, pre) == (432, 288)
    assert resized_size(512, 512, pre) == (288, 288)


def _truncated_jpeg(path: Path) -> None:
    path.write_bytes(GRACE_HOPPER.read_bytes()[:5000])


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("missing.jpg", lambda p: None, "does not exist"),
        ("a-folder.jpg", lambda p: p.mkdir(), "is a folder, not an image file"),
        ("notes.txt", lambda p: p.write_text("holiday pictures"), "is not an image Pillow can"),
        ("empty.png", lambda p: p.write_bytes(b""), "is not an image Pillow can decode"),
        ("cut.jpg", _truncated_jpeg, "cannot be read: image file is truncated"),
    ],
)
def test_unreadable_files_raise_one_clear_error(name, make, message, tmp_path):
    path = tmp_path / name
    make(path)
    with pytest.raises(ImageError) as raised:
        preprocess(path, _default_preprocessing(64))
    text = str(raised.value)
    assert message in text and name in text
    assert len(text.splitlines()) == 1


def test_blocks_that_cannot_give_a_fixed_size_are_rejected():
    good = _default_preprocessing(64).model_dump()
    with pytest.raises(ValidationError, match="crop 'none' needs resize 'exact'"):
        Preprocessing(**{**good, "crop": "none"})
    with pytest.raises(ValidationError, match="std must not contain 0"):
        Preprocessing(**{**good, "std": [1.0, 0.0, 1.0]})
    with pytest.raises(ValidationError, match="interpolation"):
        Preprocessing(**{**good, "interpolation": "area"})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"size": {"shortest_edge": 72, "longest_edge": 100}}, "edgekit supports"),
        ({"size": {"shortest_edge": 72}, "resample": 7}, "has resample 7"),
    ],
)
def test_processor_settings_edgekit_cannot_reproduce_are_refused(
    settings, message, tmp_path, mobilevit_folder
):
    folder = folder_with_processor(tmp_path, mobilevit_folder, settings)
    with pytest.raises(SourceError, match=message):
        models.load(folder)
