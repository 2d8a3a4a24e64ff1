"""S3 settings, the environment variables derived from them, and secret redaction.

`S3Settings` describes the store (endpoint, region, addressing style,
profile) and never the credentials, which every client takes from the
standard AWS chain (environment, shared files, instance role).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlparse

__all__ = [
    "ADDRESSING_STYLES",
    "S3Settings",
    "mlflow_env",
    "redact",
    "resolve_settings",
    "runtime_env_vars",
]

logger = logging.getLogger(__name__)

ADDRESSING_STYLES = ("auto", "path", "virtual")

# boto3 reads the addressing style only from ~/.aws/config, so this project's
# own variable carries it to other processes.
ADDRESSING_STYLE_VAR = "STSEP_S3_ADDRESSING_STYLE"
_SECRET_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


@dataclass(frozen=True)
class S3Settings:
    """Location of the S3 store and how to address it, without credentials.

    Attributes:
        endpoint_url: Endpoint of an S3-compatible store, such as
            ``http://minio.internal:9000``. None means AWS S3 itself.
        region: Region name. None leaves it to each library's default lookup.
        addressing_style: ``path`` (``endpoint/bucket/key``, which most
            S3-compatible stores need), ``virtual`` (``bucket.endpoint/key``)
            or ``auto`` (each library's default).
        profile: Named profile of the shared AWS config files, or None.
    """

    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str = "auto"
    profile: str | None = None

    def __post_init__(self) -> None:
        if self.endpoint_url is not None:
            parsed = urlparse(str(self.endpoint_url))
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(
                    f"invalid S3 endpoint_url {redact(self.endpoint_url)!r}: expected "
                    "http://host[:port] or https://host[:port], for example http://127.0.0.1:9000"
                )
            try:
                parsed.port
            except ValueError:
                raise ValueError(
                    f"invalid S3 endpoint_url {redact(self.endpoint_url)!r}: the port is not a number; "
                    "write it as http://host:port, for example http://127.0.0.1:9000"
                ) from None
            if parsed.username or parsed.password:
                raise ValueError(
                    f"S3 endpoint_url {redact(self.endpoint_url)!r} contains credentials. Remove them "
                    "and provide the keys through the standard AWS chain (environment or ~/.aws)"
                )
        if self.addressing_style not in ADDRESSING_STYLES:
            raise ValueError(
                f"invalid S3 addressing_style {self.addressing_style!r}: "
                f"expected one of {', '.join(ADDRESSING_STYLES)}"
            )
        for name in ("region", "profile"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"invalid S3 {name} {value!r}: expected a non-empty string or None")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        """Build settings from the environment variables the AWS tools use.

        The first variable set wins. Endpoint: ``AWS_ENDPOINT_URL_S3``,
        ``AWS_ENDPOINT_URL``, ``MLFLOW_S3_ENDPOINT_URL``. Region: ``AWS_REGION``,
        ``AWS_DEFAULT_REGION``. Addressing style: ``STSEP_S3_ADDRESSING_STYLE``,
        ``MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE``. Profile: ``AWS_PROFILE``.

        Args:
            environ: Mapping to read instead of ``os.environ``.
        """
        env = os.environ if environ is None else environ

        def first(*names: str) -> str | None:
            for name in names:
                value = env.get(name, "").strip()
                if value:
                    return value
            return None

        return cls(
            endpoint_url=first("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"),
            region=first("AWS_REGION", "AWS_DEFAULT_REGION"),
            addressing_style=first(ADDRESSING_STYLE_VAR, "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE") or "auto",
            profile=first("AWS_PROFILE"),
        )

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | None, *, environ: Mapping[str, str] | None = None
    ) -> S3Settings:
        """Build settings from a config mapping, on top of `from_env`.

        A key set to a value in ``config`` replaces what the environment gives.
        A key that is absent or None keeps it.

        Args:
            config: Mapping with any of the keys endpoint_url, region,
                addressing_style and profile. None means no overrides.
            environ: Mapping to read instead of ``os.environ``.

        Raises:
            ValueError: On an unknown key or an invalid value.
        """
        base = cls.from_env(environ)
        if config is None:
            return base
        if not isinstance(config, Mapping):
            raise ValueError(f"S3 settings must be a mapping, got {type(config).__name__}")
        allowed = [field.name for field in fields(cls)]
        unknown = sorted(set(config) - set(allowed))
        if unknown:
            raise ValueError(f"unknown S3 setting(s) {unknown}: allowed keys are {', '.join(allowed)}")
        overrides = {key: value for key, value in config.items() if value is not None}
        return cls(**{**{name: getattr(base, name) for name in allowed}, **overrides})

    def describe_endpoint(self) -> str:
        """Return the endpoint for messages: the URL, or ``AWS S3 default``."""
        return self.endpoint_url or "AWS S3 default"


def resolve_settings(settings: S3Settings | None) -> S3Settings:
    """Return ``settings``, or `S3Settings.from_env` when it is None.

    Raises:
        TypeError: When ``settings`` is neither None nor an `S3Settings`.
    """
    if settings is None:
        return S3Settings.from_env()
    if not isinstance(settings, S3Settings):
        raise TypeError(f"settings must be an S3Settings, got {type(settings).__name__}")
    return settings


def mlflow_env(settings: S3Settings | None = None) -> dict[str, str]:
    """Return the variables MLflow's S3 artifact store needs for these settings.

    Set them in every process that logs or serves artifacts: the driver, the
    Ray workers (`runtime_env_vars` includes them) and an ``mlflow server``
    that proxies artifacts to S3.
    """
    settings = resolve_settings(settings)
    env: dict[str, str] = {}
    if settings.endpoint_url is not None:
        env["MLFLOW_S3_ENDPOINT_URL"] = settings.endpoint_url
    if settings.addressing_style != "auto":
        env["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] = settings.addressing_style
    return env


def runtime_env_vars(settings: S3Settings | None = None) -> dict[str, str]:
    """Return the non-secret variables that Ray trials and workers need.

    Pass them as ``runtime_env={"env_vars": ...}``. With them, `S3Settings.from_env`
    on a worker rebuilds the same settings, and boto3, MLflow and the
    ``pyarrow.fs.FileSystem.from_uri`` calls inside Ray find the same endpoint.
    Keys stay out because each node takes them from its own AWS chain
    (instance role, mounted secret or environment).
    """
    settings = resolve_settings(settings)
    env = mlflow_env(settings)
    if settings.endpoint_url is not None:
        env["AWS_ENDPOINT_URL"] = settings.endpoint_url
    if settings.region is not None:
        env["AWS_REGION"] = settings.region
        env["AWS_DEFAULT_REGION"] = settings.region
    if settings.addressing_style != "auto":
        env[ADDRESSING_STYLE_VAR] = settings.addressing_style
    if settings.profile is not None:
        env["AWS_PROFILE"] = settings.profile
    return env


_URL_PASSWORD = re.compile(r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@")
_SIGNED_QUERY = re.compile(r"(?P<prefix>X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s\"']+", re.IGNORECASE)
_SECRET_ASSIGNMENT = re.compile(
    r"(?P<prefix>(?:aws_secret_access_key|aws_session_token|secret_key|session_token)\s*[=:]\s*['\"]?)[^\s'\",}]+",
    re.IGNORECASE,
)


def redact(text: object) -> str:
    """Replace secrets in ``text`` with ``***``.

    Covers the values of ``AWS_SECRET_ACCESS_KEY`` and the session token
    variables of this process, passwords in URLs, the signature and
    credential parameters of presigned URLs, and ``secret_key=...``
    assignments.
    """
    text = str(text)
    for name in _SECRET_VARS:
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, "***")
    text = _URL_PASSWORD.sub(r"\g<prefix>***@", text)
    text = _SIGNED_QUERY.sub(r"\g<prefix>***", text)
    return _SECRET_ASSIGNMENT.sub(r"\g<prefix>***", text)
