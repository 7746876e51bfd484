"""A real SMTP server (aiosmtpd) on 127.0.0.1 for the mail tests; ``smtp_server`` is a fixture."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

PASSWORD = "s3cr3t-Pa55word-xyz"
USER = "ci@example.org"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Recorder:
    """An aiosmtpd handler that keeps every envelope it receives."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.authenticated: list[bool] = []
        self.received = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        self.authenticated.append(bool(session.authenticated))
        self.received.set()
        return "250 OK"

    def message(self, index: int = -1) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.envelopes[index].content)
        assert isinstance(parsed, EmailMessage)
        return parsed


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == USER.encode() and (data.password == PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[Controller, Recorder]]]:
    """Start real SMTP servers on 127.0.0.1; all are stopped after the test."""
    started: list[Controller] = []

    def start(port: int | None = None, **kwargs: Any) -> tuple[Controller, Recorder]:
        handler = Recorder()
        controller = Controller(
            handler,
            hostname="127.0.0.1",
            port=port or free_port(),
            server_hostname="localhost",  # skip the FQDN lookup
            ready_timeout=5,
            **kwargs,
        )
        controller.start()
        started.append(controller)
        return controller, handler

    yield start
    for controller in started:
        controller.stop()
