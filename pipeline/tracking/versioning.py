"""Which code a run came from: the Git commit of the model folder."""

from __future__ import annotations

from pathlib import Path


def git_commit(folder: Path, fallback: str | None = None) -> str:
    """HEAD of the repository holding ``folder`` (``+dirty`` when it has local changes).

    Args:
        folder: the model folder.
        fallback: the commit to report when ``folder`` is in no repository (a container
            holds a copy without ``.git``): the tune setting ``commit``, which the CLI takes
            from the CI server's ``$GIT_COMMIT`` / ``$GITHUB_SHA``. None: ``unknown``, so a
            run outside Git still works.
    """
    try:
        import git

        repo = git.Repo(folder, search_parent_directories=True)
        sha = repo.head.commit.hexsha
        return f"{sha}+dirty" if repo.is_dirty(untracked_files=False) else sha
    except Exception:  # not a repository, no commits yet, git missing
        return fallback or "unknown"
