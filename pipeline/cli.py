"""The ``mlops`` command: one sub-command per pipeline stage, and ``run`` chaining them.

Each stage's command lives in ``pipeline/commands/<stage>.py`` and registers itself here;
adding a stage is a new file plus one name in ``_STAGES``.

``main`` is the edge: it alone reads the process environment (once, into an ``Environment``
snapshot every command gets from ``pipeline.commands.edge``) and sets up process-wide state
(signal handlers, the fault points of ``pipeline.faults``). Nothing below it reads
``os.environ``.
"""

from __future__ import annotations

import importlib
import sys

import typer

from pipeline import faults, heap
from pipeline.config.environment import FAULT_AT, Environment
from pipeline.errors import ExitCode, MlopsError
from pipeline.tune import interrupts

_STAGES = ("detect", "classify", "build", "features", "tune", "run", "notify", "promote", "status", "predict")

app = typer.Typer(
    name="mlops",
    help="Push model code, get a tuned, tracked, registered model and an e-mail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _stage in _STAGES:
    importlib.import_module(f"pipeline.commands.{_stage}").register(app)


def main() -> None:
    """Console entry point: run the app, turning an ``MlopsError`` into one line and a code."""
    interrupts.install()  # Ctrl-C and SIGTERM stop cleanly: one line, exit 130 / 143
    heap.enable_for_process()  # the collector skips long-lived imports and the heap at exit
    env = Environment.from_os()  # the one read of the process environment
    try:
        faults.arm(env.get(FAULT_AT))  # a testing aid (pipeline/faults.py): unset, nothing armed
        # Without standalone mode, click returns the code of a ``typer.Exit`` instead of exiting.
        code = app(standalone_mode=False, obj=env)
    except KeyboardInterrupt as stop:  # arrived outside a command (typer turns one inside into 130)
        interrupts.stopped(stop, "")
    except MlopsError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as error:  # usage errors come through here
        import click

        # Typer 0.29 raises its own copy of click's errors (typer._click), not click's.
        usage = (click.exceptions.ClickException, typer.exceptions.TyperException)
        show = getattr(error, "show", None)
        if isinstance(error, usage) and callable(show):
            show()
            sys.exit(ExitCode.USAGE)
        raise
    received = interrupts.received()
    if received is not None:  # ``tune`` cleaned up and said what it kept
        print(received.message or "interrupted; run the same command to continue", file=sys.stderr)
        sys.exit(interrupts.exit_code(received))
    sys.exit(code if isinstance(code, int) else ExitCode.OK)


if __name__ == "__main__":
    main()
