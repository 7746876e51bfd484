"""Execute: where the tune stage runs (a local subprocess or a container) and the supervisor that restarts it."""

from pipeline.execute.runners import DockerRunner, LocalRunner, Runner, choose_runner
from pipeline.execute.supervisor import SupervisedResult, Supervisor, describe_exit
from pipeline.execute.tune_env import tune_environment

__all__ = [
    "DockerRunner",
    "LocalRunner",
    "Runner",
    "SupervisedResult",
    "Supervisor",
    "choose_runner",
    "describe_exit",
    "tune_environment",
]
