"""Everything a search needs, checked before any data is loaded or any run opened.

``mlops tune`` calls ``check_run`` once its settings are resolved: a goal its metric can
never sensibly have, a ``--set`` the model does not read, a run or cache folder that cannot
be written, each is one ``error:`` line and exit 2, with no study, MLflow run or run folder
left behind.
"""

from __future__ import annotations

from pipeline.config.manifest import ModelManifest
from pipeline.config.settings import TuneSettings, apply_overrides, check_first_trials, check_folders, check_staged
from pipeline.errors import MlopsError


def check_run(manifest: ModelManifest, settings: TuneSettings) -> None:
    """Check ``settings`` against the model in ``manifest`` (whose own file was checked when read).

    Raises:
        MlopsError: naming the setting, where it came from, and the fix.
    """
    if settings.goal is not None:
        problem = manifest.goal.problem(settings.goal)
        if problem:
            raise MlopsError(f"setting goal={settings.goal:g} (from {settings.source('goal')}): {problem}")
    if manifest.goal.kind == "fraction" and settings.promote_margin >= 1.0:
        raise MlopsError(
            f"setting promote_margin={settings.promote_margin:g} (from {settings.source('promote_margin')}): "
            f"{manifest.goal.metric} is a fraction, so no model can beat the champion by that; e.g. 0.01"
        )
    apply_overrides(manifest, settings)
    check_staged(manifest.search_space, settings)
    check_first_trials(manifest.search_space, settings)
    check_folders(settings)
