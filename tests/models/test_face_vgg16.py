"""The flagship model's pieces on small generated images, plus its weights handling."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import MlopsError
from pipeline.sdk import FeatureCache
from pipeline.sdk.contract import StudyContext, TrainResult, TrialContext, load_plugin
from pipeline.tracking import promotion
from pipeline.tracking.tracker import save_model

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = load_plugin(ROOT / "models" / "face_vgg16")
faces = __import__("mlops_models.face_vgg16.faces", fromlist=["load_faces"])
backbone = __import__("mlops_models.face_vgg16.backbone", fromlist=["load_base"])
model = PLUGIN.module


def make_people(root: Path, counts: dict[str, int], size: int = 40) -> Path:
    rng = np.random.default_rng(0)
    for person, count in counts.items():
        (root / person).mkdir(parents=True)
        tint = rng.integers(0, 255, 3)
        for i in range(count):
            pixels = np.clip(tint + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(pixels if i % 3 else pixels[..., 0]).save(root / person / f"{person}_{i:04d}{suffix}")
    return root


def test_folder_per_person_loads_rgb_at_size_and_prunes_small_classes(tmp_path: Path) -> None:
    root = make_people(tmp_path / "people", {"Ada_Lovelace": 6, "Alan_Turing": 7, "Grace_Hopper": 2})
    (root / "Ada_Lovelace" / "notes.txt").write_text("not an image")
    loaded = faces.load_faces({"source": "folder", "path": str(root), "input_size": 48, "min_images_per_class": 5})
    assert loaded.images.shape == (13, 48, 48, 3) and loaded.images.dtype == np.uint8
    assert loaded.names == ["Ada Lovelace", "Alan Turing"]  # Grace (2 images) pruned
    assert sorted(np.bincount(loaded.labels).tolist()) == [6, 7]


def test_corrupt_image_is_skipped_and_counted_or_fatal(tmp_path: Path) -> None:
    root = make_people(tmp_path / "people", {"a": 6, "b": 6})
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    loaded = faces.load_faces({"source": "folder", "path": str(root), "input_size": 32})
    assert loaded.skipped == 1 and len(loaded.labels) == 12
    with pytest.raises(MlopsError, match=r"broken\.jpg: unreadable image .*on_bad_image=skip"):
        faces.load_faces({"source": "folder", "path": str(root), "input_size": 32, "on_bad_image": "fail"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"source": "folder"}, "needs data.path"),
        ({"source": "folder", "path": "/nonexistent"}, "no such folder"),
        ({"source": "imagenet"}, "data.source='imagenet' is unknown"),
        ({"source": "olivetti", "input_size": 16}, "at least 32 px"),
    ],
)
def test_bad_data_options(options: dict, message: str) -> None:
    with pytest.raises(MlopsError, match=message):
        faces.load_faces(options)


def test_empty_folder_and_too_few_classes(tmp_path: Path) -> None:
    (tmp_path / "empty" / "nobody").mkdir(parents=True)
    with pytest.raises(MlopsError, match="no .jpg/.jpeg/.png images"):
        faces.load_faces({"source": "folder", "path": str(tmp_path / "empty")})
    root = make_people(tmp_path / "one", {"solo": 8})
    with pytest.raises(MlopsError, match="only 1 class"):
        faces.load_faces({"source": "folder", "path": str(root)})


@pytest.mark.parametrize("shape", [(6, 32, 32), (6, 32, 32, 3), (6, 40, 30), (6, 40, 30, 3)])
def test_images_at_size_skip_pillow_and_come_out_byte_identical(shape: tuple[int, ...]) -> None:
    # The feature cache keys on these bytes: the fast path must not change one of them.
    pixels = np.random.default_rng(1).random(shape, dtype=np.float32)
    pixels[0, 0, 0] = 0.5 / 255  # a value that rounds half to even
    as_uint8 = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    converted = faces._to_rgb_uint8(pixels, 32)
    assert converted.dtype == np.uint8 and converted.shape == (6, 32, 32, 3) and converted.flags.c_contiguous
    np.testing.assert_array_equal(converted, faces._each_through_pillow(as_uint8, 32))


def test_olivetti_loads_as_pillow_converted_it(offline: dict) -> None:
    from sklearn.datasets import fetch_olivetti_faces

    gray = fetch_olivetti_faces(download_if_missing=False).images  # 64 x 64 floats in [0, 1]
    loaded = faces.load_faces({"source": "olivetti", "input_size": 64}).images
    np.testing.assert_array_equal(loaded, faces._each_through_pillow(np.rint(gray * 255.0).astype(np.uint8), 64))


def test_scikit_learn_faces_are_decoded_once_then_read_back_checked(
    offline: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "sklearn"
    home.mkdir()
    shutil.copy(Path(offline["SCIKIT_LEARN_DATA"]) / "olivetti_py3.pkz", home)  # a copy: its time is changed below
    options = {"source": "olivetti", "input_size": 32, "data_home": str(home)}
    lines: list[str] = []
    cache = FeatureCache(tmp_path / "cache", lines.append)
    decoded = faces.load_faces(options, cache)
    np.testing.assert_array_equal(decoded.images, faces.load_faces(options).images)  # what scikit-learn gives

    calls: list[int] = []
    real = faces._olivetti
    monkeypatch.setattr(faces, "_olivetti", lambda *args: calls.append(1) or real(*args))
    again = faces.load_faces(options, cache)
    assert calls == [] and lines[-1].startswith("faces: 400 images of 40 people from the cache")
    np.testing.assert_array_equal(again.images, decoded.images)
    np.testing.assert_array_equal(again.labels, decoded.labels)
    assert again.names == decoded.names and again.labels.dtype == np.int64

    (entry,) = (tmp_path / "cache").rglob("*.npz")
    entry.write_bytes(entry.read_bytes()[:1000])  # a damaged entry is decoded again, never trusted
    np.testing.assert_array_equal(faces.load_faces(options, cache).images, decoded.images)
    assert len(calls) == 1 and any("damaged" in line for line in lines)
    os.utime(home / "olivetti_py3.pkz", ns=(0, 0))  # scikit-learn's file changed: a new entry
    faces.load_faces(options, cache)
    assert len(calls) == 2 and len(list((tmp_path / "cache").rglob("*.npz"))) == 2


def test_split_is_stratified_and_reproducible() -> None:
    labels = np.repeat(np.arange(10), 10)
    data = faces.Faces(np.zeros((100, 1, 1, 3), np.uint8), labels, [str(i) for i in range(10)])
    first = faces.split(data, 0.2, 0.2, seed=7)
    second = faces.split(data, 0.2, 0.2, seed=7)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    for part in ("train", "val", "test"):
        assert set(labels[first[part]]) == set(range(10))  # every person in every split
    assert sum(len(v) for v in first.values()) == 100
    assert not set(first["train"]) & set(first["test"])


def test_head_overfits_one_batch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 64)).astype(np.float32)
    y = np.arange(32) % 4
    data = model.FaceData(
        {"train": x, "val": x, "test": x},
        {"train": y, "val": y, "test": y},
        ["a", "b", "c", "d"],
        np.zeros((32, 32, 32, 3), np.uint8),
        list(np.zeros((32, 32, 32, 3), np.uint8)),
        "none",
        32,
        0,
        None,
    )
    params = {
        "n_layers": 2,
        "units": [64, 32],
        "dropout": 0.0,
        "activation": "relu",
        "optimizer": "adam",
        "learning_rate": 1e-2,
        "batch_size": 32,
        "epochs": 80,
    }
    result = model.train(data, params, TrialContext(0, 0, lambda e, m: None, tmp_path))
    assert result.value == 1.0
    assert result.history["loss"][-1] < 0.05
    assert model.evaluate(data, result).value == 1.0


def test_weights_file_missing_names_the_fix() -> None:
    with pytest.raises(MlopsError, match="--weights imagenet\\|none\\|PATH"):
        backbone.weights_identity("/no/such/weights.h5", 0)
    assert backbone.weights_identity("none", 3) == "random-seed-3"


def test_imagenet_unavailable_offline_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Keras' own loader tries the download; a proxy on a closed loopback port keeps the attempt local.
    # urlopen caches its opener (with the proxy) process-wide: restore it, or later tests'
    # requests to 127.0.0.1 would go to the dead proxy.
    import urllib.request

    monkeypatch.setattr(urllib.request, "_opener", None)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(MlopsError) as error:
        backbone.load_base("imagenet", 32, 0)
    message = str(error.value)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert "--weights none" in message and "\n" not in message


def test_prepare_caches_features_of_real_faces(offline: dict, tmp_path: Path) -> None:
    """Olivetti through the face-pretrained base: computed once, then read from the cache."""
    from tests.conftest import FACE_WEIGHTS

    lines: list[str] = []
    manifest = PLUGIN.manifest
    ctx = StudyContext(
        manifest,
        {**manifest.data, "input_size": 32},
        {"weights": str(FACE_WEIGHTS)},
        1,
        tmp_path / "cache",
        lines.append,
    )
    first = model.prepare(ctx)
    assert ctx.facts["feature_cache_hit"] is False
    assert ctx.facts["features_seconds"] > 0  # reported, so `mlops tune` splits it out of `prepare`
    assert first.features["train"].shape[1] == 512
    assert {len(v) for v in first.labels.values()} == {240, 80}
    again = StudyContext(
        manifest,
        {**manifest.data, "input_size": 32},
        {"weights": str(FACE_WEIGHTS)},
        1,
        tmp_path / "cache",
        lines.append,
    )
    second = model.prepare(again)
    assert again.facts["feature_cache_hit"] is True
    np.testing.assert_array_equal(first.features["test"], second.features["test"])
    assert any("reused from the cache" in line for line in lines)
    # The photos' identities (what the promotion gate compares) are the same from the cache, one per photo.
    assert {k: len(v) for k, v in first.ids.items()} == {"train": 240, "val": 80, "test": 80}
    assert all(np.array_equal(first.ids[k], second.ids[k]) for k in first.ids)
    assert len(set(np.concatenate(list(first.ids.values())))) == 400


def png_header_bomb(path: Path, width: int, height: int) -> Path:
    """A 1-bit grey PNG declaring ``width x height`` pixels: valid chunks, one tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")
    )
    return path


