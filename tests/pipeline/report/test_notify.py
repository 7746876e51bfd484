"""Result e-mails against a real SMTP server (aiosmtpd) and a real webhook on 127.0.0.1."""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import markupsafe
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

from pipeline.errors import MlopsError
from pipeline.report.notify import outbox as notify_outbox
from pipeline.report.notify.deliver import NotifySettings, event_for, flush_outbox, notify
from pipeline.report.notify.message import subject_for
from pipeline.summary import BestTrial, GoalSpec, TuneSummary
from tests.cli import MLOPS
from tests.pipeline.smtp import PASSWORD, USER, authenticator, free_port

# untrusted text as a model name, error or parameter value could carry it
PAYLOAD = "<script>alert(1)</script> [x](javascript:alert(1)) @everyone |"


# --- helpers ---------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A socket listening on 127.0.0.1 that never accepts: a connection would wait in its backlog."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(5)
        sock.setblocking(False)
        yield sock


def assert_no_connection(sock: socket.socket) -> None:
    """Nobody connected to ``sock`` (the code under test connects synchronously, in-process)."""
    with pytest.raises(BlockingIOError):
        sock.accept()


def make_summary(tmp_path: Path, **overrides: Any) -> TuneSummary:
    plots = {}
    for title, name, color in (
        ("Optimization history", "history.png", "red"),
        ("Parameter importance", "importance.png", "blue"),
    ):
        path = tmp_path / "run" / "plots" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), color).save(path)
        plots[title] = str(path)
    values: dict[str, Any] = {
        "model": "face_vgg16",
        "goal": GoalSpec(metric="val_accuracy", direction="maximize", target=0.9),
        "goal_met": True,
        "best": BestTrial(
            number=7,
            value=0.95,
            params={"learning_rate": 0.00123456, "dense_units": 256, "optimizer": "adam"},
            interval=(0.9123, 0.9765),
            test_value=0.9387,
            mlflow_run_id="abc123",
        ),
        "trials_total": 12,
        "trials_complete": 9,
        "trials_pruned": 2,
        "trials_failed": 1,
        "wall_seconds": 125.0,
        "tracking_uri": "http://mlflow.example.org:5000",
        "mlflow_experiment_id": "4",
        "mlflow_parent_run_id": "parent42",
        "registered_model": "face_vgg16/3",
        "kind": "cnn",
        "restarts": 1,
        "plots": plots,
        "run_dir": str(tmp_path / "run"),
    }
    values.update(overrides)
    return TuneSummary(**values)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    directory = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def server_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    return context


def settings_for(port: int, tmp_path: Path, **overrides: Any) -> NotifySettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "sender": "mlops@example.org",
        "recipients": ["team@example.org", "lead@example.org"],
        "timeout": 2.0,
        "retries": 2,
        "backoff": 0.0,
        "outbox": tmp_path / "outbox",
    }
    values.update(overrides)
    return NotifySettings(**values)


