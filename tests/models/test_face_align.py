"""Face detection and alignment (``data.align``) on a few real raw LFW photos copied at test time."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import MlopsError
from pipeline.sdk.contract import StudyContext, load_plugin
from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = load_plugin(ROOT / "models" / "face_vgg16")
model = PLUGIN.module
align = __import__("mlops_models.face_vgg16.align", fromlist=["align_faces"])
aligner = __import__("mlops_models.face_vgg16.face_aligner", fromlist=["FaceAligner"])
faces = __import__("mlops_models.face_vgg16.faces", fromlist=["load_faces"])
LFW_RAW = SHARED / "scikit_learn_data" / "lfw_home" / "lfw_funneled"
PEOPLE = ("Colin_Powell", "Tony_Blair")


def raw_photo(person: str, number: int) -> Path:
    path = LFW_RAW / person / f"{person}_{number:04d}.jpg"
    if not path.is_file():
        pytest.skip(f"raw LFW photos not found at {LFW_RAW} (set MLOPS_SHARED_DATA)")
    return path


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def people_folder(root: Path, per_person: int = 3) -> Path:
    """A folder per person holding copies of their raw 250x250 LFW photos."""
    for person in PEOPLE:
        (root / person).mkdir(parents=True)
        for number in range(1, per_person + 1):
            shutil.copy(raw_photo(person, number), root / person)
    return root


def no_face_photo(path: Path) -> Path:
    """A real photo without a face: scikit-learn's sample picture of a flower."""
    from sklearn.datasets import load_sample_image

    Image.fromarray(load_sample_image("flower.jpg")).save(path)
    return path


def context(tmp_path: Path, data: dict[str, object], lines: list[str]) -> StudyContext:
    return StudyContext(PLUGIN.manifest, data, {"weights": "none"}, 0, tmp_path / "cache", lines.append)


@pytest.fixture(scope="module")
def aligner_112() -> object:
    return aligner.FaceAligner(112)


