"""The images' contents and commands, run without Docker (there is no engine on our machines):
the project is laid out as the Dockerfile lays it out (its COPY instructions, .dockerignore, the
build stage's own commands, then the runtime's copies from the build), and each service is started
there with its image's ENTRYPOINT, `python` being this virtualenv's (the image's venv holds the
same pinned packages). A module the images leave out, or a command that no longer starts its
service, fails here."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.test_dockerfile import ROOT, STAGES, lineage
from tests.integration.engine_support import _serving
from tests.support import RedisServer, free_port, wait_for

LINES = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
IGNORED = [line for line in LINES if line and not line.startswith(("#", "!"))]


def _ignored(relative: str) -> bool:
    parts = relative.split("/")
    for pattern in IGNORED:
        pattern = pattern.removeprefix("**/").rstrip("/")
        if pattern == "*":
            continue  # the catch-all: what is copied is whitelisted with "!"
        if fnmatch.fnmatch(relative, pattern) or any(fnmatch.fnmatch(p, pattern) for p in parts):
            return True
    return False


def _copy(source: Path, dest: Path, relative: str) -> None:
    if source.is_dir():
        for child in source.iterdir():
            rel = f"{relative}/{child.name}"
            if not _ignored(rel):
                _copy(child, dest / child.name, rel)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)


def _dest(workdir: Path, source: str, target: str) -> Path:
    dest = workdir / target
    return dest / Path(source).name if target.endswith("/") and not (ROOT / source).is_dir() else dest


def _build_command_ok(command: str) -> bool:
    # Installing the packages is what the image's venv is for; ours has the same pins.
    return "pip install" not in command and "python -m venv" not in command


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("image")
    src, app = tmp / "src", tmp / "app"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for name in ("build", "build-ui"):
        for kind, arg in STAGES[name].instructions:
            if kind == "COPY":
                *sources, target = shlex.split(arg)
                for source in sources:
                    _copy(ROOT / source, _dest(src, source, target), source.rstrip("/"))
            elif kind == "RUN":
                for command in arg.split(" && "):
                    if _build_command_ok(command):
                        subprocess.run(command, shell=True, cwd=src, env=env, check=True, timeout=120)
    for stage in {s.name: s for target in ("api", "ui") for s in lineage(STAGES[target])}.values():
        for copy in stage.all("COPY"):
            origin, source, target = shlex.split(copy)
            assert origin.startswith("--from=build"), copy
            if source.startswith("/src/"):
                shutil.copytree(src / source.removeprefix("/src/"), app / target, dirs_exist_ok=True)
    assert (app / "schedcore" / "gen" / "scheduler" / "v1" / "task_service_pb2.py").exists()
    assert not (app / "tests").exists() and not (app / "tools").exists()
    return app


def _entrypoint(name: str) -> list[str]:
    import json

    (entrypoint,) = [json.loads(e) for s in lineage(STAGES[name]) for e in s.all("ENTRYPOINT")]
    assert entrypoint[0] == "python"
    return [sys.executable, *entrypoint[1:]]


@contextlib.contextmanager
def _running(argv: list[str], cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_the_code_comes_from_the_image_layout(app: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import schedcore.pb, services.api, ui.client; print(schedcore.pb.__file__)"],
        cwd=app,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(out.stdout.strip()).is_relative_to(app)


@pytest.mark.parametrize("name", ["api", "scheduler", "executor"])
def test_grpc_service_starts_from_its_entrypoint(app: Path, name: str, redis_srv: RedisServer) -> None:
    port = free_port()
    env = dict(
        os.environ,
        HOME=str(app.parent),  # the image's HOME is /tmp
        REDIS_URL=redis_srv.url,
        GRPC_HOST="127.0.0.1",
        GRPC_PORT=str(port),
        EXECUTOR_ADDRS=f"127.0.0.1:{free_port()}",
        SCHEDULER_ADDR=f"127.0.0.1:{free_port()}",
        SHUTDOWN_GRACE_SECONDS="1",
    )
    with _running(_entrypoint(name), app, env) as proc:
        wait_for(lambda: _serving(port, proc), 30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0  # drains and exits cleanly on SIGTERM, as in a pod


def test_ui_starts_from_its_entrypoint(app: Path) -> None:
    argv = _entrypoint("ui")
    port = free_port()
    argv[argv.index("--server.port") + 1] = str(port)  # 8501 may be taken on this machine
    env = dict(os.environ, HOME=str(app.parent), API_ADDR=f"127.0.0.1:{free_port()}")

    def healthy() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    with _running(argv, app, env) as proc:
        wait_for(healthy, 60, interval=0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:
            assert reply.status == 200
