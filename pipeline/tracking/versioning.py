"""Which code a run came from: the Git commit of the model folder."""

from __future__ import annotations

import os
from pathlib import Path


def git_commit(folder: Path) -> str:
    """HEAD of the repository holding ``folder`` (``+dirty`` when it has local changes).

    Falls back to the CI server's variables (``GIT_COMMIT``, ``GITHUB_SHA``) and then to
    ``unknown``, so a run outside Git still works.
    """
    try:
        import git

        repo = git.Repo(folder, search_parent_directories=True)
        sha = repo.head.commit.hexsha
        return f"{sha}+dirty" if repo.is_dirty(untracked_files=False) else sha
    except Exception:  # not a repository, no commits yet, git missing
        return os.environ.get("GIT_COMMIT") or os.environ.get("GITHUB_SHA") or "unknown"