def test_decompression_bomb_is_skipped_and_counted_or_fatal(tmp_path: Path) -> None:
    root = make_people(tmp_path / "people", {"a": 6, "b": 6})
    bomb = png_header_bomb(root / "a" / "bomb.png", 100_000, 100_000)  # 10 G pixels, 60 bytes
    pillow_limit = Image.MAX_IMAGE_PIXELS
    options = {"source": "folder", "path": str(root), "input_size": 32}
    loaded = faces.load_faces(options)  # the default limit (40 M) refuses it before decoding
    assert loaded.skipped == 1 and len(loaded.labels) == 12
    with pytest.raises(MlopsError) as error:
        faces.load_faces({**options, "on_bad_image": "fail"})
    message = str(error.value)
    assert message.startswith(f"{bomb}: more pixels than data.max_image_pixels=40000000")
    assert "on_bad_image=skip" in message and "\n" not in message
    assert pillow_limit == Image.MAX_IMAGE_PIXELS  # Pillow's global setting is restored, even on failure


@pytest.mark.parametrize("limit", [40_000, 60_000])  # 300x300 is over twice the first, within twice the second
def test_configured_pixel_limit_refuses_a_real_large_image(tmp_path: Path, limit: int) -> None:
    root = make_people(tmp_path / "people", {"a": 6, "b": 6})
    Image.new("RGB", (300, 300), (200, 10, 10)).save(root / "b" / "large.png")
    pillow_limit = Image.MAX_IMAGE_PIXELS
    options = {"source": "folder", "path": str(root), "input_size": 32}
    assert faces.load_faces(options).skipped == 0  # under the default limit it is an ordinary image
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning escapes the loader
        loaded = faces.load_faces({**options, "max_image_pixels": limit})
    assert loaded.skipped == 1 and len(loaded.labels) == 12
    assert pillow_limit == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("value", [0, -5, 2.5, "lots", True])
