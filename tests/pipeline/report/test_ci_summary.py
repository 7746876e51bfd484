"""The CI summary: its Markdown, the job-summary file, and one PR comment on a fake GitHub API."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.report.ci_summary import MARKER, publish_github, render_markdown, write_summary
from pipeline.summary import BestTrial, GoalSpec, Promotion, TuneSummary

TOKEN = "ghs_faketoken123"


def make_summary(tmp_path: Path, model: str = "face_vgg16", **overrides: Any) -> TuneSummary:
    plot = tmp_path / "runs" / model / "plots" / "history.png"
    plot.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), "green").save(plot)
    values: dict[str, Any] = {
        "model": model,
        "goal": GoalSpec(target=0.9),
        "goal_met": True,
        "best": BestTrial(3, 0.95, {"learning_rate": 0.001, "units": 128}, (0.91, 0.97), 0.93, "r1"),
        "trials_total": 5,
        "trials_complete": 4,
        "trials_pruned": 1,
        "wall_seconds": 42.0,
        "mlflow_run_url": "http://mlflow.local/#/experiments/1/runs/p1",
        "mlflow_parent_run_id": "p1",
        "kind": "cnn",
        "registered_model": f"{model}/2",
        "plots": {"Optimization history": str(plot)},
        "run_dir": str(tmp_path / "runs" / model),
    }
    values.update(overrides)
    return TuneSummary(**values)


def test_markdown_table_params_plots_and_failures(tmp_path: Path) -> None:
    met = make_summary(tmp_path)
    missed = make_summary(
        tmp_path,
        "house_reg",
        goal=GoalSpec("rmse", "minimize", 0.5),
        goal_met=False,
        best=BestTrial(1, 0.61, {"alpha": 0.1}),
        mlflow_run_url=None,
        tracking_uri="sqlite:///mlruns/mlflow.db",
        kind="regression",
        plots={},
    )
    markdown = render_markdown(
        [met, missed],
        [{"model": "ann_demo", "stage": "build", "error": "no Docker engine\ntrace"}],
        base_dir=tmp_path,
    )
    lines = markdown.splitlines()
    assert lines[0] == "## MLOps results"
    assert "1 of 2 model(s) reached the goal." in markdown
    assert (
        "| face_vgg16 | cnn | val_accuracy &gt;= 0.90 | ✅ | 0.95 \\[0.91, 0.97\\] | 0.93 "
        "| 5 \\(4 complete, 1 pruned, 0 failed\\) | 42.0 s "
        "| [run p1](http://mlflow.local/#/experiments/1/runs/p1) |"
    ) in lines
    row = next(line for line in lines if line.startswith("| house_reg"))
    assert "❌" in row and "rmse &lt;= 0.50" in row and "run p1 in sqlite:///mlruns/mlflow.db" in row
    assert "- ❌ ann_demo (build): no Docker engine" in lines and "trace" not in markdown
    assert "| learning_rate | 0.001 |" in lines and "| alpha | 0.1 |" in lines
    assert "![Optimization history](runs/face_vgg16/plots/history.png)" in lines
    assert "data:image" not in markdown


def test_markdown_embeds_small_png_on_request(tmp_path: Path) -> None:
    summary = make_summary(tmp_path)
    png = Path(summary.plots["Optimization history"]).read_bytes()
    embedded = render_markdown([summary], embed_images=True)
    assert f"![Optimization history](data:image/png;base64,{base64.b64encode(png).decode()})" in embedded
    too_big = render_markdown([summary], embed_images=True, max_embed_bytes=10)
    assert "data:image" not in too_big and "history.png)" in too_big


def test_markdown_with_nothing_tuned() -> None:
    assert "nothing was tuned" in render_markdown([], None)


def test_write_summary_and_step_summary_append(tmp_path: Path) -> None:
    target = write_summary(tmp_path / "out" / "summary.md", "# one\n")
    assert target.read_text() == "# one\n"
    step = tmp_path / "step_summary.md"
    env = {"GITHUB_STEP_SUMMARY": str(step)}
    assert publish_github("first", env=env).step_summary == step
    publish_github("second\n", env=env)
    assert step.read_text() == "first\nsecond\n"


class FakeGitHub:
    """Enough of the GitHub issues-comments API, recording each request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.comments: list[dict[str, Any]] = [{"id": 1, "body": "LGTM", "user": {"login": "alice"}}]
        self.fail = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "body": body,
                        "auth": self.headers.get("Authorization"),
                    }
                )
                return body or {}

            def do_GET(self) -> None:
                self._record()
                if fake.fail:
                    return self._reply(500, {"message": "boom"})
                base = f"http://127.0.0.1:{fake.port}/repos/o/r/issues/7/comments"
                # two pages, to prove the Link header is followed
                if "page=2" in self.path:
                    return self._reply(200, fake.comments[1:])
                return self._reply(200, fake.comments[:1], {"Link": f'<{base}?per_page=100&page=2>; rel="next"'})

            def do_POST(self) -> None:
                body = self._record()
                comment = {
                    "id": 100 + len(fake.comments),
                    "body": body["body"],
                    "html_url": "https://github.com/o/r/pull/7#c",
                    "user": {"login": "github-actions[bot]"},
                }
                fake.comments.append(comment)
                self._reply(201, comment)

            def do_PATCH(self) -> None:
                body = self._record()
                comment_id = int(self.path.rsplit("/", 1)[1])
                comment = next(c for c in fake.comments if c["id"] == comment_id)
                comment["body"] = body["body"]
                self._reply(200, comment)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]


