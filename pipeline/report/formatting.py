"""How a ``TuneSummary``'s figures read to a person: shared by the e-mail and the CI summary.

Both reports must say the same thing in the same words (a reviewer who sees "0.9487" on the
pull request should find "0.9487" in the e-mail), so the formatting lives here, once.

Everything a summary holds is untrusted: ``summary.json`` is written by the process that runs
the model's code, and names, metrics, parameters and errors come from ``model.yaml``, Git
and that code. So this module also holds the one escaping function for Markdown
(``escape_markdown``), the one check for links we make ourselves (``safe_url``) and the one
check for a plot file (``is_png``).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote, urlsplit

from pipeline.summary import TuneSummary

LINK_SCHEMES = ("http", "https")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Markdown punctuation that can start a link, image, code span, emphasis, strike-through or
# table cell; a backslash before it makes it a literal character (CommonMark, GFM).
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*\[\]()!|~])")
# "_" opens emphasis only at a word's edge (CommonMark): face_vgg16 stays readable
_EDGE_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
# C0/C1 controls and Unicode line/paragraph separators: any of them may end a line somewhere
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# U+200D (zero-width joiner) after "@" stops GitHub, Slack and e-mail clients making a mention
_MENTION = "@\u200d"


def one_line(text: object) -> str:
    """``str(text)`` with every line break and control character collapsed into one space."""
    return _LINE_BREAKS.sub(" ", str(text))


def neutralize_mentions(text: str) -> str:
    """Put a zero-width joiner after each ``@`` so ``@everyone`` or ``@team`` pings nobody."""
    return text.replace("@", _MENTION)


def escape_markdown(text: object) -> str:
    """Make untrusted text show literally in GitHub Markdown (inline text or a table cell).

    HTML special characters become entities (no ``<script>``, no raw tags), Markdown
    punctuation that could start a link, an image, a code span or a table cell is
    backslash-escaped, ``@mentions`` are neutralised and line breaks collapse to a space (a
    line break would end a table row or a list item).

    Args:
        text: anything; ``str()`` of it is escaped.

    Returns:
        The escaped text; it reads the same as ``text`` once rendered.

    Example:
        >>> escape_markdown("[x](javascript:alert(1)) <b>|@all")
        '\\\\[x\\\\]\\\\(javascript:alert\\\\(1\\\\)\\\\) &lt;b&gt;\\\\|@\\u200dall'
    """
    escaped = one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    escaped = _MARKDOWN_PUNCTUATION.sub(r"\\\1", escaped)
    escaped = _EDGE_UNDERSCORE.sub(r"\\_", escaped)
    return neutralize_mentions(escaped)


def safe_url(url: str | None) -> str | None:
    """``url`` when it is an absolute http(s) address, else ``None`` (show it as text instead).

    A link we build from a summary or a setting must not carry ``javascript:``, ``data:`` or
    ``file:``: a reader clicking "MLflow run" expects a web page.
    """
    if not url:
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in LINK_SCHEMES or not parts.netloc or _LINE_BREAKS.search(url):
        return None
    return url


def markdown_link(label: object, url: str | None) -> str:
    """A Markdown link ``[label](url)`` when ``url`` is http(s); else the label as plain text.

    The label is escaped; the address is percent-encoded where Markdown would end it
    (spaces, parentheses, angle brackets), so it cannot close the link and open another.
    """
    target = safe_url(url)
    if target is None:
        return escape_markdown(label)
    return f"[{escape_markdown(label)}]({quote(target, safe=_URL_SAFE)})"


# RFC 3986 reserved and unreserved characters, and "%" (keep existing escapes), minus ( ) < >
_URL_SAFE = ":/?#[]@!$&'*+,;=%~-._"


def is_png(path: Path) -> bool:
    """Whether ``path`` is a readable file that starts like a PNG.

    A plot path comes from ``summary.json``; checking the bytes keeps a path like
    ``/proc/self/environ`` or a private key from being attached to a mail or embedded.
    """
    try:
        if not path.is_file():
            return False
        with path.open("rb") as handle:
            return handle.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:
        return False


def format_value(value: float | None) -> str:
    """Format a metric value: two decimals when that is exact, else four significant digits.

    Args:
        value: the number, or ``None``.

    Returns:
        ``"0.90"`` for 0.9, ``"0.9487"`` for 0.94871, ``"–"`` for ``None``.
    """
    if value is None:
        return "–"
    if abs(value) < 1e4 and round(value, 2) == value:
        return f"{value:.2f}"
    return f"{value:.4g}"


def format_interval(interval: tuple[float, float] | None) -> str:
    """Format a Wilson interval as ``[0.91, 0.97]``, or ``""`` when there is none."""
    if interval is None:
        return ""
    return f"[{format_value(interval[0])}, {format_value(interval[1])}]"


def format_duration(seconds: float) -> str:
    """Format a wall time: ``"12.3 s"``, ``"4m 05s"``, ``"1h 02m 03s"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def format_param(value: object) -> str:
    """Format one hyper-parameter value (floats to four significant digits)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def goal_text(summary: TuneSummary) -> str:
    """The goal as one phrase, e.g. ``val_accuracy >= 0.90`` (``lower 95% bound`` when asked)."""
    goal = summary.goal
    bound = " (lower 95% bound)" if goal.confidence and goal.direction != "minimize" else ""
    return f"{goal.metric}{bound} {goal.sign} {format_value(goal.target)}"


def goal_check(summary: TuneSummary) -> str:
    """The comparison that decided the goal, e.g. ``val_accuracy 0.95 >= 0.90``.

    When the goal is checked on the interval's lower bound, that bound is what is compared,
    so the line never claims ``0.95 >= 0.95`` for a goal that was missed on its bound.
    """
    goal = summary.goal
    best = summary.best
    if best is None:
        return "no completed trial"
    checked, label = best.value, goal.metric
    if goal.confidence and goal.direction != "minimize" and best.interval is not None:
        checked, label = best.interval[0], f"{goal.metric} lower bound"
    if goal.direction == "minimize":
        op = "<=" if summary.goal_met else ">"
    else:
        op = ">=" if summary.goal_met else "<"
    return f"{label} {format_value(checked)} {op} {format_value(goal.target)}"


def trials_text(summary: TuneSummary) -> str:
    """Trial counts as ``12 (10 complete, 1 pruned, 1 failed)``, and ``, 1 interrupted`` when one was."""
    interrupted = f", {summary.trials_interrupted} interrupted" if summary.trials_interrupted else ""
    return (
        f"{summary.trials_total} ({summary.trials_complete} complete, "
        f"{summary.trials_pruned} pruned, {summary.trials_failed} failed{interrupted})"
    )


def staged_text(summary: TuneSummary) -> tuple[str, str] | None:
    """A staged search's time by its parameter's value, as (label, text); ``None`` when not staged.

    Example: ``("Time by fine_tune_blocks", "0: 4m 05s (18 trials), 1: 11m 02s (4 trials, from trial 18)")``.
    """
    staged = summary.staged
    if not staged:
        return None
    opened = staged.get("opened", {})
    parts = []
    for value, seconds in staged.get("seconds", {}).items():
        count = staged.get("trials", {}).get(value, 0)
        since = f", from trial {opened[value]}" if value in opened else ""
        parts.append(f"{value}: {format_duration(seconds)} ({count} trial{'s' if count != 1 else ''}{since})")
    return one_line(f"Time by {staged.get('param')}"), one_line(", ".join(parts) or "no trial ran")


def mlflow_link(summary: TuneSummary) -> tuple[str | None, str]:
    """Where to look at the run in MLflow.

    Returns:
        ``(url, label)``: ``url`` is ``mlflow_run_url`` when set, else one built from an
        HTTP tracking URI and the run id; ``None`` when the store has no web address (a
        SQLite file), in which case ``label`` names the store and the run id to open with
        ``mlflow ui``. ``url`` is always http(s) (see ``safe_url``); the label is raw text
        for the caller to escape.
    """
    run_id = summary.mlflow_parent_run_id or (summary.best.mlflow_run_id if summary.best else None)
    if summary.mlflow_run_url:
        url = safe_url(summary.mlflow_run_url)
        if url is not None:
            return url, f"run {run_id}" if run_id else "MLflow run"
        # any other scheme (javascript:, file:) is shown as text, never linked
        return None, f"run {run_id} at {summary.mlflow_run_url}" if run_id else summary.mlflow_run_url
    uri = str(summary.tracking_uri or "").rstrip("/")
    if run_id and safe_url(uri):
        experiment = quote(str(summary.mlflow_experiment_id or "0"), safe="")
        return f"{uri}/#/experiments/{experiment}/runs/{quote(str(run_id), safe='')}", f"run {run_id}"
    if run_id:
        return None, f"run {run_id} in {uri or 'the local store'}"
    return None, uri or "not tracked"


def resolve_plot(summary: TuneSummary, path: str) -> Path:
    """Find a plot file: absolute, relative to the working directory, or to ``run_dir``."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists() or not summary.run_dir:
        return candidate
    return Path(summary.run_dir) / candidate
