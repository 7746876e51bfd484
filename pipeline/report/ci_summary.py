"""The Markdown summary a reviewer reads on the CI page and the pull request.

``render_markdown`` turns the tune summaries (and the models that failed before a summary
existed) into one report; ``publish_github`` appends it to the job summary and keeps ONE
comment on the pull request up to date, found again on each run by a hidden marker. Posting
is best effort: a failure is a warning line, never a failed pipeline.

Every piece of text from a summary, ``model.yaml``, Git or an error goes through
``report_format.escape_markdown`` (no raw HTML, links, images or @mentions reach the page);
the only links are the ones built here, and only to http(s) addresses.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.report import formatting as fmt
from pipeline.sdk.checkpoints import replace_file
from pipeline.summary import TuneSummary

logger = logging.getLogger(__name__)

MARKER = "<!-- mlops-summary -->"
# GitHub rejects a comment body over 65,536 characters
_COMMENT_LIMIT = 65_000
_API_VERSION = "2022-11-28"
# who posts with the workflow's GITHUB_TOKEN; $MLOPS_COMMENT_AUTHOR names another (a bot's PAT)
DEFAULT_AUTHOR = "github-actions[bot]"


def _history_plot(summary: TuneSummary) -> tuple[str, str] | None:
    """The optimization-history plot: the one titled so, else the first plot."""
    for title, path in summary.plots.items():
        if "history" in title.lower():
            return title, path
    return next(iter(summary.plots.items()), None)


def _image(
    summary: TuneSummary,
    title: str,
    path: str,
    base_dir: Path | None,
    embed: bool,
    max_embed_bytes: int,
) -> str:
    """An image link: a base64 data URI when asked and small enough, else a relative path."""
    file = fmt.resolve_plot(summary, path)
    alt = fmt.escape_markdown(title)
    # only a real PNG is embedded: the path comes from summary.json, written by model code
    if embed and fmt.is_png(file) and file.stat().st_size <= max_embed_bytes:
        data = base64.b64encode(file.read_bytes()).decode()
        return f"![{alt}](data:image/png;base64,{data})"
    target = file
    if base_dir is not None:
        target = Path(os.path.relpath(file.resolve(), base_dir.resolve()))
    # percent-encoded: a ":" cannot make a scheme (javascript:), nor ")" or a space end the link
    return f"![{alt}]({urllib.parse.quote(target.as_posix(), safe='/')})"


def _row(summary: TuneSummary) -> str:
    best = summary.best
    value = fmt.format_value(best.value) if best else "–"
    if best and best.interval:
        value += f" {fmt.format_interval(best.interval)}"
    text = [
        summary.model,
        summary.kind or "–",
        fmt.goal_text(summary),
        value,
        fmt.format_value(best.test_value) if best else "–",
        fmt.trials_text(summary),
        fmt.format_duration(summary.wall_seconds),
    ]
    cells = [fmt.escape_markdown(t) for t in text]
    cells.insert(3, "✅" if summary.goal_met else "❌")
    cells.append(fmt.markdown_link(*reversed(fmt.mlflow_link(summary))))
    return "| " + " | ".join(cells) + " |"


def _promotion(summary: TuneSummary) -> list[str]:
    """The promotion gate's verdict, both test scores with their intervals, and why (escaped)."""
    decision = summary.promotion
    if decision is None:
        return []
    esc = fmt.escape_markdown
    lines = [f"Promotion: **{esc(decision.headline)}**", ""]
    lines += [f"| Role | Version | {esc(decision.metric)} | 95% CI | Scored |", "| --- | --- | --- | --- | --- |"]
    rows: list[tuple[str, int, float | None, tuple[float, float] | None, str]] = [
        ("challenger", decision.challenger_version, decision.challenger_value, decision.challenger_interval, "")
    ]
    if decision.champion_version is not None:
        scored = "could not be scored" if decision.champion_value is None else (decision.champion_scored or "")
        if decision.champion_scored == "unseen":  # both on the test examples the champion never trained on
            scored = f"now, on the {decision.compared_n} test examples it never trained on"
            rows.append(("challenger there", decision.challenger_version, decision.challenger_compared, None, scored))
        rows.append(
            ("champion", decision.champion_version, decision.champion_value, decision.champion_interval, scored)
        )
    for role, version, value, interval, how in rows:
        cells = [role, version, fmt.format_value(value), fmt.format_interval(interval) or "–", how or "now"]
        lines.append("| " + " | ".join(esc(cell) for cell in cells) + " |")
    return [*lines, "", f"Why: {esc(decision.reason)}", ""]


