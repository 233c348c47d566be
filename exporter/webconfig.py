"""--web.config.file: TLS and basic auth in the exporter-toolkit web configuration format."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter.errors import ConfigError
from exporter.web import WsgiApp

CLIENT_AUTH_TYPES = {
    "NoClientCert": ssl.CERT_NONE,
    # Python cannot ask for a certificate without verifying it: both "request" modes verify
    # a certificate when one is sent, against client_ca_file.
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
}
_HTTP_KEYS = {"headers", "http2"}


@dataclass(frozen=True)
class TlsConfig:
    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"
    max_version: str | None = None


@dataclass(frozen=True)
class WebConfig:
    tls: TlsConfig | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    headers: Mapping[str, str] = field(default_factory=dict)

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = TLS_VERSIONS[self.tls.min_version]
        if self.tls.max_version is not None:
            context.maximum_version = TLS_VERSIONS[self.tls.max_version]
        context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        context.verify_mode = CLIENT_AUTH_TYPES[self.tls.client_auth_type]
        if self.tls.client_ca_file is not None:
            context.load_verify_locations(cafile=str(self.tls.client_ca_file))
        return context

    def wrap(self, app: WsgiApp) -> WsgiApp:
        """The app behind basic auth (when users are configured) and the configured headers."""
        return _Guard(app, self.users, self.headers)


class _Guard:
    """WSGI middleware: checks basic auth; a verified password is remembered by its SHA-256 so
    that bcrypt's deliberate slowness is paid once per credential, not once per scrape."""

    def __init__(self, app: WsgiApp, users: Mapping[str, bytes], headers: Mapping[str, str]):
        self._app = app
        self._users = users
        self._headers = list(headers.items())
        self._verified: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        def respond(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            return start_response(status, headers + self._headers, *rest)

        if self._users and not self._authorized(environ.get("HTTP_AUTHORIZATION", "")):
            body = b"Unauthorized\n"
            respond(
                "401 Unauthorized",
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(body))),
                    ("WWW-Authenticate", 'Basic realm="x-usage-exporter"'),
                ],
            )
            return [body]
        return self._app(environ, respond)

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self._users.get(user)
        if not sep or hashed is None:
            return False
        key = (user, hashlib.sha256(password.encode()).digest())
        with self._lock:
            if key in self._verified:
                return True
        import bcrypt  # noqa: PLC0415 - an optional dependency, checked at load time

        if not bcrypt.checkpw(password.encode(), hashed):
            return False
        with self._lock:
            self._verified.add(key)
        return True


def load(path: str) -> WebConfig:
    """Read and validate a web config file; ConfigError lists every problem with its key."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError([f"{path}: cannot read: {type(exc).__name__}"]) from None
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise ConfigError([f"{path}: must be a mapping"])
    problems += [f"{path}: {key}: unknown key" for key in data if key not in _TOP_KEYS]
    base = Path(path).parent
    tls = _tls(data.get("tls_server_config"), base, path, problems)
    users = _users(data.get("basic_auth_users"), path, problems)
    headers: dict[str, str] = {}
    http = data.get("http_server_config") or {}
    if not isinstance(http, Mapping):
        problems.append(f"{path}: http_server_config: must be a mapping")
    else:
        problems += [
            f"{path}: http_server_config.{key}: unknown key"
            for key in http
            if key not in _HTTP_KEYS
        ]
        raw_headers = http.get("headers") or {}
        if isinstance(raw_headers, Mapping):
            headers = {str(k): str(v) for k, v in raw_headers.items()}
        else:
            problems.append(f"{path}: http_server_config.headers: must be a mapping")
    if problems:
        raise ConfigError(problems)
    config = WebConfig(tls, users, headers)
    if tls is not None:
        try:
            config.ssl_context()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                [f"{path}: tls_server_config: {exc.__class__.__name__}: {exc}"]
            ) from None
    return config


def _tls(raw: object, base: Path, path: str, problems: list[str]) -> TlsConfig | None:
    if raw is None:
        return None
    where = f"{path}: tls_server_config"
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be a mapping")
        return None
    problems += [
        f"{where}.{key}: unknown or unsupported key" for key in raw if key not in _TLS_KEYS
    ]

    def file(key: str, required: bool) -> Path | None:
        value = raw.get(key)
        if value is None:
            if required:
                problems.append(f"{where}.{key}: required")
            return None
        resolved = base / str(value)
        if not resolved.is_file():
            problems.append(f"{where}.{key}: no such file: {resolved}")
        return resolved

    cert, key = file("cert_file", True), file("key_file", True)
    client_ca = file("client_ca_file", False)
    auth = str(raw.get("client_auth_type", "NoClientCert"))
    if auth not in CLIENT_AUTH_TYPES:
        problems.append(f"{where}.client_auth_type: must be one of {', '.join(CLIENT_AUTH_TYPES)}")
    elif CLIENT_AUTH_TYPES[auth] != ssl.CERT_NONE and client_ca is None:
        problems.append(f"{where}.client_ca_file: required with client_auth_type {auth}")
    versions = []
    for name in ("min_version", "max_version"):
        value = raw.get(name)
        if value is not None and str(value) not in TLS_VERSIONS:
            problems.append(f"{where}.{name}: must be one of {', '.join(TLS_VERSIONS)}")
            value = None
        versions.append(None if value is None else str(value))
    if cert is None or key is None:
        return None
    return TlsConfig(cert, key, auth, client_ca, versions[0] or "TLS12", versions[1])


def _users(raw: object, path: str, problems: list[str]) -> dict[str, bytes]:
    if raw is None:
        return {}
    where = f"{path}: basic_auth_users"
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be a mapping of user to bcrypt hash")
        return {}
    users = {}
    for user, hashed in raw.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            problems.append(f"{where}.{user}: must be a bcrypt hash ($2a$, $2b$ or $2y$)")
            continue
        users[str(user)] = hashed.encode()
    if users:
        try:
            import bcrypt  # noqa: F401, PLC0415 - optional: only basic auth needs it
        except ImportError:
            problems.append(
                f"{where}: needs the bcrypt package: pip install 'x-usage-exporter[auth]'"
            )
    return users
