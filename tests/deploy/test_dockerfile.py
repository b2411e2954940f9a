"""The Dockerfile: each service's image runs exactly the command the tests and `make run` run,
from the same layout (the project's root as working directory), as a non-root user, on a pinned
slim base, with the protos generated during the build by the same generator as `make proto`.

There is no Docker engine on our machines, so the image is checked by reading the Dockerfile;
the processes themselves are what the integration tests start (engine_support.service_argv)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.manifests import OVERLAYS, SERVICES, render
from tests.integration.engine_support import service_argv
from tools.run_local import services as local_services
from tools.run_local import ui_args

ROOT = Path(__file__).resolve().parents[2]
LOCAL = {s.name: s for s in local_services()}
UI_PORT = 8501


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse(path: Path) -> tuple[dict[str, str], dict[str, Stage]]:
    """Global ARGs and the stages of a Dockerfile (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            current = Stage(name.strip(), base.strip())
            stages[current.name] = current
        elif current is None:
            assert keyword == "ARG", line
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            current.instructions.append((keyword, rest.strip()))
    return args, stages


ARGS, STAGES = parse(ROOT / "Dockerfile")


def lineage(stage: Stage) -> list[Stage]:
    chain = [stage]
    while chain[-1].base in STAGES:
        chain.append(STAGES[chain[-1].base])
    return chain


def test_base_image_is_a_pinned_slim_python() -> None:
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", ARGS["PYTHON_IMAGE"]), ARGS["PYTHON_IMAGE"]
    for stage in STAGES.values():
        assert stage.base in STAGES or stage.base == "${PYTHON_IMAGE}", stage


@pytest.mark.parametrize("name", SERVICES)
def test_image_runs_the_command_the_tests_run(name: str) -> None:
    stage = STAGES[name]
    (entrypoint,) = [json.loads(e) for s in lineage(stage) for e in s.all("ENTRYPOINT")]
    assert not any(s.all("CMD") for s in lineage(stage))
    # `python` is the virtualenv's: the runtime stage puts /opt/venv/bin first on PATH.
    assert any("PATH=/opt/venv/bin:$PATH" in e for e in STAGES["runtime"].all("ENV"))
    if name == "ui":  # what `make run` and the dashboard's browser test run
        assert entrypoint == ["python", *ui_args(UI_PORT)]
    else:
        assert entrypoint == ["python", *LOCAL[name].args]
        assert entrypoint[1:] == service_argv(f"services.{name}")[1:]
    # From the project's layout, like the tests (cwd = the checkout's root).
    assert STAGES["runtime"].all("WORKDIR") == ["/app"]
    copied = {shlex.split(c)[-1] for s in lineage(stage) for c in s.all("COPY")}
    assert {"./schedcore", "./services"} <= copied
    assert str(UI_PORT if name == "ui" else LOCAL[name].port) in " ".join(stage.all("EXPOSE")).split()


@pytest.mark.parametrize("name", SERVICES)
def test_final_images_are_non_root_and_carry_no_build_tools(name: str) -> None:
    chain = lineage(STAGES[name])
    assert chain[-1].name == "runtime" and chain[-1].base == "${PYTHON_IMAGE}"
    (user,) = [u for s in chain for u in s.all("USER")]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0  # numeric, so Kubernetes' runAsNonRoot can verify it
    for stage in chain:
        for command in stage.all("RUN"):
            assert not re.search(r"\b(pip|apt-get|apt|gcc|make)\b", command), (stage.name, command)


def test_the_image_holds_the_projects_metadata_and_no_second_copy_of_its_code() -> None:
    """tasksched_build_info's version comes from the installed project's metadata (docs/metrics.md):
    the build stage installs the project, without dependencies, while only pyproject.toml is in
    /src, so the venv gets its dist-info and none of its packages (the code runs from /app)."""
    build = STAGES["build"].instructions
    (at,) = [i for i, (kw, arg) in enumerate(build) if kw == "RUN" and "pip install --no-deps ." in arg]
    assert [arg for kw, arg in build[:at] if kw == "COPY"] == ["pyproject.toml ./"]
    assert "--from=build /opt/venv /opt/venv" in STAGES["runtime"].all("COPY")


def test_protos_are_generated_during_the_build() -> None:
    runs = " && ".join(STAGES["build"].all("RUN"))
    assert "python tools/gen_protos.py" in runs  # the generator `make proto` runs
    assert "rm -rf schedcore/gen" in runs
    make = (ROOT / "Makefile").read_text()
    assert "$(PY) tools/gen_protos.py" in make
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "schedcore/gen/" in ignored  # never a checkout's generated code


def test_dockerignore_lets_in_everything_the_dockerfile_copies() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    for stage in STAGES.values():
        for copy in stage.all("COPY"):
            if copy.startswith("--from="):
                continue
            for source in shlex.split(copy)[:-1]:
                assert source.rstrip("/") in allowed, source
                assert (ROOT / source).exists() or source == "ui", source


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifests_run_these_images_unchanged(overlay: str) -> None:
    m = render(overlay)
    for name in SERVICES:
        container = m.container(name)
        assert container["image"].split(":")[0] == f"scheduler-suite-{name}"
        assert "command" not in container and "args" not in container
        exposed = " ".join(STAGES[name].all("EXPOSE")).split()
        assert [str(p["containerPort"]) for p in container["ports"]] == exposed
        user = m.pod_spec(name)["securityContext"]["runAsUser"]
        assert STAGES["runtime"].all("USER") == [f"{user}:{user}"]