@pytest.fixture
def github(tmp_path: Path) -> Iterator[tuple[FakeGitHub, dict[str, str]]]:
    fake = FakeGitHub()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7}}))
    env = {
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_API_URL": f"http://127.0.0.1:{fake.port}",
    }
    yield fake, env
    fake.server.shutdown()
    fake.server.server_close()


def test_pr_comment_created_once_then_updated(github: tuple[FakeGitHub, dict[str, str]]) -> None:
    fake, env = github

    first = publish_github("## run 1\n", env=env)
    assert (first.comment, first.warnings) == ("created", [])
    assert [(r["method"], r["path"].split("?")[0]) for r in fake.requests] == [
        ("GET", "/repos/o/r/issues/7/comments"),
        ("GET", "/repos/o/r/issues/7/comments"),
        ("POST", "/repos/o/r/issues/7/comments"),
    ]
    assert fake.requests[-1]["body"]["body"] == f"{MARKER}\n## run 1\n"
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in fake.requests)

    fake.requests.clear()
    second = publish_github("## run 2\n", env=env)
    assert second.comment == "updated"
    assert fake.requests[-1]["method"] == "PATCH"
    assert fake.requests[-1]["path"] == "/repos/o/r/issues/comments/101"
    assert len(fake.comments) == 2 and fake.comments[1]["body"] == f"{MARKER}\n## run 2\n"
    assert fake.comments[0]["body"] == "LGTM"


