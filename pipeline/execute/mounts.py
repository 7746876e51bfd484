"""What a Docker runner's container sees of the host: its environment, mounts and network.

The container runs pushed model code, so it sees as little as works: the allow-listed
variables of ``pipeline.execute.tune_env``; the checkout read-only; read-write only the folders the
tune stage writes (the runs dir, the feature cache, the folder of a SQLite tracking store
and of a SQLite study store, the checkout's ``mlruns/`` where MLflow puts artifacts); the
data folders (``KERAS_HOME``, ``MLOPS_SHARED_DATA``, ...) read-only; and no network unless
the tracking server or the study storage is remote.

Host folders are never given away: a missing state folder is created and, when we are root
(the container then runs as 1000:1000), only a folder this call created is chowned, and
only that folder, never what is inside or above it. An existing folder is mounted as it
is; one the container's user cannot write is an ``MlopsError`` naming its setting.

These are policy about the host's files, apart from ``pipeline.execute.runners``, which starts and
stops the container: the rules can be read and tested without an engine.

Example::

    env = container_env(Environment.from_os(), {"MLOPS_RUNS_DIR": "runs"})  # the CLI takes the snapshot
    for path, read_only in mounts(env, Path.cwd(), user="1000:1000"):
        print(path, "ro" if read_only else "rw")
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pipeline.errors import MlopsError
from pipeline.execute.tune_env import flag_value, is_remote, storage_url, tracking_uri, tune_environment

# The user the image's files belong to (its ``USER``): the container runs as it when we are root.
IMAGE_USER = "1000:1000"
# Data the container reads but must never change: mounted read-only (a file: its folder).
# scripts/offline-env.sh exports these; its KERAS_HOME and SCIKIT_LEARN_DATA hold symlinks
# into MLOPS_SHARED_DATA, which resolve inside the container only with it mounted.
READ_ONLY_NAMES = (
    "KERAS_HOME",
    "SCIKIT_LEARN_DATA",
    "MLOPS_CONFIG",
    "MLOPS_SHARED_DATA",
    "MLOPS_FACE_WEIGHTS",
    "MLOPS_WEIGHTS",
)
# The tune stage's default runs folder and MLflow's default artifact root, both relative to
# the working directory (MLflow puts a SQLite store's artifacts in ./mlruns).
DEFAULT_RUNS_DIR = "mlops-runs"
ARTIFACT_DIR = "mlruns"


def container_env(host_env: Mapping[str, str], env: Mapping[str, str], args: Sequence[str] = ()) -> dict[str, str]:
    """The variables the container gets: the allow-listed ones of ``host_env``, then ``env``'s.

    Args:
        host_env: the host's environment snapshot (``Environment``, taken by the CLI).
        env: the variables the caller sets on purpose; they pass as they are and win.
        args: the ``mlops`` command line (its ``--tracking-uri`` counts).
    """
    return tune_environment(host_env, env, args=tuple(args))


def container_user() -> str:
    """``uid:gid`` the container runs as: ours, or the image's user when we are root."""
    if os.geteuid() == 0:
        return IMAGE_USER
    return f"{os.geteuid()}:{os.getegid()}"


def needs_network(env: Mapping[str, str], args: Sequence[str] = ()) -> bool:
    """True when the tracking server or the study storage is reached over the network."""
    uri = tracking_uri(env, tuple(args)) or ""
    return is_remote(uri) or uri.startswith("databricks") or is_remote(storage_url(env, tuple(args)))


def state_paths(env: Mapping[str, str], args: Sequence[str], workdir: Path) -> list[tuple[Path, str]]:
    """``(folder, the setting naming it)`` for each host folder the container writes.

    Flags win over variables, as in ``mlops tune``. For ``tune`` the defaults count too:
    ``mlops-runs`` and ``mlruns`` under ``workdir``.
    """
    args = tuple(args)
    tune = bool(args) and args[0] == "tune"
    found: list[tuple[Path, str]] = []
    for flag, name, default in (
        ("--runs-dir", "MLOPS_RUNS_DIR", DEFAULT_RUNS_DIR),
        ("--cache-dir", "MLOPS_CACHE_DIR", None),
    ):
        value, source = _setting(args, flag, env, name)
        if value is None and tune and default:
            value, source = default, f"the default {flag}"
        if value:
            found.append((_absolute(value, workdir), source))
    for url, source in (
        (tracking_uri(env, args), _source(args, "--tracking-uri", env, "MLOPS_TRACKING_URI", "MLFLOW_TRACKING_URI")),
        (storage_url(env, args), _source(args, "--storage", env, "MLOPS_STORAGE")),
    ):
        folder = _store_folder(url or "", workdir)
        if folder is not None:
            found.append((folder, source))
    if tune:
        found.append((workdir / ARTIFACT_DIR, "MLflow's artifact folder ./mlruns"))
    return found


def data_paths(env: Mapping[str, str], args: Sequence[str], workdir: Path) -> list[Path]:
    """Existing host folders the container only reads: those ``READ_ONLY_NAMES`` name."""
    values = [env[name] for name in READ_ONLY_NAMES if env.get(name)]
    weights = flag_value(tuple(args), "--weights")
    if weights:
        values.append(weights)
    found = []
    for value in values:
        path = _absolute(value, workdir)
        if path.exists():
            found.append(path if path.is_dir() else path.parent)
    return found


