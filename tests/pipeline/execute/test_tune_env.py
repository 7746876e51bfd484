"""The tune stage's environment allow-list (``pipeline.execute.tune_env``), shared by both runners."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.config.settings import TuneSettings
from pipeline.execute.tune_env import is_remote, tune_environment

HOST = {
    "PATH": "/usr/bin",
    "HOME": "/root",
    "LC_ALL": "C.UTF-8",
    "MLOPS_MAX_TRIALS": "7",
    "MLOPS_SMTP_PASSWORD": "smtp-secret",
    "MLOPS_SMTP_HOST": "mail.example.org",
    "MLOPS_SMTP_USER": "ci",
    "MLOPS_MAIL_TO": "team@example.org",
    "MLOPS_WEBHOOK_URL": "https://hooks.example.org/secret",
    "GITHUB_TOKEN": "ghp_secret",
    "AWS_ACCESS_KEY_ID": "AKIA",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "NPM_TOKEN": "npm-secret",
    "DEPLOY_KEY": "key-secret",
    "DB_PASSWORD": "db-secret",
    "SIGNING_SECRET": "sign-secret",
    "MLFLOW_TRACKING_USERNAME": "alice",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-secret",
    "MLFLOW_TRACKING_TOKEN": "mlflow-token",
}
NEVER = {name for name in HOST if name not in ("PATH", "HOME", "LC_ALL", "MLOPS_MAX_TRIALS")} - {
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
}


@pytest.mark.parametrize("local", [False, True])
@pytest.mark.parametrize(
    "uri", ["sqlite:////tmp/mlruns/mlflow.db", "http://127.0.0.1:5000", "https://mlflow.example.org"]
)
def test_secrets_never_forwarded(local: bool, uri: str) -> None:
    env = tune_environment({**HOST, "MLFLOW_TRACKING_URI": uri}, {}, local=local)
    assert not NEVER & set(env), sorted(NEVER & set(env))
    assert env["MLOPS_MAX_TRIALS"] == "7" and env["MLFLOW_TRACKING_URI"] == uri


def test_tracking_credentials_only_for_an_http_tracking_server() -> None:
    creds = {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"}
    sqlite = tune_environment({**HOST, "MLFLOW_TRACKING_URI": "sqlite:///mlruns/mlflow.db"})
    assert not creds & set(sqlite)
    assert not creds & set(tune_environment(HOST))  # no tracking URI: the local default
    remote = tune_environment({**HOST, "MLFLOW_TRACKING_URI": "https://mlflow.example.org"})
    assert creds <= set(remote) and remote["MLFLOW_TRACKING_PASSWORD"] == "mlflow-secret"
    # The tune setting wins over MLflow's variable, and a flag over both, as in `mlops tune`.
    mixed = {**HOST, "MLFLOW_TRACKING_URI": "https://mlflow.example.org"}
    assert not creds & set(tune_environment(mixed, {"MLOPS_TRACKING_URI": "sqlite:////r/mlruns/mlflow.db"}))
    flagged = tune_environment(HOST, args=["tune", "m", "--tracking-uri=http://127.0.0.1:5000"])
    assert creds <= set(flagged)
    assert not creds & set(tune_environment(mixed, args=["tune", "m", "--tracking-uri", "sqlite:///x.db"]))


def test_every_tune_setting_and_data_variable_passes() -> None:
    names = [f"MLOPS_{f.name.upper()}" for f in dataclasses.fields(TuneSettings)]
    names += ["MLOPS_RESTARTS", "MLOPS_RESTART_REASON", "MLOPS_CONFIG", "MLOPS_SHARED_DATA", "MLOPS_FACE_WEIGHTS"]
    names += ["KERAS_HOME", "SCIKIT_LEARN_DATA", "GIT_COMMIT", "GITHUB_SHA", "PYTHONHASHSEED", "OMP_NUM_THREADS"]
    host = {name: "v" for name in names}
    assert "MLOPS_STORAGE" in host and "MLOPS_MAX_TRIALS" in host
    assert set(tune_environment(host)) == set(names)


def test_a_python_process_needs_only_exist_for_the_local_runner() -> None:
    local = tune_environment(HOST, local=True)
    assert local["PATH"] == "/usr/bin" and local["HOME"] == "/root" and local["LC_ALL"] == "C.UTF-8"
    container = tune_environment(HOST)
    assert not {"PATH", "HOME", "LC_ALL"} & set(container)


def test_what_the_caller_sets_passes_and_wins() -> None:
    env = tune_environment({"MLOPS_MAX_TRIALS": "7"}, {"MLOPS_MAX_TRIALS": "3", "MLOPS_RESTARTS": "1"})
    assert env == {"MLOPS_MAX_TRIALS": "3", "MLOPS_RESTARTS": "1"}


def test_remote_urls() -> None:
    for url in ("http://h:5000", "https://h", "postgresql://u:p@h/db", "mysql+pymysql://h/db"):
        assert is_remote(url), url
    for url in (None, "", "sqlite:///mlruns/mlflow.db", "sqlite:////abs/x.db", "file:///tmp/m", "/tmp/m"):
        assert not is_remote(url), url