def render_markdown(
    summaries: Sequence[TuneSummary],
    extra: Sequence[Mapping[str, Any]] | None = None,
    *,
    base_dir: Path | None = None,
    embed_images: bool = False,
    max_embed_bytes: int = 100_000,
    title: str = "MLOps results",
) -> str:
    """Render the CI summary.

    Args:
        summaries: one ``TuneSummary`` per tuned model.
        extra: models that failed before a summary existed, as mappings with ``model``
            and ``error`` (and optionally ``stage``, e.g. ``build``).
        base_dir: the directory the Markdown will live in, so plot links are relative to
            it; ``None`` keeps the paths as the summaries give them.
        embed_images: embed each history plot as a base64 data URI (for pages that cannot
            reach local files), when the PNG is at most ``max_embed_bytes``.
        max_embed_bytes: the largest PNG to embed; larger ones stay links.
        title: the report's heading.

    Returns:
        The Markdown text, ending with a newline.
    """
    extra = extra or []
    lines = [f"## {title}", ""]
    if summaries:
        met = sum(s.goal_met for s in summaries)
        lines += [f"{met} of {len(summaries)} model(s) reached the goal.", ""]
        lines.append("| Model | Kind | Goal | Met | Best val [95% CI] | Test | Trials | Time | MLflow |")
        lines.append("| --- | --- | --- | :-: | --- | --- | --- | --- | --- |")
        lines += [_row(s) for s in summaries]
        lines.append("")
    if extra:
        lines += ["### Failed", ""]
        for item in extra:
            stage = f" ({fmt.escape_markdown(item['stage'])})" if item.get("stage") else ""
            error = str(item.get("error") or "unknown error").strip().splitlines() or [""]
            model = fmt.escape_markdown(item.get("model", "?"))
            lines.append(f"- ❌ {model}{stage}: {fmt.escape_markdown(error[0])}")
        lines.append("")
    if not summaries and not extra:
        lines += ["No model changed in this push: nothing was tuned.", ""]
    for summary in summaries:
        lines += [f"### {fmt.escape_markdown(summary.model)}", ""]
        if summary.restarts:
            lines += [f"Restarted {fmt.escape_markdown(summary.restarts)} time(s) after a crash.", ""]
        if summary.registered_model:
            lines += [f"Registered model: {fmt.escape_markdown(summary.registered_model)}", ""]
        if summary.data_notes:
            lines += [f"Data: {fmt.escape_markdown(fmt.one_line(note))}" for note in summary.data_notes] + [""]
        staged = fmt.staged_text(summary)
        if staged is not None:
            lines += [f"{fmt.escape_markdown(staged[0])}: {fmt.escape_markdown(staged[1])}", ""]
        lines += _promotion(summary)
        params = summary.best.params if summary.best else {}
        if params:
            lines += ["| Parameter | Best value |", "| --- | --- |"]
            lines += [
                f"| {fmt.escape_markdown(k)} | {fmt.escape_markdown(fmt.format_param(v))} |"
                for k, v in sorted(params.items(), key=lambda kv: str(kv[0]))
            ]
            lines.append("")
        plot = _history_plot(summary)
        if plot is not None:
            lines += [_image(summary, *plot, base_dir, embed_images, max_embed_bytes), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_summary(path: Path, markdown: str) -> Path:
    """Write the Markdown to ``path`` (parents created, replaced atomically); return it."""
    path = Path(path)
    replace_file(path, markdown.encode("utf-8"))
    return path


@dataclass
class PublishResult:
    """What ``publish_github`` did.

    Attributes:
        step_summary: the job-summary file appended to, if any.
        comment: ``created``, ``updated`` or ``None`` (not a pull request, or it failed).
        comment_url: the comment's web address, when GitHub returned one.
        warnings: one line per thing that could not be done.
    """

    step_summary: Path | None = None
    comment: str | None = None
    comment_url: str | None = None
    warnings: list[str] = field(default_factory=list)


class _GitHub:
    """The three REST calls the comment needs, with the token kept out of every message."""

    def __init__(self, api: str, repo: str, token: str, timeout: float, author: str = DEFAULT_AUTHOR) -> None:
        self.api, self.repo, self.timeout, self.author = api.rstrip("/"), repo, timeout, author
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": _API_VERSION,
            "User-Agent": "mlops-pipeline",
        }

    def call(self, method: str, url: str, body: dict[str, Any] | None = None) -> tuple[Any, str]:
        data = json.dumps(body).encode() if body is not None else None
        headers = dict(self.headers, **({"Content-Type": "application/json"} if data else {}))
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read() or b"null"), response.headers.get("Link", "")

    def find_comment(self, number: int) -> dict[str, Any] | None:
        url: str | None = f"{self.api}/repos/{self.repo}/issues/{number}/comments?per_page=100"
        while url:
            comments, link = self.call("GET", url)
            for comment in comments:
                # Anyone can post a comment holding the marker; updating theirs would put our
                # summary under their name, for them to edit later. Only ours counts.
                author = (comment.get("user") or {}).get("login")
                if (comment.get("body") or "").startswith(MARKER) and author == self.author:
                    return dict(comment)
            url = _next_page(link)
            if url and not url.startswith(f"{self.api}/"):
                break  # the token goes to the API's own address only
        return None

    def upsert(self, number: int, body: str) -> tuple[str, str | None]:
        existing = self.find_comment(number)
        if existing is not None:
            url = f"{self.api}/repos/{self.repo}/issues/comments/{existing['id']}"
            result, _ = self.call("PATCH", url, {"body": body})
            return "updated", (result or {}).get("html_url")
        url = f"{self.api}/repos/{self.repo}/issues/{number}/comments"
        result, _ = self.call("POST", url, {"body": body})
        return "created", (result or {}).get("html_url")