def bodies(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


# --- settings --------------------------------------------------------------------------


def test_env_overrides_config_and_password_stays_hidden() -> None:
    config = {
        "host": "smtp.example.org",
        "port": 25,
        "recipients": ["a@example.org"],
        "sender": "ci@example.org",
        "retries": 5,
    }
    env = {
        "MLOPS_SMTP_PORT": "2525",
        "MLOPS_SMTP_SECURITY": "SSL",
        "MLOPS_SMTP_USER": USER,
        "MLOPS_SMTP_PASSWORD": PASSWORD,
        "MLOPS_MAIL_TO": "x@example.org, y@example.org",
        "MLOPS_WEBHOOK_URL": "https://hooks.example.org/services/T000/SECRET",
    }
    settings = NotifySettings.from_config(config, env=env)
    assert (settings.host, settings.port, settings.security) == ("smtp.example.org", 2525, "ssl")
    assert settings.recipients == ["x@example.org", "y@example.org"]
    assert settings.retries == 5 and settings.password == PASSWORD
    for shown in (repr(settings), str(settings), f"{settings}"):
        assert PASSWORD not in shown and "SECRET" not in shown and "***" in shown


def test_default_port_follows_security() -> None:
    base = {"host": "h", "recipients": ["a@b.c"], "sender": "s@b.c"}
    assert NotifySettings.from_config(base, env={}).smtp_port == 587
    assert NotifySettings.from_config({**base, "security": "ssl"}, env={}).smtp_port == 465


@pytest.mark.parametrize(
    ("config", "env", "names"),
    [
        ({"host": "h", "sender": "s@b.c"}, {}, "MLOPS_MAIL_TO"),
        (
            {"host": "h", "recipients": ["a@b.c"], "sender": "s@b.c"},
            {"MLOPS_SMTP_PORT": "smtp"},
            "MLOPS_SMTP_PORT",
        ),
        (
            {"host": "h", "recipients": ["a@b.c"], "sender": "s@b.c", "port": 70000},
            {},
            "notify.port",
        ),
        (
            {"host": "h", "recipients": ["a@b.c"], "sender": "s@b.c"},
            {"MLOPS_SMTP_SECURITY": "tls"},
            "MLOPS_SMTP_SECURITY",
        ),
        (
            {"host": "h", "recipients": ["a@b.c"], "sender": "s@b.c", "colour": "red"},
            {},
            "notify.colour",
        ),
        ({"host": "h", "recipients": ["a@b.c"], "password": "x"}, {}, "MLOPS_SMTP_PASSWORD"),
        (
            {"host": "h", "recipients": ["a@b.c"], "sender": "s@b.c"},
            {"MLOPS_SMTP_USER": "u"},
            "MLOPS_SMTP_PASSWORD",
        ),
        ({"host": "h", "recipients": ["a@b.c"]}, {}, "MLOPS_MAIL_FROM"),
        # a line break in an address would inject a header (Bcc:) into every result e-mail
        ({"host": "h", "sender": "s@b.c"}, {"MLOPS_MAIL_TO": "a@b.c\r\nBcc: x@evil.example"}, "MLOPS_MAIL_TO"),
        ({"host": "h", "recipients": ["a@b.c"], "sender": "s@b.c\nBcc: x@evil.example"}, {}, "notify.sender"),
        # only http(s) webhooks: file:, javascript: and data: are not chat services
        ({"webhook_url": "file:///etc/passwd"}, {}, "notify.webhook_url"),
        ({}, {"MLOPS_WEBHOOK_URL": "javascript:alert(1)"}, "MLOPS_WEBHOOK_URL"),
        ({"allow_plaintext_login": "maybe"}, {}, "notify.allow_plaintext_login"),
    ],
)
def test_misconfiguration_is_one_line_naming_the_setting(
    config: dict[str, Any], env: dict[str, str], names: str
) -> None:
    with pytest.raises(MlopsError) as raised:
        NotifySettings.from_config(config, env=env)
    message = str(raised.value)
    assert names in message and "\n" not in message


def test_notify_section_must_be_a_mapping() -> None:
    with pytest.raises(MlopsError, match="notify: in mlops.yaml must be a mapping"):
        NotifySettings.from_config(["smtp.example.org"], env={})  # type: ignore[arg-type]


def test_nothing_configured_skips_with_a_notice(tmp_path: Path) -> None:
    settings = NotifySettings.from_config({}, env={})
    result = notify(settings, "goal_met", make_summary(tmp_path))
    assert result.status == "skipped" and "MLOPS_SMTP_HOST" in result.message
    assert not (tmp_path / "run" / "outbox").exists()


# --- subjects --------------------------------------------------------------------------


def test_subjects(tmp_path: Path) -> None:
    met = make_summary(tmp_path)
    assert event_for(met) == "goal_met"
    assert subject_for("goal_met", "face_vgg16", met) == ("[mlops] face_vgg16: goal met (val_accuracy 0.95 >= 0.90)")
    missed = make_summary(tmp_path, goal_met=False, best=BestTrial(1, 0.8512, {}))
    assert event_for(missed) == "goal_not_met"
    assert subject_for("goal_not_met", "m", missed) == "[mlops] m: goal not met (val_accuracy 0.8512 < 0.90)"
    rmse = make_summary(tmp_path, goal=GoalSpec("rmse", "minimize", 0.5), best=BestTrial(1, 0.3, {}))
    assert "rmse 0.30 <= 0.50" in subject_for("goal_met", "m", rmse)
    assert subject_for("restarted", "m", met) == "[mlops] m: restarted after a crash (restart 1)"
    assert subject_for("failed", "m", error="no Docker engine\ntraceback") == ("[mlops] m: failed (no Docker engine)")


# --- delivery --------------------------------------------------------------------------


def test_mail_with_auth_carries_figures_params_and_plots(
    tmp_path: Path,
    smtp_server: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    controller, handler = smtp_server(authenticator=authenticator, auth_require_tls=False)
    settings = settings_for(controller.port, tmp_path, username=USER, password=PASSWORD, allow_plaintext_login=True)
    summary = make_summary(tmp_path)

    result = notify(settings, "goal_met", summary)

    assert result.status == "sent" and result.attempts == 1, result.message
    envelope = handler.envelopes[0]
    assert envelope.rcpt_tos == ["team@example.org", "lead@example.org"]
    msg = handler.message()
    assert msg["Subject"] == "[mlops] face_vgg16: goal met (val_accuracy 0.95 >= 0.90)"
    text, html = bodies(msg)
    for body in (text, html):
        for figure in (
            "0.95",
            "[0.9123, 0.9765]",
            "0.9387",
            "12 (9 complete, 2 pruned, 1 failed)",
            "2m 05s",
            "learning_rate",
            "0.001235",
            "dense_units",
            "256",
            "adam",
            "face_vgg16/3",
            "cnn",
            "http://mlflow.example.org:5000/#/experiments/4/runs/parent42",
        ):
            assert figure in body, figure
    assert "Restarts:         1" in text
    attachments = list(msg.iter_attachments())
    assert sorted(a.get_filename() for a in attachments) == ["history.png", "importance.png"]
    assert all(a.get_content_type() == "image/png" for a in attachments)
    history = Path(summary.plots["Optimization history"]).read_bytes()
    assert history in [a.get_content() for a in attachments]
    # the HTML shows the plots inline, by Content-ID
    related = [p for p in msg.walk() if p.get_content_type() == "multipart/related"]
    assert related and "cid:" in html
    cids = [p["Content-ID"].strip("<>") for p in related[0].iter_parts() if p["Content-ID"]]
    assert len(cids) == 2 and all(f"cid:{cid}" in html for cid in cids)

    raw = envelope.content.decode("utf-8", "replace")
    captured = capsys.readouterr()
    for place in (raw, caplog.text, captured.out, captured.err, result.message, repr(settings)):
        assert PASSWORD not in place


def test_failed_event_without_summary_escapes_html(tmp_path: Path, smtp_server: Any) -> None:
    controller, handler = smtp_server()
    settings = settings_for(controller.port, tmp_path)
    result = notify(
        settings,
        "failed",
        model="ann_demo",
        error="build failed: <no Docker engine>",
        run_dir=tmp_path,
    )
    assert result.status == "sent"
    msg = handler.message()
    assert msg["Subject"] == "[mlops] ann_demo: failed (build failed: <no Docker engine>)"
    text, html = bodies(msg)
    assert "build failed: <no Docker engine>" in text
    assert "&lt;no Docker engine&gt;" in html and "<no Docker" not in html


def test_starttls_with_login(tmp_path: Path, smtp_server: Any, tls_files: tuple[Path, Path]) -> None:
    controller, handler = smtp_server(
        tls_context=server_context(tls_files),
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    settings = settings_for(
        controller.port,
        tmp_path,
        security="starttls",
        ca_file=tls_files[0],
        username=USER,
        password=PASSWORD,
    )
    result = notify(settings, "goal_not_met", make_summary(tmp_path, goal_met=False))
    assert result.status == "sent", result.message
    assert handler.message()["Subject"].startswith("[mlops] face_vgg16: goal not met")


def test_ssl_from_the_first_byte(tmp_path: Path, smtp_server: Any, tls_files: tuple[Path, Path]) -> None:
    controller, handler = smtp_server(ssl_context=server_context(tls_files))
    settings = settings_for(controller.port, tmp_path, security="ssl", ca_file=tls_files[0])
    assert notify(settings, "restarted", make_summary(tmp_path)).status == "sent"
    assert "restart 1" in handler.message()["Subject"]


def test_untrusted_certificate_is_queued_not_raised(
    tmp_path: Path, smtp_server: Any, tls_files: tuple[Path, Path]
) -> None:
    controller, handler = smtp_server(ssl_context=server_context(tls_files))
    settings = settings_for(controller.port, tmp_path, security="ssl", retries=0)  # system CAs
    result = notify(settings, "goal_met", make_summary(tmp_path))
    assert result.status == "queued" and "CERTIFICATE_VERIFY_FAILED" in (result.error or "")
    assert handler.envelopes == []


def test_server_down_retries_then_outbox_then_flush(
    tmp_path: Path, smtp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens: connection refused
    settings = settings_for(port, tmp_path, retries=2)
    result = notify(settings, "goal_met", make_summary(tmp_path))

    assert result.status == "queued" and result.attempts == 3
    assert "ConnectionRefusedError" in (result.error or "")
    assert result.outbox_file is not None and result.outbox_file.suffix == ".eml"
    saved = BytesParser(policy=policy.default).parsebytes(result.outbox_file.read_bytes())
    assert saved["Subject"] == "[mlops] face_vgg16: goal met (val_accuracy 0.95 >= 0.90)"
    lines = [json.loads(line) for line in (tmp_path / "outbox" / "outbox.jsonl").read_text().splitlines()]
    assert lines[0]["action"] == "queued" and lines[0]["file"] == result.outbox_file.name
    assert lines[0]["recipients"] == ["team@example.org", "lead@example.org"]

    # still down: the flush keeps it
    assert flush_outbox(settings).remaining == 1
    controller, handler = smtp_server(port=port)
    flushed = flush_outbox(settings)
    assert (flushed.sent, flushed.remaining) == (1, 0)
    assert not result.outbox_file.exists()
    assert handler.message()["Subject"] == saved["Subject"]
    assert len(list(handler.message().iter_attachments())) == 2


def test_auth_failure_is_queued_at_once_without_leaking(
    tmp_path: Path, smtp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    controller, handler = smtp_server(authenticator=authenticator, auth_require_tls=False)
    wrong = "Wr0ng-" + PASSWORD
    settings = settings_for(controller.port, tmp_path, username=USER, password=wrong, allow_plaintext_login=True)
    result = notify(settings, "goal_met", make_summary(tmp_path))
    assert result.status == "queued" and result.attempts == 1
    assert "MLOPS_SMTP_PASSWORD" in (result.error or "")
    recorded = "".join(p.read_text(errors="replace") for p in (tmp_path / "outbox").iterdir())
    for place in (recorded, caplog.text, result.message):
        assert wrong not in place


def test_timeout_is_queued(tmp_path: Path) -> None:
    # a server that accepts the connection but never greets
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        settings = settings_for(silent.getsockname()[1], tmp_path, timeout=0.3, retries=1)
        result = notify(settings, "goal_met", make_summary(tmp_path))
    assert result.status == "queued" and result.attempts == 2
    assert "timed out" in (result.error or "")


def test_outbox_defaults_to_run_dir(tmp_path: Path) -> None:
    settings = settings_for(free_port(), tmp_path, retries=0, outbox=None)
    result = notify(settings, "goal_met", make_summary(tmp_path))
    assert result.outbox_file is not None
    assert result.outbox_file.parent == tmp_path / "run" / "outbox"


# --- webhook ---------------------------------------------------------------------------


@pytest.fixture
def webhook_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append({"path": self.path, "json": json.loads(self.rfile.read(length))})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/T0/SECRET", received
    server.shutdown()
    server.server_close()


def test_webhook_gets_the_subject(
    tmp_path: Path, smtp_server: Any, webhook_server: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook_server
    controller, _ = smtp_server()
    settings = settings_for(controller.port, tmp_path, webhook_url=url)
    result = notify(settings, "goal_met", make_summary(tmp_path))
    assert (result.status, result.webhook) == ("sent", "sent")
    assert received == [
        {
            "path": "/services/T0/SECRET",
            # Slack reads < > & as markup: they arrive as entities and show as written
            "json": {"text": "[mlops] face_vgg16: goal met (val_accuracy 0.95 &gt;= 0.90)"},
        }
    ]


def test_webhook_down_is_queued_then_flushed(tmp_path: Path, webhook_server: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = webhook_server
    down = NotifySettings(
        webhook_url=f"http://127.0.0.1:{free_port()}/hook",
        retries=1,
        backoff=0.0,
        timeout=2.0,
        outbox=tmp_path / "outbox",
    )
    result = notify(down, "failed", model="m", error="boom")
    assert (result.status, result.webhook) == ("skipped", "queued")
    up = NotifySettings(webhook_url=url, timeout=2.0, outbox=tmp_path / "outbox")
    assert flush_outbox(up).sent == 1
    assert received[0]["json"] == {"text": "[mlops] m: failed (boom)"}
    assert not list((tmp_path / "outbox").glob("*.webhook.json"))


# --- cleartext login ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "env", "name"),
    [
        ({"security": "none"}, {}, "notify.security"),
        ({}, {"MLOPS_SMTP_SECURITY": "none"}, "MLOPS_SMTP_SECURITY"),
    ],
)
def test_cleartext_login_is_refused_before_any_connection(
    listener: socket.socket, config: dict[str, Any], env: dict[str, str], name: str
) -> None:
    base = {"host": "127.0.0.1", "port": listener.getsockname()[1], "recipients": ["a@b.c"], "sender": "s@b.c"}
    login = {"MLOPS_SMTP_USER": USER, "MLOPS_SMTP_PASSWORD": PASSWORD}
    with pytest.raises(MlopsError) as raised:
        NotifySettings.from_config({**base, **config}, env={**login, **env})
    message = str(raised.value)
    assert "\n" not in message and PASSWORD not in message
    for part in (
        f"{name}=none",
        "starttls or ssl",
        "allow_plaintext_login: true",
        "MLOPS_SMTP_ALLOW_PLAINTEXT_LOGIN=1",
    ):
        assert part in message, part
    assert_no_connection(listener)
    # without a login, a plain local relay stays fine
    assert NotifySettings.from_config({**base, **config}, env=env).security == "none"


@pytest.mark.parametrize(
    ("config", "env"),
    [({"allow_plaintext_login": True}, {}), ({}, {"MLOPS_SMTP_ALLOW_PLAINTEXT_LOGIN": "1"})],
)
def test_cleartext_login_with_opt_in_is_delivered(
    tmp_path: Path, smtp_server: Any, config: dict[str, Any], env: dict[str, str]
) -> None:
    controller, handler = smtp_server(authenticator=authenticator, auth_require_tls=False)
    base = {
        "host": "127.0.0.1",
        "port": controller.port,
        "security": "none",
        "recipients": ["team@example.org"],
        "outbox": str(tmp_path / "outbox"),
    }
    login = {"MLOPS_SMTP_USER": USER, "MLOPS_SMTP_PASSWORD": PASSWORD}
    settings = NotifySettings.from_config({**base, **config}, env={**login, **env})
    assert notify(settings, "goal_met", make_summary(tmp_path)).status == "sent"
    assert handler.authenticated == [True]


# --- untrusted text -------------------------------------------------------------------------


def test_untrusted_text_is_escaped_in_the_mail_and_bad_links_dropped(tmp_path: Path, smtp_server: Any) -> None:
    controller, handler = smtp_server()
    settings = settings_for(controller.port, tmp_path)
    summary = make_summary(
        tmp_path,
        model=PAYLOAD,
        best=BestTrial(7, 0.95, {"optimizer": PAYLOAD}, test_value=0.9),
        registered_model=PAYLOAD,
        mlflow_run_url="javascript:alert(1)",
    )
    assert notify(settings, "goal_met", summary).status == "sent"
    assert notify(settings, "failed", model=PAYLOAD, error=PAYLOAD, run_dir=tmp_path).status == "sent"
    escaped = str(markupsafe.escape(PAYLOAD))
    for index in (0, 1):
        text, html = bodies(handler.message(index))
        assert PAYLOAD not in html and "<script>" not in html
        assert escaped in html
        assert PAYLOAD in text  # plain text is shown as it is: nothing renders it
    _, html = bodies(handler.message(0))
    assert "<a " not in html and "javascript:alert(1)" in html  # shown as text, never a link
    # an http(s) tracking server is linked, anything else is not
    linked = make_summary(tmp_path, mlflow_run_url=None, tracking_uri="file:///srv/mlruns")
    assert notify(settings, "goal_met", linked).status == "sent"
    assert "<a " not in bodies(handler.message())[1]


def test_a_line_break_in_a_model_name_neither_adds_a_header_nor_loses_the_mail(
    tmp_path: Path, smtp_server: Any
) -> None:
    controller, handler = smtp_server()
    settings = settings_for(controller.port, tmp_path)
    # U+2028 is a line break to Python's e-mail package: the header could not be set
    evil = "m\u2028Bcc: victim@evil.example\r\n\r\nforged body"
    result = notify(settings, "failed", model=evil, error="boom", run_dir=tmp_path)
    assert result.status == "sent", result.message
    (envelope,) = handler.envelopes
    assert envelope.rcpt_tos == ["team@example.org", "lead@example.org"]
    msg = handler.message()
    assert msg["Bcc"] is None
    assert msg["Subject"] == "[mlops] m Bcc: victim@evil.example forged body: failed (boom)"


def test_only_png_files_are_attached_as_plots(tmp_path: Path, smtp_server: Any) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    summary = make_summary(tmp_path)
    summary.plots.update({"Key": str(key), "Environment": "/proc/self/environ"})
    controller, handler = smtp_server()
    assert notify(settings_for(controller.port, tmp_path), "goal_met", summary).status == "sent"
    names = sorted(a.get_filename() for a in handler.message().iter_attachments())
    assert names == ["history.png", "importance.png"]


def test_webhook_text_is_escaped_for_chat(tmp_path: Path, webhook_server: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = webhook_server
    settings = NotifySettings(webhook_url=url, timeout=2.0, outbox=tmp_path / "outbox")
    notify(settings, "failed", model="<!channel>", error="see <https://evil.example|this> @everyone")
    assert received[0]["json"] == {
        "text": "[mlops] &lt;!channel&gt;: failed (see &lt;https://evil.example|this&gt; @\u200deveryone)"
    }


# --- queue now, deliver later -------------------------------------------------------------


def test_queue_renders_the_same_mail_without_smtp_then_flush_sends_it(
    tmp_path: Path, smtp_server: Any, listener: socket.socket
) -> None:
    summary = make_summary(tmp_path)
    offline = settings_for(listener.getsockname()[1], tmp_path)
    queued = notify(offline, "goal_met", summary, deliver=False)
    assert (queued.status, queued.attempts) == ("queued", 0)
    assert queued.outbox_file is not None and queued.outbox_file.parent == tmp_path / "outbox"
    assert_no_connection(listener)

    controller, handler = smtp_server()
    settings = settings_for(controller.port, tmp_path)
    assert notify(settings, "goal_met", summary).status == "sent"  # the same result, sent now
    now = handler.message()
    saved = BytesParser(policy=policy.default).parsebytes(queued.outbox_file.read_bytes())
    assert isinstance(saved, EmailMessage)
    for header in ("Subject", "From", "To", "X-Mlops-Event"):
        assert saved[header] == now[header], header
    assert bodies(saved)[0] == bodies(now)[0]
    assert [a.get_content() for a in saved.iter_attachments()] == [a.get_content() for a in now.iter_attachments()]

    flushed = flush_outbox(settings)
    assert (flushed.sent, flushed.remaining) == (1, 0)
    assert handler.message()["Subject"] == now["Subject"] and len(handler.envelopes) == 2


def test_a_rewritten_queued_mail_goes_only_to_the_configured_recipients(tmp_path: Path, smtp_server: Any) -> None:
    # model code could write into the outbox before `mlops notify` sends it with the password
    forged = EmailMessage()
    forged["Subject"] = "invoice"
    forged["From"] = "ceo@evil.example"
    forged["To"] = "victim@evil.example"
    forged["Bcc"] = "hidden@evil.example"
    forged.set_content("pay now")
    notify_outbox.queue_email(tmp_path / "outbox", forged, model="m", event="failed", attempts=0, error="")
    controller, handler = smtp_server()
    settings = settings_for(controller.port, tmp_path)
    assert flush_outbox(settings).sent == 1
    (envelope,) = handler.envelopes
    assert envelope.rcpt_tos == ["team@example.org", "lead@example.org"]
    assert envelope.mail_from == "mlops@example.org"
    msg = handler.message()
    assert (msg["From"], msg["To"], msg["Bcc"]) == ("mlops@example.org", "team@example.org, lead@example.org", None)


def test_a_rewritten_queued_webhook_posts_only_escaped_text(
    tmp_path: Path, webhook_server: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook_server
    payload = {"text": "<!channel> <https://evil.example|log in>", "blocks": [{"type": "image"}]}
    notify_outbox.queue_webhook(tmp_path / "outbox", payload, model="m", event="failed", attempts=0, error="")
    settings = NotifySettings(webhook_url=url, timeout=2.0, outbox=tmp_path / "outbox")
    assert flush_outbox(settings).sent == 1
    assert received[0]["json"] == {"text": "&lt;!channel&gt; &lt;https://evil.example|log in&gt;"}


# --- `mlops notify` -------------------------------------------------------------------------


def mlops_notify(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real ``mlops notify`` in ``tmp_path``, with only the given MLOPS_* settings."""
    config = tmp_path / "mlops.yaml"
    if not config.exists():
        config.write_text("{}\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_SMTP", "MLOPS_MAIL", "MLOPS_WEBHOOK"))}
    return subprocess.run(
        [*MLOPS, "notify", "--runs-dir", "mlops-runs"],
        cwd=tmp_path,
        env={**clean, "MLOPS_CONFIG": str(config), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def smtp_env(port: int, **extra: str) -> dict[str, str]:
    return {
        "MLOPS_SMTP_HOST": "127.0.0.1",
        "MLOPS_SMTP_PORT": str(port),
        "MLOPS_SMTP_SECURITY": "none",
        "MLOPS_MAIL_FROM": "mlops@example.org",
        "MLOPS_MAIL_TO": "team@example.org",
        **extra,
    }


def test_mlops_notify_exit_codes(tmp_path: Path, smtp_server: Any) -> None:
    nothing = mlops_notify(tmp_path, {})
    assert (nothing.returncode, nothing.stderr) == (0, ""), nothing.stderr
    assert "nothing queued" in nothing.stdout

    port = free_port()
    queued = notify(
        settings_for(port, tmp_path, outbox=None),
        "failed",
        model="m",
        error="boom",
        run_dir=tmp_path / "mlops-runs" / "m",
    )
    assert queued.status == "queued"

    missing = mlops_notify(tmp_path, {})
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1
    assert "MLOPS_SMTP_HOST" in missing.stderr

    down = mlops_notify(tmp_path, smtp_env(port))  # nothing listens: connection refused
    assert down.returncode == 5, down.stdout + down.stderr
    (line,) = down.stdout.splitlines()
    assert line.startswith("notify: mlops-runs/m/outbox: 0 sent, 1 still queued (") and "Refused" in line

    controller, handler = smtp_server(port=port)
    up = mlops_notify(tmp_path, smtp_env(port))
    assert up.returncode == 0, up.stdout + up.stderr
    assert up.stdout.splitlines() == ["notify: mlops-runs/m/outbox: 1 sent, 0 still queued"]
    assert handler.message()["Subject"] == "[mlops] m: failed (boom)"


def test_mlops_notify_refuses_a_cleartext_login_unless_allowed(tmp_path: Path, smtp_server: Any) -> None:
    controller, handler = smtp_server(authenticator=authenticator, auth_require_tls=False)
    run_dir = tmp_path / "mlops-runs" / "m"
    notify(
        settings_for(controller.port, tmp_path, outbox=None),
        "failed",
        model="m",
        error="boom",
        run_dir=run_dir,
        deliver=False,
    )
    login = {"MLOPS_SMTP_USER": USER, "MLOPS_SMTP_PASSWORD": PASSWORD}

    refused = mlops_notify(tmp_path, smtp_env(controller.port, **login))
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: MLOPS_SMTP_SECURITY=none would send the SMTP password in cleartext")
    assert PASSWORD not in refused.stdout + refused.stderr
    assert handler.envelopes == [] and list(run_dir.glob("outbox/*.eml"))

    allowed = mlops_notify(tmp_path, smtp_env(controller.port, MLOPS_SMTP_ALLOW_PLAINTEXT_LOGIN="1", **login))
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert handler.authenticated == [True]


def test_the_mail_shows_the_promotion_verdict_both_scores_and_the_reason(tmp_path: Path) -> None:
    from pipeline.report.notify.message import build_message
    from pipeline.summary import Promotion

    reason = "test_accuracy: challenger 0.91 vs champion 0.93 <b>not</b> better"
    decision = Promotion("kept", reason, "test_accuracy", 3, 0.91, (0.88, 0.94), 2, 0.93, None, "recorded")
    msg = build_message(settings_for(25, tmp_path), "goal_met", make_summary(tmp_path, promotion=decision))
    text, html = bodies(msg)
    assert "Promotion:        champion v2 kept; v3 is the challenger" in text
    assert "  challenger test_accuracy: 0.91 (95% Wilson [0.88, 0.94]), v3" in text
    assert "  champion test_accuracy:   0.93, v2 (its recorded score, same test split)" in text
    assert f"  why: {reason}" in text
    assert "<td>champion v2 kept; v3 is the challenger</td>" in html
    assert "&lt;b&gt;not&lt;/b&gt; better" in html and "<b>not</b>" not in html
    unscored = Promotion("kept", "r", "test_accuracy", 3, 0.91, None, 2, None, None, "unscored")
    text, _ = bodies(build_message(settings_for(25, tmp_path), "goal_met", make_summary(tmp_path, promotion=unscored)))
    assert "  champion test_accuracy:   could not be scored, v2 (unscored)" in text
    fair = Promotion("promoted", "r", "test_accuracy", 3, 0.91, None, 2, 0.88, None, "unseen", 0.0, 412, 0.95)
    text, _ = bodies(build_message(settings_for(25, tmp_path), "goal_met", make_summary(tmp_path, promotion=fair)))
    assert (
        "  champion test_accuracy:   0.88, v2 (scored now on the 412 test examples it never trained on, "
        "where v3 scored 0.95)" in text
    )
    text, _ = bodies(build_message(settings_for(25, tmp_path), "goal_met", make_summary(tmp_path)))
    assert "Promotion:" not in text  # no registration, no gate


def test_the_mail_says_what_prepare_noted_about_the_data(tmp_path: Path) -> None:
    from pipeline.report.notify.message import build_message

    notes = ["no face found in 12 of 3023 photos: skipped", "1 unreadable image(s) <skipped>"]
    text, html = bodies(build_message(settings_for(25, tmp_path), "goal_met", make_summary(tmp_path, data_notes=notes)))
    assert "Data:             no face found in 12 of 3023 photos: skipped" in text.splitlines()
    assert "Data:             1 unreadable image(s) <skipped>" in text.splitlines()
    assert '<th align="left">Data</th><td>no face found in 12 of 3023 photos: skipped</td>' in html
    assert "&lt;skipped&gt;" in html and "<skipped>" not in html
    text, _ = bodies(build_message(settings_for(25, tmp_path), "goal_met", make_summary(tmp_path)))
    assert "Data:" not in text


def test_the_mail_shows_where_a_staged_search_spent_its_time(tmp_path: Path) -> None:
    from pipeline.report.notify.message import build_message

    staged = {"param": "fine_tune_blocks", "seconds": {"0": 240.0, "1": 45.5}, "trials": {"0": 18, "1": 1}}
    staged["opened"] = {"1": 18}
    summary = make_summary(tmp_path, staged=staged)
    text, html = bodies(build_message(settings_for(25, tmp_path), "goal_met", summary))
    line = "0: 4m 00s (18 trials), 1: 45.5 s (1 trial, from trial 18)"
    assert f"Time by fine_tune_blocks: {line}" in text.splitlines()
    assert f'<th align="left">Time by fine_tune_blocks</th><td>{line}</td>' in html
    text, _ = bodies(build_message(settings_for(25, tmp_path), "goal_met", make_summary(tmp_path)))
    assert "Time by" not in text
