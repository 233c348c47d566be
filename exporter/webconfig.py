"""--web.config.file: TLS and basic auth in the exporter-toolkit web configuration format."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter import logs
from exporter.config import MAX_CONFIG_FILE_BYTES, load_yaml, read_small_file, shown_key
from exporter.errors import ConfigError, describe
from exporter.web import TlsContext, WsgiApp

log = logging.getLogger(__name__)

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
# exporter-toolkit's list of the headers a web config may add, with their allowed values (none
# listed: any value). Anything else could break answers (Content-Length, hop-by-hop headers).
EXTRA_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
# bcrypt reads no further (the bcrypt package refuses longer ones): longer is a refusal.
BCRYPT_MAX_PASSWORD_BYTES = 72
# What bcrypt.checkpw accepts: a version, a cost of 04 to 31, then 22 salt and 31 hash characters.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


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
        # An encrypted key would make OpenSSL prompt on the terminal: fail instead.
        context.load_cert_chain(self.tls.cert_file, self.tls.key_file, password=_no_password)
        context.verify_mode = CLIENT_AUTH_TYPES[self.tls.client_auth_type]
        if self.tls.client_ca_file is not None:
            context.load_verify_locations(cafile=str(self.tls.client_ca_file))
        return context

    def wrap(self, app: WsgiApp) -> _Guard:
        """The app behind basic auth (when users are configured) and the configured headers."""
        return _Guard(app, self.users, self.headers)


class LiveWebConfig:
    """The web config in force, re-read at each reload: users and headers are swapped, and a new
    TLS context is built from the file (certificate, key, client CAs, versions, client auth) for
    the connections that follow, so that a revoked user, a rotated certificate or a client CA
    taken out needs no restart. Turning TLS on or off fails the reload: the listening socket's
    scheme is fixed when it opens."""

    def __init__(self, path: str, config: WebConfig) -> None:
        self._path = path
        self._config = config
        context = config.ssl_context()
        self._tls = None if context is None else TlsContext(context)
        self._guards: list[_Guard] = []

    @property
    def tls(self) -> TlsContext | None:
        return self._tls

    def wrap(self, app: WsgiApp) -> WsgiApp:
        guard = self._config.wrap(app)
        self._guards.append(guard)
        return guard

    def reload(self) -> None:
        """Re-read the file and apply it whole, or raise ConfigError and change nothing."""
        new = load(self._path)
        if (new.tls is None) != (self._tls is None):
            state = "off" if new.tls is None else "on"
            raise ConfigError(
                [f"{self._path}: tls_server_config: turning TLS {state} needs a restart"]
            )
        try:
            # load() has built one from these files already; they may have changed since.
            context = new.ssl_context()
        except (OSError, ValueError) as exc:
            raise ConfigError([f"{self._path}: tls_server_config: {_ssl_reason(exc)}"]) from None
        for guard in self._guards:
            guard.update(new.users, new.headers)
        if self._tls is not None and context is not None:
            self._tls.current = context
        self._config = new


class _Guard:
    """WSGI middleware: checks basic auth; a verified password is remembered by its SHA-256 so
    that bcrypt's deliberate slowness is paid once per credential, not once per scrape.

    Under abuse: one bcrypt check runs at a time (wrong passwords cannot take every core from the
    scrapes), and every refusal lasts as long as the slowest check seen, so that timing tells
    neither which users exist nor their bcrypt cost."""

    def __init__(self, app: WsgiApp, users: Mapping[str, bytes], headers: Mapping[str, str]):
        self._app = app
        self._verified: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()
        self._bcrypt = threading.Lock()
        self._slowest = 0.0
        self.update(users, headers)

    def update(self, users: Mapping[str, bytes], headers: Mapping[str, str]) -> None:
        """New users and headers from now on; passwords verified before must be verified again."""
        with self._lock:
            self._users = users
            self._headers = list(headers.items())
            # An unknown user is checked against the costliest hash: never cheaper than a known one.
            self._decoy = max(users.values(), key=lambda h: h[4:6], default=b"")
            self._verified = set()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        extra = self._headers  # one reload's users and headers for the whole request

        def respond(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            return start_response(status, headers + extra, *rest)

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
        started = time.monotonic()
        if self._check(header):
            return True
        delay = self._slowest - (time.monotonic() - started)
        if delay > 0:
            time.sleep(delay)
        return False

    def _check(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep or len(password.encode()) > BCRYPT_MAX_PASSWORD_BYTES:
            return False
        key = (user, hashlib.sha256(password.encode()).digest())
        with self._lock:
            users, decoy, verified = self._users, self._decoy, self._verified
            known = user in users
            if known and key in verified:
                return True
        # An unknown user costs one bcrypt check too, so that timing does not tell which users
        # exist; the decoy hash is a configured one, and the answer is no whatever it says.
        hashed = users[user] if known else decoy
        import bcrypt  # noqa: PLC0415 - an optional dependency, checked at load time

        with self._bcrypt:
            began = time.monotonic()
            try:
                matches = bcrypt.checkpw(password.encode(), hashed)
            except ValueError:  # a hash that passed load() but that bcrypt cannot read
                log.error("unusable bcrypt hash", extra=logs.fields(user=user[:64]))
                return False
            self._slowest = max(self._slowest, time.monotonic() - began)
        if not (matches and known):
            return False
        with self._lock:
            verified.add(key)  # the set of the users it was checked against: a reload drops it
        return True


def load(path: str) -> WebConfig:
    """Read and validate a web config file; ConfigError lists every problem with its key."""
    try:
        data = load_yaml(read_small_file(Path(path), MAX_CONFIG_FILE_BYTES)) or {}
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: cannot read: not UTF-8"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {describe(exc)}"]) from None
    except yaml.YAMLError:
        raise ConfigError([f"{path}: cannot read: invalid YAML"]) from None
    except ValueError as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise ConfigError([f"{path}: must be a mapping"])
    problems += [f"{path}: {shown_key(key)}: unknown key" for key in data if key not in _TOP_KEYS]
    base = Path(path).parent
    tls = _tls(data.get("tls_server_config"), base, path, problems)
    users = _users(data.get("basic_auth_users"), path, problems)
    headers: dict[str, str] = {}
    http = data.get("http_server_config") or {}
    if not isinstance(http, Mapping):
        problems.append(f"{path}: http_server_config: must be a mapping")
    else:
        problems += [
            f"{path}: http_server_config.{shown_key(key)}: unknown key"
            for key in http
            if key not in _HTTP_KEYS
        ]
        headers = _headers(http.get("headers"), path, problems)
    if problems:
        raise ConfigError(problems)
    config = WebConfig(tls, users, headers)
    if tls is not None:
        _check_tls_files(tls, f"{path}: tls_server_config")
        try:
            config.ssl_context()  # what serve() will build: it must not fail there
        except (OSError, ValueError) as exc:
            raise ConfigError([f"{path}: tls_server_config: {_ssl_reason(exc)}"]) from None
    return config


def _headers(raw: object, path: str, problems: list[str]) -> dict[str, str]:
    if raw is None:
        return {}
    where = f"{path}: http_server_config.headers"
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be a mapping")
        return {}
    headers = {}
    for name, value in raw.items():
        allowed = EXTRA_HEADERS.get(name) if isinstance(name, str) else None
        # Only scalars: str() of an aliased list could be gigabytes.
        text = str(value) if isinstance(value, str | int | float) else ""
        if allowed is None:
            problems.append(
                f"{where}.{shown_key(name)}: cannot be configured "
                f"(allowed: {', '.join(EXTRA_HEADERS)})"
            )
        elif allowed and text not in allowed:
            problems.append(f"{where}.{name}: must be one of {', '.join(allowed)}")
        elif not text or any(c in text for c in "\r\n"):
            problems.append(f"{where}.{name}: must be a non-empty single-line value")
        else:
            headers[str(name)] = text
    return headers


def _check_tls_files(tls: TlsConfig, where: str) -> None:
    """Load the certificate, key and client CA once, so that a bad file stops the start."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_password)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            [
                f"{where}.cert_file, key_file: cannot use them as a PEM certificate and its "
                f"unencrypted private key ({_ssl_reason(exc)})"
            ]
        ) from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(tls.client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                [
                    f"{where}.client_ca_file: cannot use it as a PEM CA certificate "
                    f"({_ssl_reason(exc)})"
                ]
            ) from None


