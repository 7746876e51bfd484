"""What the tune stage may see of the host environment: one allow-list for every runner.

``mlops tune`` runs pushed model code, so it is untrusted: it gets the variables it needs
(its ``MLOPS_<SETTING>`` tune settings, the tracking URI and, for a remote tracking server
only, that server's credentials, the offline data folders) and nothing else of the host's:
no SMTP password, no ``GITHUB_TOKEN``, no cloud keys. Both runners call
``tune_environment``; the local runner also keeps what a Python process needs to start.

Example::

    env = tune_environment(host_env, {"MLOPS_RESTARTS": "1"}, local=True)  # host_env: the CLI's snapshot
    subprocess.run(["mlops", "tune", "models/face_vgg16"], env=env)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from urllib.parse import urlsplit

from pipeline.config.settings import TuneSettings

# MLOPS_<FIELD> for every tune setting (MLOPS_MAX_TRIALS, MLOPS_STORAGE, ...).
TUNE_SETTING_NAMES = frozenset(f"MLOPS_{f.name.upper()}" for f in dataclasses.fields(TuneSettings))
# Set by the supervisor, or naming read-only data (mounted read-only by the Docker runner).
TUNE_EXTRA_NAMES = frozenset(
    {"MLOPS_RESTARTS", "MLOPS_RESTART_REASON", "MLOPS_CONFIG", "MLOPS_SHARED_DATA", "MLOPS_FACE_WEIGHTS"}
)
# Settings of the libraries the tune stage uses; none holds a secret.
LIBRARY_NAMES = frozenset(
    {
        "MLFLOW_TRACKING_URI",
        "MLFLOW_ALLOW_FILE_STORE",  # MLflow 3 refuses a file:// store without it
        "KERAS_HOME",
        "SCIKIT_LEARN_DATA",
        "GIT_COMMIT",
        "GITHUB_SHA",
        "PYTHONHASHSEED",
        "TF_CPP_MIN_LOG_LEVEL",
        "OMP_NUM_THREADS",
        "CUDA_VISIBLE_DEVICES",
        "PYTHONUNBUFFERED",
    }
)
# A remote tracking server's credentials, and the proxy that reaches it: forwarded only
# when the tracking URI is http(s).
TRACKING_CREDENTIAL_NAMES = frozenset(
    {
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_TRACKING_INSECURE_TLS",
        "MLFLOW_TRACKING_SERVER_CERT_PATH",
        *(name for base in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY") for name in (base, base.lower())),
    }
)
# What a Python process on the host needs to start and find its packages (local runner
# only: in a container they describe the host and would break the image's own Python).
PROCESS_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "LD_LIBRARY_PATH",
        "XDG_CACHE_HOME",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
    }
)
# Schemes whose store is a file on this machine; any other URL names a server.
LOCAL_SCHEMES = frozenset({"", "sqlite", "file"})


def is_remote(url: str | None) -> bool:
    """True when a tracking URI or storage URL names a server (http, postgresql, ...)."""
    if not url:
        return False
    return "://" in url and urlsplit(url).scheme.lower() not in LOCAL_SCHEMES


def tracking_uri(env: Mapping[str, str], args: list[str] | tuple[str, ...] = ()) -> str | None:
    """The tracking URI ``mlops tune`` will use: ``--tracking-uri``, then the environment.

    ``MLOPS_TRACKING_URI`` (the tune setting) wins over ``MLFLOW_TRACKING_URI``, as in
    ``pipeline.config.settings``.
    """
    return flag_value(args, "--tracking-uri") or env.get("MLOPS_TRACKING_URI") or env.get("MLFLOW_TRACKING_URI")


def storage_url(env: Mapping[str, str], args: list[str] | tuple[str, ...] = ()) -> str | None:
    """The Optuna storage URL ``mlops tune`` will use, if one is given."""
    return flag_value(args, "--storage") or env.get("MLOPS_STORAGE")


def flag_value(args: list[str] | tuple[str, ...], flag: str) -> str | None:
    """The value of ``flag`` in a command line (``--flag v`` or ``--flag=v``; the last wins)."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.partition("=")[2]
    return value


def tune_environment(
    host_env: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
    *,
    args: list[str] | tuple[str, ...] = (),
    local: bool = False,
) -> dict[str, str]:
    """The environment ``mlops tune`` (and the model code it runs) is given.

    Args:
        host_env: the host's environment (the ``Environment`` snapshot the CLI took): only
            allowed names pass.
        extra: variables the caller sets on purpose (the supervisor's restart count, the
            orchestrator's tracking store); they pass as they are and win.
        args: the command line; its ``--tracking-uri`` decides whether the tracking
            credentials are forwarded.
        local: keep what a host Python process needs to start (``PATH``, ``HOME``, ``LC_*``).

    Returns:
        The allowed host variables, then ``extra``.
    """
    extra = dict(extra or {})
    allowed = TUNE_SETTING_NAMES | TUNE_EXTRA_NAMES | LIBRARY_NAMES
    if local:
        allowed |= PROCESS_NAMES
    uri = tracking_uri({**host_env, **extra}, args)
    if uri and urlsplit(uri).scheme.lower() in ("http", "https"):
        allowed |= TRACKING_CREDENTIAL_NAMES
    env = {name: value for name, value in host_env.items() if name in allowed or (local and (name.startswith("LC_")))}
    return {**env, **extra}
