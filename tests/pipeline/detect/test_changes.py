"""Detect: real Git repositories in tmp_path, one commit per scenario."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import git
import pytest

from pipeline import cli
from pipeline.detect.changes import ZERO_SHA, ChangeSet, changed_models
from pipeline.errors import MlopsError

BASE = {
    "README.md": "# project\n",
    "src/helpers.py": "x = 1\n",
    "models/README.md": "one folder per model\n",
    "models/face_vgg16/model.yaml": "name: face_vgg16\n",
    "models/face_vgg16/model.py": "def train(params, report):\n    return 0.9\n",
    "models/face_vgg16/src/blocks.py": "def block():\n    return None\n",
    "models/house_prices/train.ipynb": '{"cells": []}\n',
    "models/notes_only/notes.txt": "not a model: no model.yaml, no code\n",
}


class Repo:
    """A scratch repository with a helper that writes, deletes and commits in one go."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.git = git.Repo.init(root)
        with self.git.config_writer() as config:
            config.set_value("user", "name", "Test")
            config.set_value("user", "email", "test@example.com")
            config.set_value("commit", "gpgsign", "false")

    def commit(self, files: dict[str, str | None], message: str = "change") -> str:
        """Write each file (``None`` deletes it), commit everything, return the SHA."""
        for name, text in files.items():
            path = self.root / name
            if text is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        self.git.git.add(A=True)
        self.git.git.commit("-m", message, "--allow-empty")
        return self.git.head.commit.hexsha

    def move(self, old: str, new: str) -> str:
        (self.root / new).parent.mkdir(parents=True, exist_ok=True)
        self.git.git.mv(old, new)
        return self.commit({}, f"move {old} to {new}")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    scratch = Repo(tmp_path / "repo")
    scratch.commit(BASE, "first")
    return scratch


def detect(repo: Repo, before: str | None, after: str = "HEAD") -> ChangeSet:
    return changed_models(repo.root, before, after)


@pytest.mark.parametrize("before", [None, "", ZERO_SHA])
def test_first_push_counts_every_model_present(repo: Repo, before: str | None) -> None:
    changes = detect(repo, before)
    assert changes.changed == ["models/face_vgg16", "models/house_prices"]
    assert changes.deleted == []
    assert changes.before is None
    assert changes.after == repo.git.head.commit.hexsha


def test_first_push_without_models_folder_is_empty(tmp_path: Path) -> None:
    scratch = Repo(tmp_path / "repo")
    scratch.commit({"README.md": "hi\n"})
    assert detect(scratch, None).changed == []


def test_edit_of_a_nested_file_marks_its_model(repo: Repo) -> None:
    before = repo.git.head.commit.hexsha
    repo.commit({"models/face_vgg16/src/blocks.py": "def block():\n    return 1\n"})
    assert detect(repo, before).changed == ["models/face_vgg16"]


def test_files_outside_model_folders_are_ignored(repo: Repo) -> None:
    before = repo.git.head.commit.hexsha
    repo.commit(
        {
            "README.md": "# changed\n",
            "src/helpers.py": "x = 2\n",
            "models/README.md": "changed\n",
            "models/notes_only/notes.txt": "still not a model\n",
        }
    )
    changes = detect(repo, before)
    assert changes.changed == [] and changes.deleted == []


def test_added_model_and_a_data_file_in_another(repo: Repo) -> None:
    before = repo.git.head.commit.hexsha
    repo.commit(
        {
            "models/churn/model.py": "import sklearn\n",
            "models/house_prices/data/prices.csv": "a,b\n1,2\n",
        }
    )
    assert detect(repo, before).changed == ["models/churn", "models/house_prices"]


def test_model_yaml_alone_makes_a_model_folder(repo: Repo) -> None:
    before = repo.git.head.commit.hexsha
    repo.commit({"models/notes_only/model.yaml": "name: notes_only\n"})
    assert detect(repo, before).changed == ["models/notes_only"]


def test_deleted_model_is_reported_apart(repo: Repo) -> None:
    before = repo.git.head.commit.hexsha
    repo.git.git.rm("-r", "models/house_prices")
    repo.commit({}, "drop house_prices")
    changes = detect(repo, before)
    assert changes.changed == []
    assert changes.deleted == ["models/house_prices"]


