"""The Dockerfile and the local image recipe (tools/images.py `operator_recipe`) build the same image.

People with Docker build `ghcr.io/sesame-dev/sesame` from the Dockerfile; this project builds it
without Docker from Debian's Python and pip's wheels and runs it on the local node. These tests fail
when one of them changes the entrypoint, user, paths, environment, ports or Python version line
and the other does not. tests/integration/test_helm_incluster.py checks the built image's config.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import images

ROOT = Path(__file__).resolve().parents[2]
DIGEST = re.compile(r"python:(?P<version>3\.\d+)\.\d+-slim-(?P<release>[a-z]+)@sha256:[0-9a-f]{64}")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def env_of(steps: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in steps:
        if keyword == "ENV":
            env |= dict(pair.split("=", 1) for pair in shlex.split(rest))
    return env


def dockerfile_python() -> str:
    """The Dockerfile's Python minor version (e.g. 3.11), from its FROM line."""
    [base] = {rest.split()[0] for keyword, rest in instructions() if keyword == "FROM"}
    matched = DIGEST.fullmatch(base)
    assert matched, f"{base}: pin python:<3.x.y>-slim-<release> by its index digest (@sha256:…)"
    return matched["version"]


def test_every_base_is_the_recipes_python_pinned_by_digest() -> None:
    bases = [rest.split()[0] for keyword, rest in instructions() if keyword == "FROM"]
    assert len(bases) == 2, "a build stage and a final stage"
    assert len(set(bases)) == 1, f"both stages must use the same base: {bases}"
    matched = DIGEST.fullmatch(bases[0])
    assert matched, f"{bases[0]}: pin python:<3.x.y>-slim-<release> by its index digest (@sha256:…)"
    assert matched["version"] == dockerfile_python() == images.PYTHON_VERSION
    assert matched["release"] == images.DEBIAN_RELEASE
    recipe = images.operator_recipe()
    assert f"python{images.PYTHON_VERSION}-minimal" in recipe.packages


def test_entrypoint_user_and_ports_agree() -> None:
    final = dict(final_stage())
    recipe = images.operator_recipe()
    assert json.loads(final["ENTRYPOINT"]) == list(recipe.entrypoint) == ["sesame", "operator", "run"]
    assert final["USER"] == recipe.user == "10001:10001"
    assert sorted(f"{port}/tcp" for port in final["EXPOSE"].split()) == sorted(recipe.ports)
    # The Dockerfile's `useradd --uid 10001 … --home-dir /nonexistent --shell /usr/sbin/nologin sesame`.
    useradd = next(rest for keyword, rest in final_stage() if keyword == "RUN" and "useradd" in rest)
    passwd = recipe.texts["/etc/passwd"].splitlines()
    uid, gid = recipe.user.split(":")
    assert f"sesame:x:{uid}:{gid}::/nonexistent:/usr/sbin/nologin" in passwd
    for flag in (f"--uid {uid}", f"--gid {gid}", "--home-dir /nonexistent", "--shell /usr/sbin/nologin"):
        assert flag in useradd, flag


def test_virtualenv_paths_and_environment_agree() -> None:
    recipe = images.operator_recipe()
    assert recipe.virtualenv is not None
    prefix = recipe.virtualenv.prefix
    assert prefix == "/opt/sesame"
    steps = instructions()
    assert ("RUN", f"python -m venv {prefix}") in steps
    assert ("COPY", f"--from=build {prefix} {prefix}") in final_stage()
    install = next(rest for keyword, rest in steps if keyword == "RUN" and "pip install" in rest)
    assert install.startswith(f"{prefix}/bin/pip install ")
    assert f"'.[{images.OPERATOR_EXTRA}]'" in install
    assert recipe.virtualenv.requirement.split("[")[1].startswith(f"{images.OPERATOR_EXTRA}]")

    docker_env = env_of(final_stage())
    recipe_env = dict(entry.split("=", 1) for entry in recipe.env)
    assert docker_env["PATH"] == f"{prefix}/bin:$PATH"
    assert recipe_env["PATH"].startswith(f"{prefix}/bin:")
    for name in ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"):
        assert docker_env[name] == recipe_env[name] == "1", name


def test_both_build_from_the_same_sources() -> None:
    """The Dockerfile COPYs pyproject.toml, README.md and operator/; the recipe builds its wheel from
    the same, and the .dockerignore keeps caches and editable metadata out as the recipe does."""
    recipe = images.operator_recipe()
    assert recipe.virtualenv is not None
    copied = [rest for keyword, rest in instructions() if keyword == "COPY" and not rest.startswith("--from")]
    sources = {word for rest in copied for word in rest.split()[:-1]}
    assert sources == {path.name for path in recipe.virtualenv.sources}
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".sesame", "tests", ".git", "**/__pycache__", "*.egg-info"} <= ignored


def test_labels_name_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    labels = images.operator_recipe().labels
    assert labels["org.opencontainers.image.version"] == version
    assert f"ghcr.io/sesame-dev/sesame:{version}" == images.OPERATOR_IMAGE
