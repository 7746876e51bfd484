"""Render what users look at, for the docs: the MLflow UI of a real search and its result e-mail.

    source scripts/offline-env.sh   # on a machine without a network (it sets MLOPS_FACE_WEIGHTS)
    python scripts/screenshots.py [--out docs/images]

In a temporary folder it commits a copy of ``models/<model>`` to a fresh Git repository,
starts ``mlflow server`` on 127.0.0.1, runs ``mlops run --notify queue`` against it (a real,
small search that registers a champion), then photographs with headless Chromium (Debian's
``chromium`` package) the experiment's runs, the parent run, the best trial's run,
the registered model and the queued result e-mail's HTML. Each PNG is checked not to be blank,
then quantized so it stays small enough to commit. Exit 0 when every picture was written.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from html import escape
from pathlib import Path
from urllib.parse import quote

from PIL import Image, ImageChops, ImageStat

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# The MLflow UI auto-opens its AI-assistant panel when the page's host is 127.0.0.1 or
# localhost; the browser reaches the server under this name instead (host-resolver rule).
ALIAS = "mlflow.screenshots"
# The UI opens in its GenAI mode unless told otherwise; our experiments are model training.
ML_MODE = "workflowType=machine_learning"
MAX_BYTES = 150_000


class ScreenshotError(Exception):
    """Something the user can fix: the message is one line naming it."""


@dataclass
class Page:
    """One picture: where it comes from and what must be on it."""

    name: str
    url: str
    expect: tuple[str, ...]  # text the rendered DOM must hold before the picture is taken
    size: tuple[int, int] = (1280, 800)
    trim: bool = False  # cut the empty bottom (the e-mail is shorter than its window)
    region: tuple[int, int, int, int] | None = None  # (left, top, right, bottom) that must not be blank


def find_browser() -> str:
    """The Chromium executable, or a ``ScreenshotError`` naming the package to install."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise ScreenshotError("no Chromium found on PATH: apt-get install -y --no-install-recommends chromium")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> str:
    """A console script of this virtualenv (``mlops``, ``mlflow``), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else name


@contextmanager
def mlflow_server(base: Path, port: int) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 (one worker, SQLite, artifacts over HTTP); yields its URL."""
    url = f"http://127.0.0.1:{port}"
    origin = f"http://{ALIAS}:{port}"
    command = [
        tool("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}",
        "--serve-artifacts", "--artifacts-destination", str(base / "artifacts"),
        # the browser's Host header and Origin are the alias: allow them, nothing else
        "--allowed-hosts", f"127.0.0.1:{port},{ALIAS}:{port}", "--cors-allowed-origins", origin,
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # starts in ~8 s, not ~47 s
    env.pop("MLFLOW_TRACKING_URI", None)
    log = base / "mlflow-server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise ScreenshotError(f"mlflow server did not start: see {log}")
            time.sleep(0.5)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def make_repo(base: Path, model: str) -> Path:
    """A Git repository holding a copy of ``models/<model>``, committed once (a first push)."""
    source = ROOT / "models" / model
    if not (source / "model.yaml").is_file():
        raise ScreenshotError(f"--model {model}: no models/{model}/model.yaml; name a folder under models/")
    repo = base / "repo"
    shutil.copytree(source, repo / "models" / model, ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-C", str(repo), "-c", "user.name=mlops docs", "-c", "user.email=docs@example.org"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", f"add {model}"], check=True)
    return repo


def run_search(repo: Path, url: str, args: argparse.Namespace) -> dict[str, object]:
    """``mlops run`` on the repository (local runner, e-mail queued); returns its summary.json."""
    flags = ["--max-trials", str(args.max_trials)]
    if args.goal is not None:
        flags += ["--goal", str(args.goal)]
    if args.model == "face_vgg16":
        weights = args.weights or os.environ.get("MLOPS_FACE_WEIGHTS") or "imagenet"
        flags += ["--weights", weights, "--set", f"data.input_size={args.input_size}"]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": url,
        "MLOPS_SMTP_HOST": "127.0.0.1",  # queued, never sent: nothing connects to it
        "MLOPS_MAIL_FROM": "mlops@example.org",
        "MLOPS_MAIL_TO": "team@example.org",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    command = [tool("mlops"), "run", "--repo", str(repo), "--runner", "local", "--notify", "queue"]
    command += ["--summary", str(repo.parent / "summary.md"), *flags]
    print("$", " ".join(command), flush=True)
    result = subprocess.run(command, env=env, cwd=repo, check=False)
    summary_file = repo / "mlops-runs" / args.model / "summary.json"
    if not summary_file.is_file():
        raise ScreenshotError(f"mlops run exited {result.returncode} without {summary_file}: see its output above")
    summary: dict[str, object] = json.loads(summary_file.read_text())
    if not summary.get("registered_model"):
        raise ScreenshotError(
            f"the search did not meet its goal, so no champion was registered: lower --goal (now {args.goal})"
        )
    return summary


def mail_html(outbox: Path, folder: Path) -> Path:
    """The queued result e-mail's HTML part, written with its inline plots beside it."""
    files = sorted(outbox.glob("*.eml"))
    if not files:
        raise ScreenshotError(f"no queued e-mail in {outbox}: mlops run --notify queue should have written one")
    message = email.message_from_bytes(files[-1].read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    body = message.get_body(preferencelist=("html",))
    if body is None:
        raise ScreenshotError(f"{files[-1]} has no text/html part")
    html = body.get_content()
    folder.mkdir(parents=True, exist_ok=True)
    # the plots are parts beside the HTML (multipart/related), named by Content-ID
    for number, part in enumerate(message.walk()):
        cid = str(part.get("Content-ID", "")).strip("<>")
        if cid and part.get_content_maintype() == "image":
            name = f"inline-{number}.png"
            (folder / name).write_bytes(part.get_content())
            html = html.replace(f"cid:{cid}", name)
    # From, To and Subject above the body, as a mail client shows them
    header = "".join(f"<div><b>{key}:</b> {escape(str(message[key]))}</div>" for key in ("From", "To", "Subject"))
    banner = f'<div style="font-family: sans-serif; border-bottom: 1px solid #ccc; padding: 8px">{header}</div>'
    page = folder / "mail.html"
    page.write_text(re.sub(r"<body[^>]*>", lambda tag: tag.group(0) + banner, html, count=1), encoding="utf-8")
    return page


def chromium(browser: str, profile: Path, page: Page, budget_ms: int, screenshot: Path | None = None) -> str:
    """Load ``page`` in headless Chromium; returns the rendered DOM, or writes a screenshot.

    ``--virtual-time-budget`` lets the page's scripts run that long (in virtual time) before
    the DOM is dumped or the picture taken: the MLflow UI fetches its data after it loads.
    """
    width, height = page.size
    command = [
        browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--hide-scrollbars", "--no-proxy-server", "--no-first-run",
        f"--host-resolver-rules=MAP {ALIAS} 127.0.0.1", f"--user-data-dir={profile}",
        f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}",
        f"--screenshot={screenshot}" if screenshot else "--dump-dom", page.url,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    if result.returncode != 0:
        raise ScreenshotError(f"chromium exited {result.returncode} on {page.url}: {result.stderr.strip()[-300:]}")
    return result.stdout


def blank_reason(image: Image.Image) -> str | None:
    """Why a picture looks empty (one colour nearly everywhere, or no contrast), else ``None``."""
    rgb = image.convert("RGB")
    colours = rgb.getcolors(maxcolors=rgb.width * rgb.height) or []
    dominant = max(count for count, _ in colours) / (rgb.width * rgb.height)
    spread = ImageStat.Stat(rgb.convert("L")).stddev[0]
    if dominant > 0.97:
        return f"{dominant:.0%} of its pixels are one colour"
    if spread < 12:
        return f"its grey levels hardly vary (standard deviation {spread:.1f})"
    return None


def trimmed(image: Image.Image) -> Image.Image:
    """``image`` without the empty band below its content (a margin kept)."""
    background = Image.new("RGB", image.size, image.getpixel((image.width - 1, image.height - 1)))
    box = ImageChops.difference(image, background).getbbox()
    return image.crop((0, 0, image.width, min(image.height, box[3] + 16))) if box else image


def shrink(image: Image.Image, out: Path) -> int:
    """Write ``image`` as a small PNG at ``out`` (128 colours, downscaled if need be); returns its size."""
    scale = 1.0
    while True:
        size = (round(image.width * scale), round(image.height * scale))
        resized = image if scale == 1.0 else image.resize(size, Image.Resampling.LANCZOS)
        small = resized.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        small.save(out, optimize=True)
        if out.stat().st_size <= MAX_BYTES or scale < 0.5:
            return out.stat().st_size
        scale *= 0.85


def capture(browser: str, profile: Path, page: Page, raw_dir: Path, out_dir: Path) -> Path:
    """Photograph ``page`` once its DOM shows what it must, and check the picture is not blank."""
    missing: list[str] = []
    reason: str | None = None
    # The SPA sometimes draws its charts late, whatever the budget (lazy chunks): try again, waiting longer
    for budget in (15_000, 30_000, 30_000, 60_000, 60_000):
        dom = chromium(browser, profile, page, budget)
        missing = [text for text in page.expect if text not in dom]
        if missing:
            continue
        raw = raw_dir / f"{page.name}.png"
        chromium(browser, profile, page, budget, screenshot=raw)
        image = Image.open(raw).convert("RGB")
        image = trimmed(image) if page.trim else image
        reason = blank_reason(image.crop(page.region) if page.region else image)
        if reason is None:
            out = out_dir / f"{page.name}.png"
            print(f"{out}: {shrink(image, out) // 1000} KB", flush=True)
            return out
    if missing:
        raise ScreenshotError(f"{page.url} never showed {', '.join(map(repr, missing))}; see {raw_dir}")
    raise ScreenshotError(f"the picture of {page.url} looks blank: {reason}")


def pages(url: str, summary: dict[str, object], mail: Path) -> list[Page]:
    """What to photograph, from the search's summary.json."""
    port = url.rsplit(":", 1)[1]
    base = f"http://{ALIAS}:{port}/#"
    experiment, parent, study = summary["mlflow_experiment_id"], summary["mlflow_parent_run_id"], summary["study_name"]
    best = summary["best"]
    assert isinstance(best, dict) and isinstance(study, str)
    assert isinstance(summary["goal"], dict)
    metric = str(summary["goal"]["metric"])
    trials = tuple(f"trial-{number}" for number in range(int(str(summary["trials_total"]))))
    name, version = str(summary["registered_model"]).rsplit("/", 1)
    model = str(summary["model"])
    descending = "false" if summary["goal"].get("direction") != "minimize" else "true"  # best first
    by_metric = f"orderByKey={quote(f'metrics.`{metric}`')}&orderByAsc={descending}"
    return [
        # sorted by the goal metric the runs list is flat (a leaderboard); the parent run's page shows the nesting
        Page("mlflow-experiment", f"{base}/experiments/{experiment}/runs?{ML_MODE}&{by_metric}", (study, *trials)),
        Page("mlflow-parent-run", f"{base}/experiments/{experiment}/runs/{parent}?{ML_MODE}", (study, *trials)),
        # the trial's overview (metrics, parameters): its Model metrics tab draws charts lazily, and
        # headless Chromium's virtual time often photographs them as spinners
        Page(
            "mlflow-trial-run",
            f"{base}/experiments/{experiment}/runs/{best['mlflow_run_id']}?{ML_MODE}",
            (f"trial-{best['number']}", metric, study),
        ),
        Page("mlflow-model", f"{base}/models/{name}?{ML_MODE}", (name, f"Version {version}", "champion")),
        Page("result-email", mail.as_uri(), (model, "reached its goal"), size=(900, 2400), trim=True),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the search, photograph what users see, write the PNGs; 0 on success, 2 on a user error."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="where the PNGs go")
    parser.add_argument("--model", default="face_vgg16", help="a folder under models/ (default face_vgg16)")
    parser.add_argument("--goal", type=float, default=0.93, help="the goal, so a few trials run before it is met")
    parser.add_argument("--max-trials", type=int, default=6)
    parser.add_argument("--input-size", type=int, default=32, help="face_vgg16: image pixels (32: seconds a trial)")
    parser.add_argument("--weights", help="face_vgg16: VGG16 weights; default $MLOPS_FACE_WEIGHTS, else imagenet")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (server log, raw pictures)")
    args = parser.parse_args(argv)
    try:
        browser = find_browser()
        base = Path(tempfile.mkdtemp(prefix="mlops-screenshots-"))
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            with mlflow_server(base, free_port()) as url:
                repo = make_repo(base, args.model)
                summary = run_search(repo, url, args)
                mail = mail_html(repo / "mlops-runs" / args.model / "outbox", base / "mail")
                for page in pages(url, summary, mail):
                    # one profile for all: its HTTP cache holds the UI's scripts, which a first load
                    # sometimes fetches too slowly for the charts to be drawn in the time budget
                    capture(browser, base / "chromium-profile", page, base, args.out)
        finally:
            if args.keep:
                print(f"kept {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)
    except ScreenshotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
