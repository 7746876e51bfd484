"""MLflow bookkeeping: one parent run per search, one nested run per trial, the registry.

Runs are written through ``MlflowClient`` with explicit run ids rather than the fluent
``active run`` (a resumed search re-opens runs by id; Optuna's ``MLflowCallback`` makes no
parent run, optuna#5148). Per-epoch metrics go in one ``log_batch`` when a trial ends: a
trial lasts well under a second, and one call per epoch would cost more than the epoch.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import MlopsError
from pipeline.sqlite_wal import sqlite_file

TRIAL_TAG = "optuna.trial_number"
STUDY_TAG = "optuna.study_name"


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


class Tracker:
    """Writes a study's runs to one experiment of one tracking server.

    Args:
        uri: the tracking URI (``sqlite:///mlruns/mlflow.db``, ``http://127.0.0.1:5000``, ...).
        experiment: the experiment name (created when missing).

    Raises:
        MlopsError: when the tracking server cannot be reached.
    """

    def __init__(self, uri: str, experiment: str) -> None:
        import mlflow

        self.uri = uri
        mlflow.set_tracking_uri(uri)
        try:
            _probe(uri)  # MLflow's own retries take ~4 minutes to give up on a closed port
            with _schema_lock(uri):  # the first call creates the store (and its tables)
                self.client = _client(uri)
                self.experiment_id = self._experiment(experiment)
        except Exception as error:  # connection errors surface as many different types
            raise MlopsError(
                f"MLflow tracking at {uri} unreachable ({type(error).__name__}); start the server or "
                "pass --tracking-uri sqlite:///mlruns/mlflow.db"
            ) from None

    def _experiment(self, name: str) -> str:
        """The experiment's id, creating it; another worker may create it at the same moment."""
        found = self.client.get_experiment_by_name(name)
        if found:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name))
        except Exception:
            found = self.client.get_experiment_by_name(name)  # RESOURCE_ALREADY_EXISTS: a worker beat us
            if found is None:
                raise
            return str(found.experiment_id)

    def parent_run(self, run_id: str | None, name: str, tags: Mapping[str, str]) -> str:
        """Re-open the search's parent run when ``run_id`` names one, else start it."""
        if run_id:
            try:
                self.client.update_run(run_id, status="RUNNING")
                return run_id
            except Exception:  # deleted meanwhile: start a new one
                pass
        run = self.client.create_run(self.experiment_id, tags=dict(tags), run_name=name)
        return str(run.info.run_id)

    def trial_run(self, run_id: str | None, parent_id: str, name: str, tags: Mapping[str, str]) -> str:
        """Re-open a retried trial's run (so it is never counted twice), else start a nested one."""
        if run_id:
            try:
                self.client.update_run(run_id, status="RUNNING", name=name)
                self.log(run_id, tags=tags)
                return run_id
            except Exception:
                pass
        run = self.client.create_run(self.experiment_id, tags={"mlflow.parentRunId": parent_id, **tags}, run_name=name)
        return str(run.info.run_id)

    def log(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, Any] | None = None,
        history: Mapping[str, Sequence[float] | Mapping[int, float]] | None = None,
    ) -> None:
        """Params, final metrics, tags and per-epoch curves in one ``log_batch`` call."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
        for name, values in (history or {}).items():
            steps = values.items() if isinstance(values, Mapping) else enumerate(values)
            curve = name if name.startswith("epoch_") else f"epoch_{name}"  # epoch_seconds, not epoch_epoch_seconds
            batch.extend(Metric(curve, float(v), now, int(step)) for step, v in steps)
        for begin in range(0, max(len(batch), 1), 1000):  # MLflow caps a batch at 1000 metrics
            self.client.log_batch(
                run_id,
                metrics=batch[begin : begin + 1000],
                params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items()] if begin == 0 else [],
                tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()] if begin == 0 else [],
            )

    def logged_epochs(self, run_id: str, name: str) -> set[int]:
        """The epochs of the curve ``epoch_<name>`` that ``run_id`` already holds."""
        return {int(m.step) for m in self.client.get_metric_history(run_id, f"epoch_{name}")}

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        """Close a run (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        self.client.set_terminated(run_id, status=status)

    def close_orphans(self, parent_id: str, live: set[str]) -> int:
        """Mark trial runs left RUNNING by a dead process (and not being resumed) as KILLED."""
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'RUNNING'"
        )
        orphans = [run.info.run_id for run in runs if run.info.run_id not in live]
        for run_id in orphans:
            self.finish(run_id, "KILLED")
        return len(orphans)

    def log_artifact(self, run_id: str, path: str, folder: str | None = None) -> None:
        """Attach a file (a plot) to a run."""
        self.client.log_artifact(run_id, path, folder)

    def log_model(self, run_id: str, exported: Any) -> str:
        """Log the model in the best trial's run.

        Returns:
            Its model URI (what ``register`` takes).
        """
        import mlflow
        from mlflow.models import infer_signature

        if exported.flavor == "pyfunc":
            with (
                tempfile.TemporaryDirectory(prefix="mlops-export-") as folder,
                _code_on_path(exported.code_paths),
                mlflow.start_run(run_id=run_id),
            ):
                info = mlflow.pyfunc.log_model(name="model", **_pyfunc_arguments(exported, Path(folder)))
            return str(info.model_uri)
        flavor = {"keras": mlflow.keras, "sklearn": mlflow.sklearn}[exported.flavor]
        signature = None
        if exported.input_example is not None:
            # A signature, not an input example: mlflow.keras writes the example before it creates
            # the model folder (FileNotFoundError, MLflow 3.17).
            signature = infer_signature(exported.input_example, _predict(exported.model, exported.input_example))
        extra = {"skops_trusted_types": exported.trusted_types} if exported.trusted_types else {}
        with mlflow.start_run(run_id=run_id):
            info = flavor.log_model(
                exported.model,
                name="model",
                signature=signature,
                pip_requirements=exported.pip_requirements or None,
                **extra,
            )
        return str(info.model_uri)

    def register(self, model_uri: str, run_id: str, name: str, tags: Mapping[str, str]) -> str:
        """Register a logged model, unless a version from ``run_id`` exists; no alias moves here.

        Which alias it gets (``champion`` or ``challenger``) is the promotion gate's decision
        (``pipeline.tracking.promotion.gate``).

        Returns:
            ``"<name>/<version>"``.
        """
        import mlflow

        done = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if done:  # registered by an earlier run of this study
            return f"{name}/{max(int(v.version) for v in done)}"
        version = mlflow.register_model(model_uri, name, tags=dict(tags))
        return f"{name}/{version.version}"

    def run_url(self, run_id: str) -> str | None:
        """The run's page in the MLflow UI, when the tracking URI is a web server."""
        if not self.uri.startswith(("http://", "https://")):
            return None
        return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"