def test_pr_comment_failure_is_a_warning(
    github: tuple[FakeGitHub, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    fake, env = github
    fake.fail = True
    result = publish_github("x", env=env)
    assert result.comment is None and len(result.warnings) == 1
    assert "500" in result.warnings[0] and TOKEN not in caplog.text
    assert any(r.levelno == logging.WARNING for r in caplog.records)

    unreachable = dict(env, GITHUB_API_URL="http://127.0.0.1:9")
    assert "not posted" in publish_github("x", env=unreachable, timeout=2).warnings[0]
    no_token = {k: v for k, v in env.items() if k != "GITHUB_TOKEN"}
    assert "GITHUB_TOKEN" in publish_github("x", env=no_token).warnings[0]


def test_not_a_pull_request_posts_nothing(tmp_path: Path) -> None:
    event = tmp_path / "push.json"
    event.write_text(json.dumps({"ref": "refs/heads/main"}))
    result = publish_github("x", env={"GITHUB_EVENT_PATH": str(event), "GITHUB_TOKEN": TOKEN})
    assert (result.comment, result.warnings) == (None, [])


PAYLOAD = "<script>alert(1)</script> [x](javascript:alert(1)) @everyone |"
ESCAPED = "&lt;script&gt;alert\\(1\\)&lt;/script&gt; \\[x\\]\\(javascript:alert\\(1\\)\\) @\u200deveryone \\|"


def test_untrusted_text_is_escaped_everywhere_in_the_markdown(tmp_path: Path) -> None:
    summary = make_summary(
        tmp_path,
        PAYLOAD,
        kind=PAYLOAD,
        goal=GoalSpec(metric=PAYLOAD, target=0.9),
        best=BestTrial(3, 0.95, {PAYLOAD: PAYLOAD}, (0.91, 0.97), 0.93, "r1"),
        registered_model=PAYLOAD,
        mlflow_run_url="javascript:alert(1)",
    )
    markdown = render_markdown([summary], [{"model": PAYLOAD, "stage": PAYLOAD, "error": f"{PAYLOAD}\n{PAYLOAD}"}])
    assert PAYLOAD not in markdown and "<script>" not in markdown and "@everyone" not in markdown
    assert "](javascript:" not in markdown  # no link to it, only text
    lines = markdown.splitlines()
    row = next(line for line in lines if line.startswith(f"| {ESCAPED} |"))
    # every cell is escaped, so the row still has its 9 cells (10 unescaped pipes)
    assert row.replace("\\|", "").count("|") == 10, row
    assert f"- ❌ {ESCAPED} ({ESCAPED}): {ESCAPED}" in lines
    assert f"| {ESCAPED} | {ESCAPED} |" in lines
    assert f"### {ESCAPED}" in lines and f"Registered model: {ESCAPED}" in lines


def test_only_http_links_and_encoded_plot_paths(tmp_path: Path) -> None:
    evil_plot = tmp_path / "javascript:alert(1)) ![x](http:"
    evil_plot.write_bytes(b"not a png")
    linked = make_summary(tmp_path, mlflow_run_url="https://mlflow.example/#/runs/(1)")
    data_url = make_summary(tmp_path, "other", mlflow_run_url="data:text/html,<b>x</b>", plots={"h": str(evil_plot)})
    markdown = render_markdown([linked, data_url], base_dir=tmp_path, embed_images=True)
    assert "[run p1](https://mlflow.example/#/runs/%281%29)" in markdown  # a ")" cannot end the link early
    assert "](data:text" not in markdown and "run p1 at data:text/html,&lt;b&gt;x&lt;/b&gt;" in markdown
    # the plot path is percent-encoded (no scheme, no early ")"), and a non-PNG is never embedded
    assert "![h](javascript%3Aalert%281%29%29%20%21%5Bx%5D%28http%3A)" in markdown.splitlines()
    assert "data:image" not in markdown.split("### other")[1]


def test_someone_elses_comment_with_the_marker_is_not_taken_over(
    github: tuple[FakeGitHub, dict[str, str]],
) -> None:
    fake, env = github
    fake.comments.append({"id": 50, "body": f"{MARKER}\nfake results", "user": {"login": "mallory"}})
    result = publish_github("## run 1\n", env=env)
    assert result.comment == "created"
    assert [r["method"] for r in fake.requests if r["method"] != "GET"] == ["POST"]
    assert fake.comments[1]["body"] == f"{MARKER}\nfake results"


def test_pr_comment_and_job_summary_carry_only_the_escaped_text(
    tmp_path: Path, github: tuple[FakeGitHub, dict[str, str]]
) -> None:
    fake, env = github
    step = tmp_path / "step.md"
    markdown = render_markdown([], [{"model": PAYLOAD, "error": PAYLOAD}])
    assert publish_github(markdown, env={**env, "GITHUB_STEP_SUMMARY": str(step)}).comment == "created"
    for text in (fake.comments[-1]["body"], step.read_text()):
        assert PAYLOAD not in text and f"- ❌ {ESCAPED}: {ESCAPED}" in text


def test_the_promotion_verdict_both_scores_and_the_reason_are_shown_escaped(tmp_path: Path) -> None:
    decision = Promotion("kept", PAYLOAD, "test_accuracy", 3, 0.91, (0.88, 0.94), 2, 0.93, (0.9, 0.95), "rescored")
    markdown = render_markdown([make_summary(tmp_path, promotion=decision)])
    lines = markdown.splitlines()
    assert "Promotion: **champion v2 kept; v3 is the challenger**" in lines
    assert "| challenger | 3 | 0.91 | \\[0.88, 0.94\\] | now |" in lines
    assert "| champion | 2 | 0.93 | \\[0.90, 0.95\\] | rescored |" in lines
    assert f"Why: {ESCAPED}" in lines and PAYLOAD not in markdown
    assert "Promotion:" not in render_markdown([make_summary(tmp_path)])  # nothing registered, nothing to show
    fair = Promotion("promoted", "r", "test_accuracy", 3, 0.91, None, 2, 0.88, None, "unseen", 0.0, 412, 0.95)
    lines = render_markdown([make_summary(tmp_path, promotion=fair)]).splitlines()
    assert "| challenger there | 3 | 0.95 | – | now, on the 412 test examples it never trained on |" in lines
    assert "| champion | 2 | 0.88 | – | now, on the 412 test examples it never trained on |" in lines


def test_the_data_notes_are_shown_escaped_under_their_model(tmp_path: Path) -> None:
    notes = ["no face found in 12 of 3023 photos: skipped", PAYLOAD]
    markdown = render_markdown([make_summary(tmp_path, data_notes=notes)])
    lines = markdown.splitlines()
    assert "Data: no face found in 12 of 3023 photos: skipped" in lines
    assert f"Data: {ESCAPED}" in lines and PAYLOAD not in markdown
    assert "Data:" not in render_markdown([make_summary(tmp_path)])


def test_a_staged_search_shows_where_its_time_went(tmp_path: Path) -> None:
    staged = {
        "param": "fine_tune_blocks",
        "seconds": {"0": 240.0, "1": 662.0},
        "trials": {"0": 18, "1": 4},
        "opened": {"1": 18},
    }
    markdown = render_markdown([make_summary(tmp_path, staged=staged)])
    # Parentheses are escaped (the text is untrusted); they render as written.
    line = "Time by fine_tune_blocks: 0: 4m 00s \\(18 trials\\), 1: 11m 02s \\(4 trials, from trial 18\\)"
    assert line in markdown.splitlines()
    assert "Time by" not in render_markdown([make_summary(tmp_path)])  # not staged: no line