def test_similarity_transform_recovers_a_rotation_scale_and_shift() -> None:
    angle, scale, shift = np.deg2rad(20.0), 0.6, np.array([12.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = np.array([[90.0, 110.0], [160.0, 108.0], [125.0, 140.0], [98.0, 170.0], [152.0, 168.0]])
    target = source @ (scale * rotation).T + shift
    matrix = aligner.similarity_transform(source, target)
    np.testing.assert_allclose(matrix, np.hstack([scale * rotation, shift[:, None]]), atol=1e-9)


def test_detection_finds_the_face_in_a_raw_photo(aligner_112: object) -> None:
    (points,) = aligner_112.landmarks([rgb(raw_photo("Colin_Powell", 1))])
    assert points is not None
    left, top, right, bottom = faces.LFW_FACE_BOX  # where LFW's funneled photos hold the face
    assert ((points[:, 0] > left) & (points[:, 0] < right) & (points[:, 1] > top) & (points[:, 1] < bottom)).all()
    left_eye, right_eye, nose = points[0], points[1], points[2]
    assert left_eye[0] < nose[0] < right_eye[0]  # image left to right, as the template has them
    assert nose[1] > max(left_eye[1], right_eye[1])


def test_aligned_eye_centres_land_on_the_template(aligner_112: object) -> None:
    """Detected again in the crop, each eye is where the fitted transform put it and near the template.

    Five points cannot all sit on the template for a turned head (the fit is least squares), so the
    template check allows a few pixels; the warp itself must put the eyes where the fit says.
    """
    photos = [rgb(raw_photo(person, number)) for person in PEOPLE for number in (1, 2, 3)]
    crops, found = aligner_112.align(photos)
    assert found.all()
    template_eyes = aligner.ARCFACE_112[:2]
    for photo, crop in zip(photos, crops, strict=True):
        (before,) = aligner_112.landmarks([photo])
        matrix = aligner.similarity_transform(before, aligner_112.template)
        fitted_eyes = before[:2] @ matrix[:, :2].T + matrix[:, 2]
        (after,) = aligner_112.landmarks([crop])
        assert after is not None, "no face found again in the aligned crop"
        assert np.linalg.norm(after[:2] - fitted_eyes, axis=1).max() < 2.0
        assert np.linalg.norm(after[:2] - template_eyes, axis=1).max() < 6.0


def test_a_photos_crop_does_not_depend_on_its_batch_mates(aligner_112: object) -> None:
    """Training aligns a whole data set, serving a few photos: each must get the same crop.

    Batched, MTCNN moved George_W_Bush_0001's landmarks by 0.7 px between these two batches
    (a crop 30 grey levels off), and a served photo no longer met the crop its head learned.
    """
    people = ("Colin_Powell", "George_W_Bush", "Serena_Williams")
    photos = [rgb(raw_photo(person, number)) for person in people for number in range(1, 11)]
    together, _ = aligner_112.align(photos)
    few = [0, 1, 10, 16, 24, 28]  # the batch of a served request that moved Bush's first photo
    apart, _ = aligner_112.align([photos[i] for i in few])
    np.testing.assert_array_equal(apart, together[few])


def test_photos_detected_in_threads_get_the_crops_they_get_one_at_a_time(aligner_112: object) -> None:
    people = ("Colin_Powell", "George_W_Bush", "Serena_Williams")
    photos = [rgb(raw_photo(person, number)) for person in people for number in range(1, 11)]
    one_at_a_time, found = aligner.FaceAligner(112, threads=1).align(photos)
    threaded, _ = aligner_112.align(photos)
    assert found.all()
    np.testing.assert_array_equal(threaded, one_at_a_time)


def test_a_photo_without_a_face_is_skipped_and_counted(tmp_path: Path) -> None:
    root = people_folder(tmp_path / "people")
    no_face_photo(root / PEOPLE[0] / "flower.jpg")
    data = {"source": "folder", "path": str(root), "input_size": 64, "min_images_per_class": 2}
    lines: list[str] = []
    ctx = context(tmp_path, data, lines)
    aligned = align.align_faces(ctx, faces.load_faces(data))
    assert ctx.facts["no_face_images"] == 1
    assert aligned.images.shape == (6, 64, 64, 3)
    assert aligned.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert "align: no face found in 1 of 7 image(s); skipped" in lines


def test_align_fallback_whole_keeps_the_photo_without_a_face(tmp_path: Path) -> None:
    root = people_folder(tmp_path / "people")
    no_face_photo(root / PEOPLE[0] / "flower.jpg")
    data = {"source": "folder", "path": str(root), "input_size": 64, "min_images_per_class": 2}
    loaded = faces.load_faces(data)
    ctx = context(tmp_path, {**data, "align_fallback": "whole"}, [])
    aligned = align.align_faces(ctx, loaded)
    assert ctx.facts["no_face_images"] == 1
    assert aligned.images.shape == (7, 64, 64, 3)
    # Files sort Colin_Powell_0001..0003, flower.jpg: only the flower keeps the loader's whole-photo image.
    whole = [i for i in range(7) if np.array_equal(aligned.images[i], loaded.images[i])]
    assert whole == [3]  # Colin_Powell_0001..0003 then flower.jpg: only the flower keeps the loader's image


def test_aligned_crops_are_cached_so_alignment_runs_once(tmp_path: Path) -> None:
    root = people_folder(tmp_path / "people", per_person=2)
    data = {"source": "folder", "path": str(root), "input_size": 48, "min_images_per_class": 2}
    first_lines: list[str] = []
    first_ctx = context(tmp_path, data, first_lines)
    first_ctx.feature_shard_size = 3  # two shards: resumable like the features
    first = align.align_faces(first_ctx, faces.load_faces(data))
    assert [line for line in first_lines if line.endswith(" done")] == [
        "align: images 1-3 of 4 done",
        "align: images 4-4 of 4 done",
    ]
    second_lines: list[str] = []
    second = align.align_faces(context(tmp_path, data, second_lines), faces.load_faces(data))
    assert any(line.startswith("align: 4 images in") for line in first_lines)
    # The shard machinery speaks of alignment here, not of features.
    assert any(line.startswith("align: published ") for line in first_lines)
    assert not any(line.startswith("features:") for line in first_lines)
    assert [line.split(" (")[0] for line in second_lines] == ["align: crops reused from the cache"]
    np.testing.assert_array_equal(first.images, second.images)


def test_the_feature_cache_key_names_the_alignment() -> None:
    folder = {"source": "folder", "path": "/x"}
    assert align.alignment_identity(folder) == "mtcnn==1.0.0/arcface5/detect128/skip"
    assert align.alignment_identity({**folder, "align": "none"}) == "none"
    assert align.alignment_identity({"source": "lfw"}) == "none"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"source": "lfw", "align": "mtcnn"}, "data.align=mtcnn needs data.source=folder"),
        ({"source": "folder", "align": "dlib"}, "data.align='dlib' is unknown; use mtcnn or none"),
        ({"source": "folder", "align_fallback": "blur"}, "data.align_fallback='blur' is unknown; use skip or whole"),
    ],
)
def test_bad_align_options_are_one_error_line(tmp_path: Path, options: dict[str, object], message: str) -> None:
    empty = faces.Faces(np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 1]), ["a", "b"], sources=[b"", b""])
    with pytest.raises(MlopsError, match="^" + re.escape(message)):
        align.align_faces(context(tmp_path, options, []), empty)


