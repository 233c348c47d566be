"""--web.config.file: TLS, client certificates, basic auth and headers, checked by a real TLS
client against the exporter process; and the validation of the file itself."""

from __future__ import annotations

import base64
import io
import logging
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from exporter import logs, webconfig
from exporter.alert_eval import free_port
from exporter.errors import ConfigError
from exporter.simulator import Simulator
from exporter.web import WebServer
from tests.conftest import record_log, require_tool
from tests.harness import one_project_config, sim_project
from tests.servers import Exporter

TOKEN = "token-Wq7cfgZ-aaaaaaaaaaaaaaaaaaaaaa"  # no fragment of it is a word a log could hold
USER, PASSWORD = "prometheus", "correct horse battery staple"
OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed, plus a
    client certificate signed by another CA."""

    dir: Path
    ca: Path
    server: tuple[Path, Path]  # certificate, key
    client: tuple[Path, Path]
    stranger: tuple[Path, Path]

    def client_context(self, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if cert is not None:
            context.load_cert_chain(*cert)
        return context


def _openssl(openssl: str, cwd: Path, *args: str) -> None:
    result = subprocess.run(
        [openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr}"


def _new_ca(openssl: str, cwd: Path, name: str) -> None:
    _openssl(
        openssl,
        cwd,
        *("req", "-x509", "-config", "openssl.cnf", "-extensions", "ca", "-days", "2"),
        *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}"),
    )


def _new_cert(
    openssl: str, cwd: Path, name: str, ca: str, extensions: str, serial: int
) -> tuple[Path, Path]:
    _openssl(
        openssl,
        cwd,
        *("req", "-new", "-config", "openssl.cnf", "-subj", f"/CN={name}"),
        *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", f"{name}.key", "-out", f"{name}.csr"),
    )
    _openssl(
        openssl,
        cwd,
        *("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key"),
        *("-set_serial", str(serial), "-days", "2"),
        *("-extfile", "openssl.cnf", "-extensions", extensions, "-out", f"{name}.crt"),
    )
    return cwd / f"{name}.crt", cwd / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    openssl = require_tool("openssl")
    cwd = tmp_path_factory.mktemp("pki")
    (cwd / "openssl.cnf").write_text(OPENSSL_CONFIG)
    _new_ca(openssl, cwd, "ca")
    _new_ca(openssl, cwd, "other-ca")
    return Pki(
        dir=cwd,
        ca=cwd / "ca.crt",
        server=_new_cert(openssl, cwd, "127.0.0.1", "ca", "server", 2),
        client=_new_cert(openssl, cwd, "scraper", "ca", "client", 3),
        stranger=_new_cert(openssl, cwd, "stranger", "other-ca", "client", 4),
    )


def _hash(password: str) -> str:
    # Cost 4, the minimum: the tests check the checking, not bcrypt's slowness.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture(scope="module")
def simulator() -> Iterator[Simulator]:
    sim = Simulator([sim_project("1001", TOKEN)])
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def _exporter_config(directory: Path, simulator: Simulator) -> Path:
    return one_project_config(directory, simulator, TOKEN)


@dataclass
class Served:
    exporter: Exporter
    url: str  # https://127.0.0.1:PORT


def _serve(
    directory: Path, simulator: Simulator, web_config: str, ready: Callable[[str], None]
) -> Iterator[Served]:
    """An exporter process behind `web_config`; `ready(url)` returns once it answers."""
    web = directory / "web.yml"
    web.write_text(web_config)
    exporter = Exporter(
        *("--config.file", str(_exporter_config(directory, simulator))),
        *("--web.config.file", str(web)),
    )
    try:
        served = Served(exporter, f"https://127.0.0.1:{exporter.port}")
        _wait_until(lambda: _answers(ready, served.url), exporter)
        yield served
    finally:
        exporter.stop()


def _answers(ready: Callable[[str], None], url: str) -> bool:
    try:
        ready(url)
    except (httpx.HTTPError, AssertionError):
        return False
    return True


def _wait_until(check: Callable[[], bool], exporter: Exporter, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        assert exporter.proc.poll() is None, exporter.log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"the exporter never answered: {exporter.log.read_text()}")


@pytest.fixture(scope="module")
def tls_with_auth(
    pki: Pki, simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """TLS without client certificates, one basic auth user, two extra headers."""
    directory = tmp_path_factory.mktemp("tls-auth")
    cert, key = pki.server
    web_config = (
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"basic_auth_users:\n  {USER}: '{_hash(PASSWORD)}'\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        "    Strict-Transport-Security: max-age=31536000\n"
    )

    def ready(url: str) -> None:
        answer = httpx.get(
            f"{url}/-/ready", verify=pki.client_context(), auth=(USER, PASSWORD), timeout=2
        )
        assert answer.status_code == 200

    yield from _serve(directory, simulator, web_config, ready)


@pytest.fixture(scope="module")
def mutual_tls(
    pki: Pki, simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """TLS that requires a client certificate signed by the CA; no basic auth."""
    directory = tmp_path_factory.mktemp("mtls")
    cert, key = pki.server
    web_config = (
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca}\n"
    )

    def ready(url: str) -> None:
        context = pki.client_context(pki.client)
        assert httpx.get(f"{url}/-/ready", verify=context, timeout=2).status_code == 200

    yield from _serve(directory, simulator, web_config, ready)


def _get(
    served: Served, pki: Pki, path: str, auth: tuple[str, str] | None = None
) -> httpx.Response:
    return httpx.get(f"{served.url}{path}", verify=pki.client_context(), auth=auth, timeout=5)


# -- TLS and basic auth ---------------------------------------------------------------------------


def test_the_right_password_gets_the_metrics_over_tls(tls_with_auth: Served, pki: Pki) -> None:
    answer = _get(tls_with_auth, pki, "/metrics", (USER, PASSWORD))
    assert answer.status_code == 200
    assert 'xapi_project_posts_consumed{project="p0",project_id="1001"}' in answer.text


def test_no_password_gets_401_with_a_basic_challenge(tls_with_auth: Served, pki: Pki) -> None:
    answer = _get(tls_with_auth, pki, "/metrics")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Basic realm=")
    assert "xapi_" not in answer.text


@pytest.mark.parametrize(
    "auth",
    [(USER, "wrong password"), ("someone-else", PASSWORD), (USER, ""), (USER, PASSWORD + " ")],
    ids=["wrong-password", "wrong-user", "empty-password", "trailing-space"],
)
def test_a_wrong_password_or_user_gets_401(
    tls_with_auth: Served, pki: Pki, auth: tuple[str, str]
) -> None:
    answer = _get(tls_with_auth, pki, "/metrics", auth)
    assert answer.status_code == 401
    assert "www-authenticate" in answer.headers


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
        "Basic not-base64!",
        "Basic " + base64.b64encode(USER.encode()).decode(),  # no colon
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),  # not UTF-8
        "Basic",
    ],
)
def test_a_malformed_authorization_header_gets_401(
    tls_with_auth: Served, pki: Pki, authorization: str
) -> None:
    answer = httpx.get(
        f"{tls_with_auth.url}/metrics",
        verify=pki.client_context(),
        headers={"Authorization": authorization},
        timeout=5,
    )
    assert answer.status_code == 401


def test_a_verified_password_stays_tied_to_its_user_and_password(
    tls_with_auth: Served, pki: Pki
) -> None:
    # The guard remembers verified credentials: a right password must not open the door to a
    # wrong one afterwards, nor to another user.
    assert _get(tls_with_auth, pki, "/metrics", (USER, PASSWORD)).status_code == 200
    assert _get(tls_with_auth, pki, "/metrics", (USER, PASSWORD[:-1])).status_code == 401
    assert _get(tls_with_auth, pki, "/metrics", ("other", PASSWORD)).status_code == 401
    assert _get(tls_with_auth, pki, "/metrics", (USER, PASSWORD)).status_code == 200


@pytest.mark.parametrize("path", ["/-/healthy", "/-/ready", "/", "/nope"])
def test_every_path_is_behind_auth_health_included(
    tls_with_auth: Served, pki: Pki, path: str
) -> None:
    assert _get(tls_with_auth, pki, path).status_code == 401
    assert _get(tls_with_auth, pki, path, (USER, "wrong")).status_code == 401
    expected = 404 if path == "/nope" else 200
    assert _get(tls_with_auth, pki, path, (USER, PASSWORD)).status_code == expected


def test_reload_is_behind_auth_too(tls_with_auth: Served, pki: Pki) -> None:
    url = f"{tls_with_auth.url}/-/reload"
    assert httpx.post(url, verify=pki.client_context(), timeout=5).status_code == 401
    answer = httpx.post(url, verify=pki.client_context(), auth=(USER, PASSWORD), timeout=5)
    assert answer.status_code == 200


def test_configured_headers_are_added_to_every_answer(tls_with_auth: Served, pki: Pki) -> None:
    answers = [
        _get(tls_with_auth, pki, "/metrics", (USER, PASSWORD)),
        _get(tls_with_auth, pki, "/", (USER, PASSWORD)),
        _get(tls_with_auth, pki, "/metrics"),  # the 401 too
        _get(tls_with_auth, pki, "/nope", (USER, PASSWORD)),
    ]
    assert [a.status_code for a in answers] == [200, 200, 401, 404]
    for answer in answers:
        assert answer.headers["x-frame-options"] == "deny"
        assert answer.headers["strict-transport-security"] == "max-age=31536000"


def test_plain_http_to_the_tls_port_gets_a_400_that_says_so(
    tls_with_auth: Served, pki: Pki
) -> None:
    port = tls_with_auth.exporter.port
    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", auth=(USER, PASSWORD), timeout=5)
    assert answer.status_code == 400
    assert answer.text == "Client sent an HTTP request to an HTTPS server.\n"
    # The plain requests did not hurt the server.
    assert _get(tls_with_auth, pki, "/metrics", (USER, PASSWORD)).status_code == 200


def test_a_client_that_does_not_trust_the_ca_refuses_the_server(tls_with_auth: Served) -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{tls_with_auth.url}/metrics", verify=ssl.create_default_context(), timeout=5)


def test_the_credentials_appear_in_no_log_line(tls_with_auth: Served, pki: Pki) -> None:
    _get(tls_with_auth, pki, "/metrics", (USER, "a-wrong-password-xyz"))
    log = tls_with_auth.exporter.log.read_text()
    assert "listening" in log
    for secret in (PASSWORD, "a-wrong-password-xyz", TOKEN):
        assert secret not in log


# -- client certificates --------------------------------------------------------------------------


def test_a_required_client_certificate_admits_the_ca_signed_client(
    mutual_tls: Served, pki: Pki
) -> None:
    answer = httpx.get(
        f"{mutual_tls.url}/metrics", verify=pki.client_context(pki.client), timeout=5
    )
    assert answer.status_code == 200
    assert "xapi_project_info" in answer.text


@pytest.mark.parametrize("who", ["no-certificate", "foreign-ca"])
def test_a_required_client_certificate_refuses_other_clients(
    mutual_tls: Served, pki: Pki, who: str
) -> None:
    context = pki.client_context(pki.stranger if who == "foreign-ca" else None)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{mutual_tls.url}/metrics", verify=context, timeout=5)
    # The refused handshake did not hurt the server.
    good = httpx.get(f"{mutual_tls.url}/-/healthy", verify=pki.client_context(pki.client))
    assert good.status_code == 200


# -- invalid files: the process exits 2 with one line naming the key ------------------------------


def _invalid_cases(pki: Pki) -> dict[str, tuple[str, str]]:
    """name: (web config, the part of the one error line that names the key)."""
    cert, key = pki.server
    tls = f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
    return {
        "unknown-key": (tls + "tls_server_confg: {}\n", "tls_server_confg: unknown key"),
        "unknown-tls-key": (
            tls + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            "tls_server_config.cipher_suites: unknown or unsupported key",
        ),
        "missing-cert-file": (
            f"tls_server_config:\n  cert_file: {pki.dir / 'nope.crt'}\n  key_file: {key}\n",
            f"tls_server_config.cert_file: no such file: {pki.dir / 'nope.crt'}",
        ),
        "cert-not-pem": (
            f"tls_server_config:\n  cert_file: {pki.dir / 'openssl.cnf'}\n  key_file: {key}\n",
            "tls_server_config.cert_file, key_file: cannot use them as a PEM certificate",
        ),
        "key-of-another-cert": (
            f"tls_server_config:\n  cert_file: {cert}\n  key_file: {pki.client[1]}\n",
            "tls_server_config.cert_file, key_file: cannot use them as a PEM certificate",
        ),
        "plain-password": (
            f"basic_auth_users:\n  {USER}: {PASSWORD}\n",
            f"basic_auth_users.{USER}: must be a bcrypt hash",
        ),
        "truncated-bcrypt-hash": (
            f"basic_auth_users:\n  {USER}: '{_hash(PASSWORD)[:-4]}'\n",
            f"basic_auth_users.{USER}: must be a bcrypt hash",
        ),
        "max-version-below-the-default-minimum": (
            tls + "  max_version: TLS11\n",
            "tls_server_config.max_version: TLS11 is below min_version TLS12",
        ),
        "client-auth-without-ca": (
            tls + "  client_auth_type: RequireAndVerifyClientCert\n",
            "tls_server_config.client_ca_file: required with client_auth_type "
            "RequireAndVerifyClientCert",
        ),
        "ca-without-client-auth": (
            tls + f"  client_ca_file: {pki.ca}\n",
            "tls_server_config.client_auth_type: NoClientCert while client_ca_file is set",
        ),
        "unknown-client-auth": (
            tls + "  client_auth_type: Sometimes\n",
            "tls_server_config.client_auth_type: must be one of",
        ),
        "unknown-tls-version": (
            tls + "  min_version: TLS14\n",
            "tls_server_config.min_version: must be one of",
        ),
        "header-not-allowed": (
            "http_server_config:\n  headers:\n    Content-Length: '0'\n",
            "http_server_config.headers.Content-Length: cannot be configured",
        ),
        "header-value-not-allowed": (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow-from-anyone\n",
            "http_server_config.headers.X-Frame-Options: must be one of deny, sameorigin",
        ),
        "not-a-mapping": ("- tls_server_config\n", "must be a mapping"),
    }


INVALID = [
    "unknown-key",
    "unknown-tls-key",
    "missing-cert-file",
    "cert-not-pem",
    "key-of-another-cert",
    "plain-password",
    "truncated-bcrypt-hash",
    "client-auth-without-ca",
    "ca-without-client-auth",
    "unknown-client-auth",
    "unknown-tls-version",
    "header-not-allowed",
    "header-value-not-allowed",
    "not-a-mapping",
]
# The process test runs a representative subset (each start costs an interpreter); load() gets all.
PROCESS_INVALID = [
    "unknown-key",
    "missing-cert-file",
    "plain-password",
    "truncated-bcrypt-hash",
    "client-auth-without-ca",
]


@pytest.mark.parametrize("case", PROCESS_INVALID)
def test_an_invalid_web_config_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, pki: Pki, simulator: Simulator, case: str
) -> None:
    text, names = _invalid_cases(pki)[case]
    web = tmp_path / "web.yml"
    web.write_text(text)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "exporter"),
            *("--config.file", str(_exporter_config(tmp_path, simulator))),
            *("--web.config.file", str(web)),
            *("--web.listen-address", f"127.0.0.1:{free_port()}"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    record_log("webconfig-invalid", result.stdout + result.stderr)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"x-usage-exporter: config error: {web}: {names}"), lines


# -- webconfig.load() ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", INVALID)
def test_load_names_the_bad_key(tmp_path: Path, pki: Pki, case: str) -> None:
    text, names = _invalid_cases(pki)[case]
    web = tmp_path / "web.yml"
    web.write_text(text)
    with pytest.raises(ConfigError) as raised:
        webconfig.load(str(web))
    assert len(raised.value.problems) == 1, raised.value.problems
    assert raised.value.problems[0].startswith(f"{web}: {names}"), raised.value.problems


def test_load_reports_every_problem_at_once(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text(
        "tls_server_config:\n  cert_file: missing.crt\n  client_auth_type: RequireAnyClientCert\n"
        "basic_auth_users:\n  alice: hunter2\n  bob: 42\n"
        "http_server_config:\n  http3: true\n"
        "rate_limit: {}\n"
    )
    with pytest.raises(ConfigError) as raised:
        webconfig.load(str(web))
    keys = [problem.removeprefix(f"{web}: ").split(":")[0] for problem in raised.value.problems]
    assert sorted(keys) == sorted(
        [
            "rate_limit",
            "tls_server_config.cert_file",
            "tls_server_config.key_file",
            "tls_server_config.client_ca_file",
            "basic_auth_users.alice",
            "basic_auth_users.bob",
            "http_server_config.http3",
        ]
    )


def test_load_resolves_files_next_to_the_web_config(tmp_path: Path, pki: Pki) -> None:
    for name in ("server.crt", "server.key"):
        source = pki.server[0] if name.endswith(".crt") else pki.server[1]
        (tmp_path / name).write_bytes(source.read_bytes())
    hashed = _hash(PASSWORD)
    web = tmp_path / "web.yml"
    web.write_text(
        "tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: TLS13}\n"
        f"basic_auth_users: {{{USER}: '{hashed}'}}\n"
        "http_server_config: {headers: {X-Content-Type-Options: nosniff}, http2: false}\n"
    )
    config = webconfig.load(str(web))
    assert config.tls is not None
    assert (config.tls.cert_file, config.tls.key_file) == (
        tmp_path / "server.crt",
        tmp_path / "server.key",
    )
    assert config.tls.client_auth_type == "NoClientCert"
    assert config.users == {USER: hashed.encode()}
    assert config.headers == {"X-Content-Type-Options": "nosniff"}
    context = config.ssl_context()
    assert context is not None and context.minimum_version is ssl.TLSVersion.TLSv1_3


def test_load_refuses_an_encrypted_key_instead_of_prompting(tmp_path: Path, pki: Pki) -> None:
    openssl = require_tool("openssl")
    _openssl(
        openssl,
        tmp_path,
        *("pkey", "-in", str(pki.server[1]), "-aes256", "-passout", "pass:secret"),
        *("-out", "encrypted.key"),
    )
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config: {{cert_file: {pki.server[0]}, key_file: encrypted.key}}\n")
    with pytest.raises(ConfigError, match=r"tls_server_config\.cert_file, key_file: "):
        webconfig.load(str(web))


def test_an_empty_web_config_changes_nothing(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("")
    config = webconfig.load(str(web))
    assert (config.tls, dict(config.users), dict(config.headers)) == (None, {}, {})
    assert config.ssl_context() is None


# -- the guard in process -----------------------------------------------------------------------


def _call(app: Any, authorization: str | None) -> tuple[str, dict[str, str]]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"}
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    body: Iterable[bytes] = app(environ, start_response)
    b"".join(body)
    return seen["status"], seen["headers"]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _inner(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]


def test_a_hash_bcrypt_cannot_read_refuses_the_request_instead_of_crashing() -> None:
    # load() refuses such hashes; the guard must still never turn one into a 500 and a traceback.
    config = webconfig.WebConfig(users={USER: b"$2b$04$" + b"x" * 53})
    status, headers = _call(config.wrap(_inner), _basic(USER, PASSWORD))
    assert status.startswith("401")
    assert "WWW-Authenticate" in headers


def test_the_guard_adds_headers_without_users_and_needs_no_password() -> None:
    config = webconfig.WebConfig(headers={"X-Frame-Options": "sameorigin"})
    status, headers = _call(config.wrap(_inner), None)
    assert status == "200 OK"
    assert headers["X-Frame-Options"] == "sameorigin"


# -- basic auth under abuse ----------------------------------------------------------------------


def _timed(app: Any, authorization: str) -> tuple[str, float]:
    started = time.monotonic()
    status, _ = _call(app, authorization)
    return status, time.monotonic() - started


def test_every_refusal_lasts_as_long_as_the_costliest_check_whoever_is_asked() -> None:
    cheap, dear = _hash(PASSWORD), bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=11)).decode()
    guard = webconfig.WebConfig(users={"cheap": cheap.encode(), "dear": dear.encode()}).wrap(_inner)
    _, dear_failure = _timed(guard, _basic("dear", "wrong"))  # measures the dear cost
    for who in ("cheap", "nobody", "dear"):
        status, took = _timed(guard, _basic(who, "wrong"))
        assert status.startswith("401")
        assert took >= 0.8 * dear_failure, (who, took, dear_failure)
    for header in ("Basic !!!", "Bearer x", _basic("cheap", "p" * 100)):
        status, took = _timed(guard, header)
        assert status.startswith("401")
        assert took >= 0.8 * dear_failure, (header, took, dear_failure)


def test_a_long_password_with_control_characters_is_refused_without_an_error_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = webconfig.WebConfig(users={USER: _hash(PASSWORD).encode()}).wrap(_inner)
    caplog.set_level(logging.DEBUG)
    status, _ = _call(guard, _basic(USER + "\x1b[2J\n", "\x1b" * 80))
    assert status.startswith("401")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_wrong_passwords_from_many_clients_leave_a_verified_scrape_fast() -> None:
    guard = webconfig.WebConfig(
        users={USER: bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10))}
    ).wrap(_inner)
    good = _basic(USER, PASSWORD)
    assert _call(guard, good)[0] == "200 OK"  # verified once, remembered
    stop = threading.Event()

    def attack() -> None:
        while not stop.is_set():
            _call(guard, _basic(USER, "wrong"))

    attackers = [threading.Thread(target=attack, daemon=True) for _ in range(32)]
    for thread in attackers:
        thread.start()
    try:
        seconds = []
        for _ in range(50):
            seconds.append(_timed(guard, good)[1])
            time.sleep(0.02)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(timeout=30)
    assert max(seconds) < 0.5, max(seconds)


def test_request_lines_are_logged_escaped() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.setup("debug", "logfmt", stream)
    try:
        server = WebServer(_inner, ("127.0.0.1", 0))
        server.start()
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(b"GET /\x1b[31mred\r\x07 HTTP/1.0\r\n\r\n")
                sock.recv(4096)
        finally:
            server.stop()
    finally:
        root.handlers[:], root.level = handlers, level
    text = stream.getvalue()
    assert "http" in text
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text


def test_a_reload_re_reads_the_web_config_users_headers_and_certificate(
    pki: Pki, simulator: Simulator, tmp_path: Path
) -> None:
    """The web config was read once: a user removed from it kept access until a restart, and a
    broken file was "reloaded" without a word (review, 2026-11-30)."""
    cert, key = pki.server
    tls = f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
    alice, bob = ("alice", "alice's password"), ("bob", "bob's password")
    web = tmp_path / "web.yml"

    def users(*pairs: tuple[str, str]) -> str:
        return "basic_auth_users:\n" + "".join(f"  {u}: '{_hash(p)}'\n" for u, p in pairs)

    def reload(auth: tuple[str, str]) -> httpx.Response:
        url = f"{served.url}/-/reload"
        return httpx.post(url, verify=pki.client_context(), auth=auth, timeout=10)

    def ready(url: str) -> None:
        answer = httpx.get(f"{url}/-/ready", verify=pki.client_context(), auth=alice, timeout=2)
        assert answer.status_code == 200

    for served in _serve(tmp_path, simulator, tls + users(alice), ready):
        assert _get(served, pki, "/metrics", alice).status_code == 200
        assert _get(served, pki, "/metrics", bob).status_code == 401

        headers = "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        web.write_text(tls + users(bob) + headers)
        answer = reload(alice)
        assert answer.status_code == 200, answer.text
        assert _get(served, pki, "/metrics", alice).status_code == 401
        answer = _get(served, pki, "/metrics", bob)
        assert answer.status_code == 200
        assert answer.headers["x-frame-options"] == "deny"

        # A broken file, or TLS turned off under the open socket: nothing changes.
        for broken in (tls + "basic_auth_users: [", users(alice)):
            web.write_text(broken)
            assert reload(bob).status_code != 200
            assert _get(served, pki, "/metrics", bob).status_code == 200
            assert _get(served, pki, "/metrics", alice).status_code == 401
            metrics = _get(served, pki, "/metrics", bob).text
            assert "xapi_exporter_config_last_reload_successful 0.0" in metrics

        # A rotated certificate is served to new connections.
        openssl = require_tool("openssl")
        new_cert, new_key = _new_cert(openssl, pki.dir, "127.0.0.1-rotated", "ca", "server", 9)
        web.write_text(
            f"tls_server_config:\n  cert_file: {new_cert}\n  key_file: {new_key}\n" + users(bob)
        )
        assert reload(bob).status_code == 200
        served_pem = ssl.get_server_certificate(("127.0.0.1", served.exporter.port))
        assert ssl.PEM_cert_to_DER_cert(served_pem) == ssl.PEM_cert_to_DER_cert(
            new_cert.read_text()
        )
        assert _get(served, pki, "/metrics", bob).status_code == 200


def test_a_reload_builds_a_new_tls_context_so_a_client_ca_taken_out_is_refused(
    pki: Pki, simulator: Simulator, tmp_path: Path
) -> None:
    """A reload added the client CA file's certificates to the open context, so a CA taken out
    of it stayed trusted until a restart, and any change of versions or client auth failed the
    reload (review, 2026-11-30). New connections now get a context built from the file alone."""
    cert, key = pki.server
    tls = f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
    web = tmp_path / "web.yml"
    scraper, stranger = pki.client_context(pki.client), pki.client_context(pki.stranger)

    def mutual(ca: Path, extra: str = "") -> str:
        return (
            tls
            + f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca}\n"
            + extra
        )

    def ready(url: str) -> None:
        assert httpx.get(f"{url}/-/ready", verify=scraper, timeout=2).status_code == 200

    def admitted(context: ssl.SSLContext, served: Served) -> bool:
        try:
            return httpx.get(f"{served.url}/metrics", verify=context, timeout=5).is_success
        except httpx.HTTPError:
            return False

    for served in _serve(tmp_path, simulator, mutual(pki.ca), ready):
        assert admitted(scraper, served) and not admitted(stranger, served)
        # The scraper's CA out, the stranger's in, reloaded by the scraper while still trusted.
        web.write_text(mutual(pki.dir / "other-ca.crt"))
        answer = httpx.post(f"{served.url}/-/reload", verify=scraper, timeout=10)
        assert answer.status_code == 200, answer.text
        assert admitted(stranger, served) and not admitted(scraper, served)

        # Versions change too: a TLS 1.2-only client is refused once TLS 1.3 is the minimum.
        web.write_text(mutual(pki.dir / "other-ca.crt", "  min_version: TLS13\n"))
        with httpx.Client(verify=stranger, timeout=10) as client:
            assert client.post(f"{served.url}/-/reload").status_code == 200
        tls12 = pki.client_context(pki.stranger)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        assert admitted(stranger, served) and not admitted(tls12, served)
