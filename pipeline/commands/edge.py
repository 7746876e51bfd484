"""What ``pipeline.cli.main`` sets up for every command: the environment snapshot.

``main`` reads the process environment once (``Environment.from_os()``) and passes it as
click's context object; a command asks ``environment(ctx)`` for it and hands it down. When
the app is invoked without ``main`` (typer's test runner), the snapshot is taken here, still
at the edge.
"""

from __future__ import annotations

import typer

from pipeline.config.environment import Environment


def environment(ctx: typer.Context) -> Environment:
    """The environment snapshot ``main`` took, or one taken now when the app ran without it."""
    found = ctx.find_object(Environment)
    return found if found is not None else Environment.from_os()