def test_align_on_cropped_data_is_refused_before_any_photo_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path / "empty"))  # loading would fail another way
    data = {"source": "lfw", "align": "mtcnn", "input_size": 32}
    for step in (model.prepare, model.prepare_features):
        with pytest.raises(MlopsError, match="^data.align=mtcnn needs data.source=folder"):
            step(context(tmp_path, data, []))


def test_model_yaml_declares_the_align_options_with_their_choices() -> None:
    accepts = PLUGIN.manifest.accepts
    for name, value in (("align", "mtcnn"), ("align", "none"), ("align", None), ("align_fallback", "whole")):
        accepts.check_one("data", name, value, "--set")
    with pytest.raises(MlopsError, match=r"^--set: data.align='dlib' is unknown; use one of mtcnn, none$"):
        accepts.check_one("data", "align", "dlib", "--set")
    with pytest.raises(MlopsError, match=r"^--set: data.align_fallback='blur' is unknown; use one of skip, whole$"):
        accepts.check_one("data", "align_fallback", "blur", "--set")


def test_prepare_aligns_folder_photos_by_default_and_reports_the_photos_without_a_face(tmp_path: Path) -> None:
    root = people_folder(tmp_path / "people", per_person=5)  # enough for a three-way split
    no_face_photo(root / PEOPLE[1] / "flower.jpg")
    manifest = PLUGIN.manifest
    data = {**manifest.data, "source": "folder", "path": str(root), "input_size": 32, "min_images_per_class": 2}
    ctx = context(tmp_path, data, [])
    PLUGIN.module.prepare(ctx)
    assert (ctx.facts["alignment"], ctx.facts["no_face_images"], ctx.facts["n_images"]) == (
        "mtcnn==1.0.0/arcface5/detect128/skip",
        1,
        10,
    )
    assert ctx.notes == ["no face found in 1 of 11 photos: skipped"]  # what the e-mail and CI summary say


def test_a_folder_without_any_face_is_one_error_line(tmp_path: Path) -> None:
    from sklearn.datasets import load_sample_image

    for person, picture in (("a", "flower.jpg"), ("b", "china.jpg")):
        (tmp_path / "people" / person).mkdir(parents=True)
        Image.fromarray(load_sample_image(picture)).save(tmp_path / "people" / person / picture)
    data = {"source": "folder", "path": str(tmp_path / "people"), "input_size": 32, "min_images_per_class": 1}
    message = f"data.path={tmp_path / 'people'}: no face found in any of its 2 photos; check the folder"
    with pytest.raises(MlopsError, match="^" + re.escape(message)):
        align.align_faces(context(tmp_path, data, []), faces.load_faces(data))


def test_lfw_names_are_plain_strings(offline: dict[str, str]) -> None:
    """Names go into the exported model's YAML config: a numpy string there crashed ``mlops tune`` on LFW."""
    loaded = faces.load_faces({"source": "lfw", "input_size": 32, "min_faces_per_person": 100})
    assert loaded.names and all(type(name) is str for name in loaded.names)