def _ssl_reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    reason = reason or describe(exc)
    return re.sub(r" \(_ssl\.c:\d+\)$", "", str(reason))


def _no_password() -> bytes:
    return b""  # an encrypted key then fails to load, with no prompt


def _tls(raw: object, base: Path, path: str, problems: list[str]) -> TlsConfig | None:
    if raw is None:
        return None
    where = f"{path}: tls_server_config"
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be a mapping")
        return None
    problems += [
        f"{where}.{shown_key(key)}: unknown or unsupported key"
        for key in raw
        if key not in _TLS_KEYS
    ]

    def file(key: str, required: bool) -> Path | None:
        value = raw.get(key)
        if value is None:
            if required:
                problems.append(f"{where}.{key}: required")
            return None
        if not isinstance(value, str):
            problems.append(f"{where}.{key}: must be a file path")
            return None
        resolved = base / value
        if not resolved.is_file():
            problems.append(f"{where}.{key}: no such file: {resolved}")
        return resolved

    cert, key = file("cert_file", True), file("key_file", True)
    client_ca = file("client_ca_file", False)
    raw_auth = raw.get("client_auth_type", "NoClientCert")
    auth = raw_auth if isinstance(raw_auth, str) else ""
    if auth not in CLIENT_AUTH_TYPES:
        problems.append(f"{where}.client_auth_type: must be one of {', '.join(CLIENT_AUTH_TYPES)}")
    elif CLIENT_AUTH_TYPES[auth] != ssl.CERT_NONE and client_ca is None:
        problems.append(f"{where}.client_ca_file: required with client_auth_type {auth}")
    elif CLIENT_AUTH_TYPES[auth] == ssl.CERT_NONE and client_ca is not None:
        # As in exporter-toolkit: a CA without a client auth policy would check nobody.
        problems.append(
            f"{where}.client_auth_type: {auth} while client_ca_file is set: client "
            "certificates would not be checked (use RequireAndVerifyClientCert)"
        )
    versions = []
    for name in ("min_version", "max_version"):
        value = raw.get(name)
        if value is not None and (not isinstance(value, str) or value not in TLS_VERSIONS):
            problems.append(f"{where}.{name}: must be one of {', '.join(TLS_VERSIONS)}")
            value = None
        versions.append(None if value is None else str(value))
    lowest = versions[0] or "TLS12"  # the default minimum counts too: max TLS11 alone is empty
    if versions[1] and TLS_VERSIONS[versions[1]] < TLS_VERSIONS[lowest]:
        problems.append(
            f"{where}.max_version: {versions[1]} is below min_version {lowest}: no TLS version "
            "would be left"
        )
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
        if not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
            problems.append(
                f"{where}.{shown_key(user)}: must be a bcrypt hash ($2a$, $2b$ or $2y$, cost 04 "
                "to 31, 60 characters)"
            )
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