def test_bad_max_image_pixels_names_the_setting(tmp_path: Path, value: object) -> None:
    root = make_people(tmp_path / "people", {"a": 6, "b": 6})
    with pytest.raises(MlopsError, match=r"data\.max_image_pixels=.*whole number of pixels"):
        faces.load_faces({"source": "folder", "path": str(root), "max_image_pixels": value})


def test_sixteen_bit_images_are_scaled_by_bit_depth(tmp_path: Path) -> None:
    root = make_people(tmp_path / "people", {"a": 6, "b": 6})
    (root / "c").mkdir()
    levels = (0, 30_000, 65_535)
    for value in levels:
        for copy in range(2):  # two per level: person c keeps >= 5 images
            pixels = np.full((40, 40), value, np.uint16)
            pixels[0, 0] = copy  # distinct content, so no duplicate warning
            Image.fromarray(pixels).save(root / "c" / f"level_{value}_{copy}.png")
    with Image.open(root / "c" / "level_30000_0.png") as picture:
        assert picture.mode == "I;16"  # the case the loader must scale
    loaded = faces.load_faces({"source": "folder", "path": str(root), "input_size": 32})
    c_images = loaded.images[loaded.labels == loaded.names.index("c")]
    centres = sorted({int(image[16, 16, 0]) for image in c_images})
    assert centres == [0, round(30_000 / 257), 255]  # 30000 was clipped to 255 (white) before


def test_upper_and_mixed_case_extensions_are_read(tmp_path: Path) -> None:
    root = make_people(tmp_path / "people", {"a": 6, "b": 6})
    for i, suffix in enumerate((".JPG", ".Png", ".JPEG", ".jpeg")):
        Image.new("RGB", (40, 40), (i * 40, 90, 90)).save(root / "b" / f"extra_{i}{suffix}")
    loaded = faces.load_faces({"source": "folder", "path": str(root), "input_size": 32})
    assert sorted(np.bincount(loaded.labels).tolist()) == [6, 10]


