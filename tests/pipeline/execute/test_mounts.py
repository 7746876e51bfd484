"""What the Docker runner mounts and gives away (``pipeline.execute.mounts``): no engine.

We run as root here, so a chown really happens: these tests prove it touches only what the
call itself created."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.errors import MlopsError
from pipeline.execute.mounts import container_user, mounts

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving files away needs root")
USER = "1000:1000"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    folder.chmod(0o755)
    return folder


@needs_root
def test_an_existing_folder_like_tmp_keeps_its_owner(tmp_path: Path, work: Path) -> None:
    shared_tmp = tmp_path / "tmp"  # stands for /tmp: world-writable, others' files inside
    shared_tmp.mkdir()
    shared_tmp.chmod(0o1777)
    other = shared_tmp / "someone-elses.txt"
    other.write_text("x")
    os.chown(other, 4242, 4242)
    nested = shared_tmp / "their-folder"
    nested.mkdir()
    os.chown(nested, 4243, 4243)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{shared_tmp}/mlflow.db"}

    found = dict(mounts(env, work, user=USER))

    assert found[shared_tmp] is False  # mounted read-write, as it is
    assert shared_tmp.stat().st_uid == 0
    assert other.stat().st_uid == 4242 and nested.stat().st_uid == 4243


@needs_root
def test_only_the_folder_this_call_created_is_given_away(tmp_path: Path, work: Path) -> None:
    runs = tmp_path / "new" / "deeper" / "runs"
    found = dict(mounts({"MLOPS_RUNS_DIR": str(runs)}, work, user=USER))
    assert found[runs] is False
    assert runs.stat().st_uid == 1000
    assert (tmp_path / "new").stat().st_uid == 0  # a parent it made: only entered, not given
    assert tmp_path.stat().st_uid == 0


def test_an_existing_state_folder_the_user_cannot_write_is_one_clear_error(tmp_path: Path, work: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o555)  # nobody but root may write: neither we (not root) nor 1000:1000
    user = USER if os.geteuid() == 0 else container_user()
    with pytest.raises(MlopsError) as error:
        mounts({"MLOPS_RUNS_DIR": str(runs)}, work, user=user)
    message = str(error.value)
    assert message.startswith(f"MLOPS_RUNS_DIR: {runs} is not writable by the container's user {user}")
    assert f"chown {user} {runs}" in message and "\n" not in message
    assert runs.stat().st_uid == os.geteuid()  # still not given away


def test_a_flag_names_the_folder_in_the_error(tmp_path: Path, work: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    store.chmod(0o555)
    with pytest.raises(MlopsError, match=r"^--storage: .* is not writable"):
        mounts({}, work, user="4242:4242", args=["tune", "m", "--storage", f"sqlite:///{store}/optuna.db"])


def test_a_read_only_database_file_is_one_clear_error(tmp_path: Path, work: Path) -> None:
    store = tmp_path / "mlruns"
    store.mkdir()
    store.chmod(0o777)
    (store / "mlflow.db").write_bytes(b"")
    (store / "mlflow.db").chmod(0o644)  # the owner's (root's or ours), not 4242's
    with pytest.raises(MlopsError, match=r"^MLFLOW_TRACKING_URI: .*mlflow.db is not writable"):
        mounts({"MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db"}, work, user="4242:4242")


def test_tune_mounts_checkout_read_only_and_only_its_state_read_write(tmp_path: Path, work: Path) -> None:
    data = tmp_path / "shared"
    data.mkdir()
    (data / "weights.h5").write_bytes(b"w")
    args = [
        "tune",
        "/app/models/m",
        "--runs-dir",
        f"{work}/mlops-runs",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--storage",
        f"sqlite:///{tmp_path}/study/optuna.db",
        "--weights",
        str(data / "weights.h5"),
    ]
    env = {"MLOPS_TRACKING_URI": "sqlite:///mlruns/mlflow.db", "MLOPS_SHARED_DATA": str(data)}
    found = dict(mounts(env, work, user=container_user(), args=args))
    assert found == {
        work: True,  # the checkout
        work / "mlops-runs": False,
        work / "mlruns": False,  # the relative tracking store, and MLflow's artifacts
        tmp_path / "cache": False,
        tmp_path / "study": False,
        data: True,
    }
    assert sorted(p.name for p in work.iterdir()) == ["mlops-runs", "mlruns"]


def test_tune_defaults_are_mounted_too(work: Path) -> None:
    found = dict(mounts({}, work, user=container_user(), args=["tune", "/app/models/m"]))
    assert found == {work: True, work / "mlops-runs": False, work / "mlruns": False}
    assert dict(mounts({}, work, user=container_user(), args=["--help"])) == {work: True}


def test_a_store_in_the_checkout_root_is_refused(work: Path) -> None:
    with pytest.raises(
        MlopsError, match=r"^MLFLOW_TRACKING_URI: .* is the checkout, which the container mounts read-only"
    ):
        mounts({"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}, work, user=container_user())


def test_a_writable_parent_does_not_hide_the_read_only_checkout(tmp_path: Path, work: Path) -> None:
    tmp_path.chmod(0o777)
    found = dict(mounts({"MLOPS_CACHE_DIR": str(tmp_path)}, work, user=container_user()))
    assert found == {tmp_path: False, work: True}


def test_container_user_is_ours_or_the_images_for_root() -> None:
    expected = "1000:1000" if os.geteuid() == 0 else f"{os.geteuid()}:{os.getegid()}"
    assert container_user() == expected