def _next_page(link: str) -> str | None:
    """The ``rel="next"`` URL of a GitHub ``Link`` header, if any."""
    for part in link.split(","):
        if 'rel="next"' in part:
            return part.split(";")[0].strip().strip("<>")
    return None


def _pull_request_number(env: Mapping[str, str]) -> int | None:
    path = env.get("GITHUB_EVENT_PATH")
    if not path:
        return None
    event = json.loads(Path(path).read_text(encoding="utf-8"))
    number = (event.get("pull_request") or {}).get("number")
    return int(number) if number is not None else None


def _comment_body(markdown: str) -> str:
    body = f"{MARKER}\n{markdown}"
    if len(body) > _COMMENT_LIMIT:
        note = "\n\n_(truncated: the full summary is on the job page)_\n"
        body = body[: _COMMENT_LIMIT - len(note)] + note
    return body


def publish_github(markdown: str, *, env: Mapping[str, str], timeout: float = 10.0) -> PublishResult:
    """Put the summary on the GitHub Actions job page and on the pull request.

    Appends to ``$GITHUB_STEP_SUMMARY`` when set. When the run is for a pull request
    (``$GITHUB_EVENT_PATH`` holds ``pull_request.number``) and ``$GITHUB_TOKEN`` and
    ``$GITHUB_REPOSITORY`` are set, creates one comment marked ``<!-- mlops-summary -->``,
    or updates it when an earlier run made it (a comment that starts with the marker and was
    posted by ``github-actions[bot]``, or by ``$MLOPS_COMMENT_AUTHOR`` when set).
    ``$GITHUB_API_URL`` names the API (GitHub Enterprise); https://api.github.com by default.

    Args:
        markdown: the report from ``render_markdown``.
        env: where to read the variables: the environment snapshot the CLI took.
        timeout: seconds for each API call.

    Returns:
        What was done; anything that failed is a line in ``warnings`` (also logged), never
        an exception.
    """
    result = PublishResult()

    def warn(line: str) -> None:
        result.warnings.append(line)
        logger.warning(line)

    if env.get("GITHUB_STEP_SUMMARY"):
        path = Path(env["GITHUB_STEP_SUMMARY"])
        try:
            with path.open("a", encoding="utf-8") as handle:
                handle.write(markdown if markdown.endswith("\n") else markdown + "\n")
            result.step_summary = path
        except OSError as error:
            warn(f"job summary not written to {path} (GITHUB_STEP_SUMMARY): {error}")
    try:
        number = _pull_request_number(env)
    except (OSError, ValueError, TypeError) as error:
        warn(f"pull-request comment skipped: cannot read GITHUB_EVENT_PATH ({error})")
        return result
    if number is None:
        return result
    repo, token = env.get("GITHUB_REPOSITORY"), env.get("GITHUB_TOKEN")
    if not repo or not token:
        missing = "GITHUB_REPOSITORY" if not repo else "GITHUB_TOKEN"
        warn(
            f"pull-request comment skipped: {missing} is not set (pass "
            "`GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}` and `permissions: pull-requests: write`)"
        )
        return result
    api = env.get("GITHUB_API_URL") or "https://api.github.com"
    github = _GitHub(api, repo, token, timeout, env.get("MLOPS_COMMENT_AUTHOR") or DEFAULT_AUTHOR)
    try:
        result.comment, result.comment_url = github.upsert(number, _comment_body(markdown))
    except urllib.error.HTTPError as error:
        hint = " (a fork's token is read-only)" if error.code in (403, 404) else ""
        warn(f"pull-request comment not posted: GitHub answered {error.code} {error.reason}{hint}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        warn(f"pull-request comment not posted: {type(error).__name__}: {error}")
    return result
