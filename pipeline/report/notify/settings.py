"""Where result e-mails go: ``NotifySettings``, read from ``mlops.yaml`` and the environment.

The ``notify:`` section of the repository's ``mlops.yaml`` holds what is safe to commit
(host, port, recipients); the environment (``MLOPS_SMTP_*``, the CI's secret store) holds
what is not, and wins over the file. The password lives only in the environment: the CLI
never prints it, and it stays out of ``repr`` so a traceback or a debug log cannot leak it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import MlopsError

SECURITY_MODES = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}

# env var -> settings field; the env wins over mlops.yaml
ENV_VARS = {
    "MLOPS_SMTP_HOST": "host",
    "MLOPS_SMTP_PORT": "port",
    "MLOPS_SMTP_SECURITY": "security",
    "MLOPS_SMTP_USER": "username",
    "MLOPS_SMTP_PASSWORD": "password",
    "MLOPS_MAIL_FROM": "sender",
    "MLOPS_MAIL_TO": "recipients",
    "MLOPS_WEBHOOK_URL": "webhook_url",
    "MLOPS_SMTP_ALLOW_PLAINTEXT_LOGIN": "allow_plaintext_login",
}
_CONFIG_KEYS = (
    "host",
    "port",
    "security",
    "username",
    "sender",
    "recipients",
    "timeout",
    "retries",
    "backoff",
    "webhook_url",
    "outbox",
    "ca_file",
    "allow_plaintext_login",
)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
# a CR or LF in a header value would start a new header (or the body): never in an address
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(repr=False)
class NotifySettings:
    """How to deliver a result e-mail (and an optional chat webhook).

    Attributes:
        host: SMTP server; ``None`` turns e-mail off.
        port: SMTP port; ``None`` picks the usual one for ``security`` (587, 465, 25).
        security: ``starttls`` (upgrade a plain connection), ``ssl`` (TLS from the first
            byte) or ``none`` (plain text: a local relay only).
        username: SMTP login; ``None`` sends without AUTH.
        password: SMTP password, from ``MLOPS_SMTP_PASSWORD`` only; never shown.
        sender: the ``From`` address; defaults to ``username`` when that is an address.
        recipients: the ``To`` addresses.
        timeout: seconds for each network operation.
        retries: further attempts after a failed one, before the message goes to the outbox.
        backoff: seconds before the first retry; doubled for each next one.
        webhook_url: a Slack-style incoming webhook that also gets a one-line message.
        outbox: where undelivered messages are kept; ``None`` means ``<run_dir>/outbox``.
        ca_file: a PEM bundle to trust instead of the system's (a company CA).
        allow_plaintext_login: with ``security: none``, send the login anyway (a trusted
            relay on the same host); without it such settings are refused.
    """

    host: str | None = None
    port: int | None = None
    security: str = "starttls"
    username: str | None = None
    password: str | None = None
    sender: str | None = None
    recipients: list[str] = field(default_factory=list)
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 2.0
    webhook_url: str | None = None
    outbox: Path | None = None
    ca_file: Path | None = None
    allow_plaintext_login: bool = False
    # which source set each value ("notify.port" or "MLOPS_SMTP_PORT"), for error messages
    _sources: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            if f.name.startswith("_"):
                continue
            value = getattr(self, f.name)
            if f.name == "password" and value is not None:
                value = "***"
            elif f.name == "webhook_url" and value is not None:
                value = mask_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"NotifySettings({', '.join(shown)})"

    __str__ = __repr__

    @property
    def email_enabled(self) -> bool:
        """Whether an SMTP host is configured."""
        return bool(self.host)

    @property
    def smtp_port(self) -> int:
        """The port to connect to: the configured one or the usual one for ``security``."""
        return self.port if self.port is not None else DEFAULT_PORTS[self.security]

    def _name(self, key: str) -> str:
        return self._sources.get(key, f"notify.{key}")

    def validate(self) -> None:
        """Check the settings a user can get wrong.

        Raises:
            MlopsError: naming the setting (or env var) at fault and the fix.
        """
        if self.security not in SECURITY_MODES:
            raise MlopsError(
                f"{self._name('security')}={self.security!r} is not a known SMTP security: "
                f"use one of {', '.join(SECURITY_MODES)}"
            )
        if self.port is not None and not 0 < self.port < 65536:
            raise MlopsError(
                f"{self._name('port')}={self.port} is not a port number: use 1-65535 (587 for starttls, 465 for ssl)"
            )
        if self.webhook_url is not None and not _is_http(self.webhook_url):
            raise MlopsError(
                f"{self._name('webhook_url')}={mask_url(self.webhook_url)!r} is not an http(s) address: "
                "use the https:// URL the chat service gave you"
            )
        if self.retries < 0 or self.timeout <= 0 or self.backoff < 0:
            raise MlopsError(
                "notify.retries, notify.timeout and notify.backoff must be non-negative "
                "(timeout > 0): fix them in mlops.yaml"
            )
        if not self.host:
            return  # e-mail is off: the rest only matters when there is a server
        if not self.recipients:
            raise MlopsError(
                f"{self._name('host')} is set but nobody gets the mail: set MLOPS_MAIL_TO "
                "(comma-separated) or notify.recipients in mlops.yaml"
            )
        if (self.username is None) != (self.password is None):
            missing = "MLOPS_SMTP_PASSWORD" if self.password is None else "MLOPS_SMTP_USER"
            raise MlopsError(
                f"SMTP login needs both a user and a password: set {missing} (or unset the other to send without AUTH)"
            )
        if self.security == "none" and self.username and not self.allow_plaintext_login:
            raise MlopsError(
                f"{self._name('security')}=none would send the SMTP password in cleartext: use "
                "starttls or ssl, or, for a trusted relay, set allow_plaintext_login: true in "
                "mlops.yaml notify: (or MLOPS_SMTP_ALLOW_PLAINTEXT_LOGIN=1)"
            )
        if self.sender is None and self.username and "@" in self.username:
            self.sender = self.username
        if not self.sender:
            raise MlopsError("no sender address for result e-mails: set MLOPS_MAIL_FROM or notify.sender")
        for key, addresses in (("sender", [self.sender]), ("recipients", self.recipients)):
            for address in addresses:
                if _CONTROL.search(address) or "@" not in address:
                    raise MlopsError(
                        f"{self._name(key)}={address!r} is not an e-mail address (a line break or "
                        "control character, or no @): fix it to name@example.org"
                    )

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, env: Mapping[str, str]) -> NotifySettings:
        """Build settings from the ``notify:`` section of ``mlops.yaml`` and the environment.

        Args:
            config: the ``notify:`` mapping (``None`` or empty when the file has none).
            env: the environment snapshot the CLI took; ``ENV_VARS`` are read from it.

        Returns:
            Validated settings; ``email_enabled`` is false when no host is configured.

        Raises:
            MlopsError: an unknown key, a password in the file, or a bad value.

        Example:
            >>> s = NotifySettings.from_config({"host": "smtp.example.org",
            ...     "recipients": ["ml@example.org"], "sender": "ci@example.org"}, env={})
            >>> s.smtp_port
            587
        """
        if config is not None and not isinstance(config, Mapping):
            raise MlopsError(
                f"notify: in mlops.yaml must be a mapping (host:, recipients:, ...), not {type(config).__name__}"
            )
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for key, value in (config or {}).items():
            if key == "password":
                raise MlopsError(
                    "notify.password in mlops.yaml would put a secret in Git: remove it and "
                    "set MLOPS_SMTP_PASSWORD in the environment (the CI's secret store)"
                )
            if key not in _CONFIG_KEYS:
                raise MlopsError(f"unknown key notify.{key} in mlops.yaml: use one of {', '.join(_CONFIG_KEYS)}")
            values[key], sources[key] = value, f"notify.{key}"
        for var, key in ENV_VARS.items():
            if env.get(var):
                values[key], sources[key] = env[var], var
        return cls(**_coerce(values, sources), _sources=sources)


def _coerce(values: dict[str, Any], sources: dict[str, str]) -> dict[str, Any]:
    """Turn strings from YAML or the environment into the field types, naming a bad one."""
    out = dict(values)
    for key, kind in (("port", int), ("retries", int), ("timeout", float), ("backoff", float)):
        if out.get(key) is not None:
            try:
                out[key] = kind(out[key])
            except (TypeError, ValueError):
                raise MlopsError(
                    f"{sources[key]}={out[key]!r} is not a number: set an {'integer' if kind is int else 'number'}"
                ) from None
    if isinstance(out.get("recipients"), str):
        out["recipients"] = [a.strip() for a in out["recipients"].split(",") if a.strip()]
    elif out.get("recipients") is not None:
        out["recipients"] = [str(a).strip() for a in out["recipients"] if str(a).strip()]
    if out.get("security") is not None:
        out["security"] = str(out["security"]).strip().lower()
    for key in ("outbox", "ca_file"):
        if out.get(key) is not None:
            out[key] = Path(out[key])
    flag = out.get("allow_plaintext_login")
    if flag is not None and not isinstance(flag, bool):
        text = str(flag).strip().lower()
        if text not in _TRUE + _FALSE:
            source = sources["allow_plaintext_login"]
            raise MlopsError(f"{source}={flag!r} is not a yes/no value: set true or false (1 or 0)")
        out["allow_plaintext_login"] = text in _TRUE
    return out


def _is_http(url: str) -> bool:
    parts = urlsplit(url.strip())
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc) and not _CONTROL.search(url)


def mask_url(url: str) -> str:
    """Hide the path of a webhook URL: for Slack and the like, the path is the secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/***" if parts.netloc else "***"