@contextlib.contextmanager
def _schema_lock(uri: str) -> Iterator[None]:
    """For a SQLite store: one process at a time creates its tables.

    MLflow creates and migrates the schema of an empty database on first use; two processes
    doing so at once fail with alembic's "expected to match one row" (checked: two ``mlops
    tune`` on a fresh store). A lock file beside the database serialises that first use.
    """
    database = sqlite_file(uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not its folder
    with open(database.with_name(database.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _probe(uri: str, timeout: float = 5.0) -> None:
    """Fail at once (``OSError``) when an ``http(s)://`` tracking server's port does not answer."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    socket.create_connection((parts.hostname, port), timeout=timeout).close()


def save_model(exported: Any, path: Path) -> None:
    """Write a ``pyfunc`` export as an MLflow model folder at ``path`` (what ``log_model`` logs)."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="mlops-export-") as folder, _code_on_path(exported.code_paths):
        mlflow.pyfunc.save_model(str(path), **_pyfunc_arguments(exported, Path(folder)))


@contextlib.contextmanager
def _code_on_path(code_paths: Sequence[str]) -> Iterator[None]:
    """The folders of ``code_paths`` on ``sys.path`` while a models-from-code file is saved.

    MLflow runs the file at save time (to infer the signature from the input example) without
    its ``code_paths`` on ``sys.path``, which it adds only where it loads the saved model; the
    file's ``import`` of them would fail at save time alone.
    """
    import sys

    folders = [str(Path(code).resolve().parent) for code in code_paths]
    added = [folder for folder in dict.fromkeys(folders) if folder not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for folder in added:
            sys.path.remove(folder)


def _pyfunc_arguments(exported: Any, folder: Path) -> dict[str, Any]:
    """``mlflow.pyfunc`` arguments for a models-from-code export; Keras artifacts saved under ``folder``.

    No signature is passed: MLflow infers it (and the params schema) by running the model on
    its input example, so it is what the model really answers.
    """
    artifacts = {}
    for name, value in exported.artifacts.items():
        if isinstance(value, (str, Path)):
            artifacts[name] = str(value)
        else:  # a Keras model: its own format, which the serving process loads without our code
            target = folder / f"{name}.keras"
            value.save(target)
            artifacts[name] = str(target)
    return {
        "python_model": str(exported.model),
        "artifacts": artifacts,
        "model_config": dict(exported.config),
        "metadata": dict(exported.config),
        "input_example": exported.input_example,
        "pip_requirements": exported.pip_requirements or None,
        "code_paths": list(exported.code_paths) or None,
    }


def _predict(model: Any, batch: Any) -> Any:
    """Predictions for a signature, without Keras' progress bar."""
    try:
        return model.predict(batch, verbose=0)
    except TypeError:  # scikit-learn estimators take no verbose
        return model.predict(batch)