def test_same_image_under_two_people_is_warned_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_people(tmp_path / "people", {"Ada_Lovelace": 6, "Alan_Turing": 6})
    original = root / "Ada_Lovelace" / "Ada_Lovelace_0001.png"
    copy = root / "Alan_Turing" / "misfiled.png"
    shutil.copyfile(original, copy)
    shutil.copyfile(original, root / "Ada_Lovelace" / "again.png")  # twice under one person: not warned
    with caplog.at_level(logging.WARNING):
        loaded = faces.load_faces({"source": "folder", "path": str(root), "input_size": 32})
    assert loaded.duplicates == 1
    warned = [r.getMessage() for r in caplog.records if "the same image" in r.getMessage()]
    assert warned == [f"the same image is filed under 'Ada Lovelace' ({original}) and 'Alan Turing' ({copy})"]


def test_pruned_classes_are_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_people(tmp_path / "people", {"Ada_Lovelace": 6, "Alan_Turing": 7, "Grace_Hopper": 2})
    with caplog.at_level(logging.WARNING):
        faces.load_faces({"source": "folder", "path": str(root), "input_size": 32, "min_images_per_class": 5})
    assert "pruned 1 class(es) with fewer than 5 images: Grace Hopper (2)" in caplog.text
    caplog.clear()
    labels = np.concatenate([np.zeros(5, np.int64), np.ones(5, np.int64), np.arange(2, 42)])
    many = faces.Faces(np.zeros((50, 1, 1, 3), np.uint8), labels, [f"p{i}" for i in range(42)])
    with caplog.at_level(logging.WARNING):
        kept = faces.prune_small_classes(many, 5)
    assert kept.names == ["p0", "p1"]
    named = ", ".join(f"p{i} (1)" for i in range(2, 32))
    assert f"pruned 40 class(es) with fewer than 5 images: {named} and 10 more" in caplog.text


def test_prepare_reports_skipped_and_duplicate_images(tmp_path: Path) -> None:
    root = make_people(tmp_path / "people", {"a": 6, "b": 6})
    png_header_bomb(root / "a" / "bomb.png", 50_000, 50_000)
    shutil.copyfile(root / "a" / "a_0001.png", root / "b" / "copy.png")
    manifest = PLUGIN.manifest
    data = {**manifest.data, "source": "folder", "path": str(root), "input_size": 32, "min_images_per_class": 2}
    data["align"] = "none"  # generated tints hold no faces (alignment: tests/models/test_face_align.py)
    ctx = StudyContext(manifest, data, {"weights": "none"}, 0, tmp_path / "cache", lambda line: None)
    prepared = model.prepare(ctx)
    assert (ctx.facts["skipped_images"], ctx.facts["duplicate_images"], ctx.facts["n_images"]) == (1, 1, 13)
    # A photo is named by its file's content: the copy filed under b is the same example as a_0001.
    ids = np.concatenate(list(prepared.ids.values()))
    assert hashlib.sha256((root / "a" / "a_0001.png").read_bytes()).hexdigest()[:16] in ids
    assert len(ids) == 13 and len(set(ids)) == 12


def test_a_registered_full_model_is_scored_on_the_test_images_like_its_head(tmp_path: Path) -> None:
    """The promotion gate re-scores a champion (images in) on a new split: same answers as its head on features."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(24, 32, 32, 3), dtype=np.uint8)
    features = backbone.feature_extractor(backbone.load_base("none", 32, 0))(images)
    y = np.arange(24) % 3
    split = {"train": features, "val": features, "test": features}
    data = model.FaceData(split, {k: y for k in split}, ["a", "b", "c"], images, list(images), "none", 32, 0, None)
    params = {**model._DEFAULTS, "epochs": 5}
    result = model.train(data, params, TrialContext(0, 0, lambda e, m: None, tmp_path))
    save_model(model.export(data, result), tmp_path / "registered")  # as the registry stores it
    full = promotion.load_model(str(tmp_path / "registered"))
    on_features = model.evaluate(data, result)
    on_images = model.evaluate(data, TrainResult(float("nan"), full))
    assert on_images.n == 24
    assert np.array_equal(on_images.y_pred, on_features.y_pred)
    other = model.FaceData(split, {k: y for k in split}, ["a", "b"], images, list(images), "none", 32, 0, None)
    with pytest.raises(ValueError, match="names 3 people, these data 2"):
        model.evaluate(other, TrainResult(float("nan"), full))
