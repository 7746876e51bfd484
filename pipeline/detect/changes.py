"""Detect: the model folders a push added, changed or deleted.

A *model folder* is a direct child folder of ``models/`` (configurable) that holds a
``model.yaml`` or Python model code (a ``.py`` file or ``.ipynb`` notebook, at any depth).
A push is the commit range ``before..after`` the CI server hands over; the two commits'
trees are compared, so a force push (``before`` not an ancestor of ``after``) still yields
what differs between what the server had and what it has now.

Rules:

- any added, edited, renamed or deleted file inside a model folder marks it changed when
  the folder is still a model folder at ``after``;
- a renamed model folder is changed under its new name and deleted under its old one;
- a folder that was a model folder at ``before`` and is not at ``after`` is *deleted*;
  it is reported apart, never as something to tune;
- files outside ``models/`` and files directly in ``models/`` are ignored;
- a first push (no ``before``, or the all-zero SHA Jenkins and GitHub send) reports every
  model folder present at ``after`` as changed.

Example:

    >>> changes = changed_models(".", before="3f2a9c1", after="HEAD")  # doctest: +SKIP
    >>> changes.changed
    ['models/face_vgg16']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import git
from gitdb.exc import BadName, BadObject

from pipeline.errors import MlopsError

ZERO_SHA = "0" * 40
_CODE_SUFFIXES = (".py", ".ipynb")
_MANIFEST = "model.yaml"


@dataclass(frozen=True)
class ChangeSet:
    """The model folders a commit range touched.

    Attributes:
        changed: folders (relative to the repository root) added or changed; the ones to tune.
        deleted: model folders that no longer exist as model folders at ``after``.
        before: the full SHA of ``before``, or ``None`` on a first push.
        after: the full SHA of ``after``.
    """

    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    before: str | None = None
    after: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by ``mlops detect --json``."""
        return {
            "changed": list(self.changed),
            "deleted": list(self.deleted),
            "before": self.before,
            "after": self.after,
        }


def is_first_push(before: str | None) -> bool:
    """Whether ``before`` means "no previous commit" (absent, empty or all zeros)."""
    return not before or set(before.strip()) == {"0"}


def changed_models(
    repo_path: str | Path,
    before: str | None,
    after: str = "HEAD",
    models_dir: str = "models",
) -> ChangeSet:
    """List the model folders that the commit range ``before..after`` added, changed or deleted.

    Args:
        repo_path: the repository (or a folder inside it, as for ``git``).
        before: the commit before the push; ``None``, ``""`` or the all-zero SHA for a first push.
        after: the commit after the push (any revision ``git`` understands).
        models_dir: the folder, relative to the repository root, holding one folder per model.

    Returns:
        The changed and deleted model folders, each sorted, relative to the repository root.

    Raises:
        MlopsError: when ``repo_path`` is not a Git repository or a revision is unknown.
    """
    repo = _open_repo(repo_path)
    try:
        after_commit = _commit(repo, after, repo_path)
        root = _normalise_models_dir(models_dir, repo)
        if before is None or is_first_push(before):
            changed = sorted(_model_folders(after_commit.tree, root))
            return ChangeSet(changed=changed, before=None, after=after_commit.hexsha)
        before_commit = _commit(repo, before, repo_path)

        touched: set[str] = set()
        for diff in before_commit.diff(after_commit):
            for path in (diff.a_path, diff.b_path):
                folder = _model_folder_of(path, root)
                if folder is not None:
                    touched.add(folder)

        changed, deleted = [], []
        for folder in sorted(touched):
            if _is_model_folder(after_commit.tree, folder):
                changed.append(folder)
            elif _is_model_folder(before_commit.tree, folder):
                deleted.append(folder)
        return ChangeSet(changed, deleted, before_commit.hexsha, after_commit.hexsha)
    finally:
        repo.close()


def _open_repo(repo_path: str | Path) -> git.Repo:
    try:
        return git.Repo(repo_path, search_parent_directories=True)
    except git.NoSuchPathError:
        raise MlopsError(f"{repo_path}: no such folder; pass the repository with --repo") from None
    except git.InvalidGitRepositoryError:
        raise MlopsError(f"{repo_path}: not a Git repository; run inside a clone or pass one with --repo") from None


def _commit(repo: git.Repo, rev: str, repo_path: str | Path) -> git.Commit:
    try:
        commit = repo.commit(rev)
    except (BadName, BadObject, ValueError):
        # CI clones are often shallow, which is the usual reason a pushed SHA is missing.
        raise MlopsError(
            f"unknown commit {rev!r} in {repo_path}; fetch the full history "
            "(git fetch --unshallow, or fetch-depth: 0 in actions/checkout) or pass a SHA "
            "from git log"
        ) from None
    return commit


def _normalise_models_dir(models_dir: str, repo: git.Repo) -> PurePosixPath:
    path = Path(models_dir)
    if path.is_absolute() and repo.working_tree_dir is not None:
        try:
            path = path.resolve().relative_to(Path(repo.working_tree_dir).resolve())
        except ValueError:
            raise MlopsError(
                f"--models-dir {models_dir} is outside the repository {repo.working_tree_dir}; "
                "pass a folder relative to the repository root"
            ) from None
    root = PurePosixPath(path.as_posix())
    if ".." in root.parts:
        raise MlopsError(f"--models-dir {models_dir} leaves the repository; pass e.g. 'models'")
    return root


def _model_folder_of(path: str | None, root: PurePosixPath) -> str | None:
    """``models/<name>`` for a path inside a model folder, else ``None``."""
    if not path:
        return None
    parts = PurePosixPath(path).parts
    depth = len(root.parts)
    # A file directly in models/ (a README) belongs to no model: at least models/<name>/<file>.
    if len(parts) < depth + 2 or parts[:depth] != root.parts[:depth]:
        return None
    return PurePosixPath(*parts[: depth + 1]).as_posix()


def _subtree(tree: git.Tree, path: str) -> git.Tree | None:
    if path in ("", "."):
        return tree
    try:
        item = tree / path
    except KeyError:
        return None
    # A blob or a submodule at that path is not a folder we can read.
    return item if isinstance(item, git.Tree) else None


def _is_model_folder(tree: git.Tree, folder: str) -> bool:
    subtree = _subtree(tree, folder)
    if subtree is None:
        return False
    if any(blob.name == _MANIFEST for blob in subtree.blobs):
        return True
    return any(
        item.type == "blob" and item.name.endswith(_CODE_SUFFIXES)
        for item in subtree.traverse()
        if isinstance(item, git.Blob)
    )


def _model_folders(tree: git.Tree, root: PurePosixPath) -> list[str]:
    models = _subtree(tree, root.as_posix())
    if models is None:
        return []
    folders = [str(sub.path) for sub in models.trees]
    return [folder for folder in folders if _is_model_folder(tree, folder)]