def test_deleting_one_file_of_a_model_changes_it(repo: Repo) -> None:
    before = repo.git.head.commit.hexsha
    repo.commit({"models/face_vgg16/src/blocks.py": None})
    changes = detect(repo, before)
    assert changes.changed == ["models/face_vgg16"] and changes.deleted == []


def test_renamed_model_folder_is_changed_under_its_new_name(repo: Repo) -> None:
    before = repo.git.head.commit.hexsha
    repo.move("models/face_vgg16", "models/face_resnet")
    changes = detect(repo, before)
    assert changes.changed == ["models/face_resnet"]
    assert changes.deleted == ["models/face_vgg16"]


def test_renamed_file_inside_a_model(repo: Repo) -> None:
    before = repo.git.head.commit.hexsha
    repo.move("models/face_vgg16/src/blocks.py", "models/face_vgg16/src/layers.py")
    assert detect(repo, before).changed == ["models/face_vgg16"]


def test_file_moved_between_models_changes_both(repo: Repo) -> None:
    before = repo.git.head.commit.hexsha
    repo.move("models/face_vgg16/src/blocks.py", "models/house_prices/blocks.py")
    assert detect(repo, before).changed == ["models/face_vgg16", "models/house_prices"]


def test_range_over_several_commits_and_explicit_after(repo: Repo) -> None:
    before = repo.git.head.commit.hexsha
    middle = repo.commit({"models/face_vgg16/model.py": "def train(p, r):\n    return 1\n"})
    repo.commit({"models/churn/model.py": "x = 1\n"})
    assert detect(repo, before).changed == ["models/churn", "models/face_vgg16"]
    assert detect(repo, before, after=middle).changed == ["models/face_vgg16"]
    assert detect(repo, middle[:10]).changed == ["models/churn"]  # short SHAs resolve
    assert detect(repo, "HEAD", "HEAD").changed == []


def test_custom_models_dir(tmp_path: Path) -> None:
    scratch = Repo(tmp_path / "repo")
    first = scratch.commit({"ml/models/a/model.py": "x = 1\n", "models/b/model.py": "x = 1\n"})
    scratch.commit({"ml/models/a/model.py": "x = 2\n", "models/b/model.py": "x = 2\n"})
    changes = changed_models(scratch.root, first, models_dir="ml/models/")
    assert changes.changed == ["ml/models/a"]
    assert changed_models(scratch.root, None, models_dir="ml/models").changed == ["ml/models/a"]


def test_unknown_sha_names_it_and_the_fix(repo: Repo) -> None:
    with pytest.raises(MlopsError, match=r"unknown commit 'deadbeef' .*fetch") as error:
        detect(repo, "deadbeef")
    assert error.value.exit_code == 2
    with pytest.raises(MlopsError, match="unknown commit 'nope'"):
        detect(repo, None, after="nope")


def test_not_a_git_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(MlopsError, match=r"plain: not a Git repository.*--repo"):
        changed_models(plain, None)
    with pytest.raises(MlopsError, match="missing: no such folder"):
        changed_models(tmp_path / "missing", None)


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str):
    """Run ``mlops`` in-process through its real entry point; return (code, out, err)."""
    monkeypatch.setattr(sys, "argv", ["mlops", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cli_prints_one_folder_per_line(
    repo: Repo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = repo.git.head.commit.hexsha
    repo.git.git.rm("-r", "models/house_prices")
    repo.commit({"models/face_vgg16/model.py": "x = 3\n"})
    code, out, err = run_cli(monkeypatch, capsys, "detect", "--repo", str(repo.root), "--before", before)
    assert code == 0
    assert out.splitlines() == ["models/face_vgg16"]
    assert "deleted: models/house_prices" in err


def test_cli_json_on_a_first_push(
    repo: Repo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("detect", "--repo", str(repo.root), "--before", ZERO_SHA, "--after", "HEAD", "--json")
    code, out, _ = run_cli(monkeypatch, capsys, *args)
    assert code == 0
    assert json.loads(out) == {
        "changed": ["models/face_vgg16", "models/house_prices"],
        "deleted": [],
        "before": None,
        "after": repo.git.head.commit.hexsha,
    }


def test_cli_unknown_sha_is_one_error_line(
    repo: Repo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "detect", "--repo", str(repo.root), "--before", "abc123")
    assert code == 2
    assert out == ""
    assert err.startswith("error: unknown commit 'abc123'") and len(err.splitlines()) == 1
