"""Installed without extras, the package is the SDK: `import sesame` works, and each command that
needs an extra says which one, in one line, instead of a traceback.

A real install: a fresh virtualenv and `pip install --no-deps -e .` of this repository (no
Kubernetes client, no PyYAML, no Kopf), the way `pip install sesame-secrets` leaves a task image.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from sesame.cli.errors import ExitCode
from tests.support.cluster import ROOT


def test_each_command_names_the_extra_it_needs(tmp_path: Path) -> None:
    venv = tmp_path / "sdk-only"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [venv / "bin" / "pip", "install", "--quiet", "--no-deps", "-e", str(ROOT)],
        capture_output=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr.decode()
    python, sesame = str(venv / "bin" / "python"), str(venv / "bin" / "sesame")
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(tmp_path / "never-read")}

    missing = subprocess.run(
        [python, "-c", "import yaml, kubernetes"], env=env, capture_output=True, timeout=60
    )
    assert missing.returncode != 0  # control: the extras' packages really are absent
    sdk = subprocess.run(
        [python, "-c", "import sesame; print(sesame.Secrets({'SESAME_SECRET_K': 'v'}).get(key='k'))"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert sdk.stdout == b"v\n", sdk.stderr.decode()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    shown = subprocess.run([sesame, "--version"], env=env, capture_output=True, timeout=60)
    assert shown.stdout.decode().strip() == f"sesame {version}", shown.stderr.decode()

    for argv, command in [
        (["get", "secret", "-n", "x"], "get secret"),
        (["create", "secret", "-n", "x", "k"], "create secret"),
    ]:
        result = subprocess.run([sesame, *argv], env=env, input=b"v", capture_output=True, timeout=60)
        assert result.returncode == ExitCode.NOT_INSTALLED, result.stderr.decode()
        assert result.stderr.decode().splitlines() == [
            f"error: `sesame {command}` needs the 'cli' extra, which is not installed (no module named "
            "'yaml'): pip install 'sesame-secrets[cli]'"
        ]
    operator = subprocess.run(
        [sesame, "operator", "run", "--standalone"], env=env, capture_output=True, timeout=60
    )
    lines = operator.stderr.decode().splitlines()
    assert operator.returncode != 0
    assert len(lines) == 1, operator.stderr.decode()
    assert lines[0].startswith("error: ")
    assert lines[0].endswith("pip install 'sesame-secrets[operator]'")