def mounts(
    env: Mapping[str, str],
    workdir: Path,
    *,
    user: str,
    args: Sequence[str] = (),
    state_dirs: Iterable[Path] = (),
    data_dirs: Iterable[Path] = (),
) -> list[tuple[Path, bool]]:
    """``(host folder, read_only)`` pairs, creating the missing state folders.

    Each folder is mounted at its own path; one inside a mount of the same mode is left out
    (its parent's mount already shows it). The checkout (``workdir``) is read-only.

    Args:
        env: the container's variables (``container_env``); the folders they name go in.
        workdir: the checkout: mounted read-only, never created or chowned.
        user: ``uid:gid`` the container runs as; a folder created here is given to it.
        args: the ``mlops`` command line; its ``--runs-dir``, ``--storage``, ... count.
        state_dirs: more host folders the container writes to.
        data_dirs: more host folders it only reads.

    Raises:
        MlopsError: a state folder is the checkout itself, or ``user`` cannot write it.
    """
    workdir = Path(workdir).resolve()
    wanted: dict[Path, bool] = {workdir: True}
    for path in [*data_paths(env, args, workdir), *(Path(p).resolve() for p in data_dirs)]:
        wanted.setdefault(path.resolve(), True)
    state = [*state_paths(env, args, workdir), *((Path(p), "a runner state folder") for p in state_dirs)]
    for path, source in state:
        path = path.resolve()
        if path == workdir:
            raise MlopsError(
                f"{source}: {path} is the checkout, which the container mounts read-only; "
                f"use a folder inside it (for a tracking store: sqlite:///{ARTIFACT_DIR}/mlflow.db)"
            )
        if _make_folder(path):
            _give(path, user)
        _check_writable(path, user, source)
        wanted[path] = False
    for file, source in _store_files(env, args, workdir):
        if file.exists():
            _check_writable(file, user, source)
    kept: list[tuple[Path, bool]] = []
    for path, read_only in sorted(wanted.items()):
        if any(path.is_relative_to(p) and ro == read_only for p, ro in kept):
            continue
        kept.append((path, read_only))
    return kept


def _setting(args: tuple[str, ...], flag: str, env: Mapping[str, str], name: str) -> tuple[str | None, str]:
    value = flag_value(args, flag)
    return (value, flag) if value is not None else (env.get(name), name)


def _source(args: tuple[str, ...], flag: str, env: Mapping[str, str], *names: str) -> str:
    """The flag or variable a URL came from, for an error message."""
    if flag_value(args, flag) is not None:
        return flag
    return next((name for name in names if env.get(name)), flag)


def _absolute(value: str, workdir: Path) -> Path:
    return (workdir / Path(value).expanduser()).resolve()


def _store_folder(url: str, workdir: Path) -> Path | None:
    """The folder of a SQLite database (its journal goes beside it) or a ``file://`` store."""
    if url.startswith("sqlite:///"):
        return _absolute(url.removeprefix("sqlite:///"), workdir).parent
    if url.startswith("file://"):
        return _absolute(url.removeprefix("file://"), workdir)
    return None


def _store_files(env: Mapping[str, str], args: Sequence[str], workdir: Path) -> list[tuple[Path, str]]:
    """SQLite database files the container will write, with the setting naming each."""
    args = tuple(args)
    files = []
    for url, source in (
        (tracking_uri(env, args), _source(args, "--tracking-uri", env, "MLOPS_TRACKING_URI", "MLFLOW_TRACKING_URI")),
        (storage_url(env, args), _source(args, "--storage", env, "MLOPS_STORAGE")),
    ):
        if url and url.startswith("sqlite:///"):
            files.append((_absolute(url.removeprefix("sqlite:///"), workdir), source))
    return files


def _make_folder(path: Path) -> bool:
    """Create ``path`` (and missing parents); True only when this call created ``path``."""
    if path.exists():
        return False
    try:
        path.mkdir(parents=True)
    except FileExistsError:  # another process made it meanwhile: not ours to give away
        return False
    return True


def _give(path: Path, user: str) -> None:
    """Give a folder this call created to the container's user; only root may, and needs to."""
    if os.geteuid() != 0:
        return
    uid, gid = (int(part) for part in user.split(":"))
    os.lchown(path, uid, gid)


def _check_writable(path: Path, user: str, source: str) -> None:
    """Fail with one line when ``user`` cannot write ``path`` (by its mode bits)."""
    uid, gid = (int(part) for part in user.split(":"))
    info = path.stat()
    need = 0o3 if stat.S_ISDIR(info.st_mode) else 0o2  # a folder: write and enter
    if uid == info.st_uid:
        bits = (info.st_mode >> 6) & 0o7
    elif gid == info.st_gid:
        bits = (info.st_mode >> 3) & 0o7
    else:
        bits = info.st_mode & 0o7
    if bits & need != need:
        raise MlopsError(
            f"{source}: {path} is not writable by the container's user {user} (owner "
            f"{info.st_uid}:{info.st_gid}, mode {stat.filemode(info.st_mode)}); "
            f"run `chown {user} {path}` or point {source} at another folder"
        )
