"""The repository stands alone and installs under a name of its own.

- The distribution name is not `sesame` (on the package index that is an unrelated project) and
  every install instruction uses the one in pyproject.toml; the import name stays `sesame`.
- Nothing points to the folder that sits beside the working tree here (a clone does not have it),
  and every relative link of
  the README and docs/ leads to a file of the repository.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from sesame.entrypoint import DISTRIBUTION

ROOT = Path(__file__).resolve().parents[2]
# Checked on the package index this project's machines reach: `pip download --no-deps
# sesame-secrets==0` found no version at all, while `sesame==0` lists 0.1.0 … 0.3.3.
FREE_NAME = "sesame-secrets"
BESIDE_THE_TREE = "/".join(["..", "shared"])  # spelled apart so that this file does not name it
USER_FACING = ["README.md", "charts/sesame/templates/NOTES.txt", "examples", "docs", "Dockerfile"]


def repository_files() -> list[Path]:
    """Tracked files and new ones not ignored: what a commit of this tree would hold."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def text_of(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError:
        return ""


def test_the_distribution_has_a_free_name_used_everywhere() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == FREE_NAME
    assert DISTRIBUTION == FREE_NAME  # what the CLI's --version and install hints use
    assert f"{FREE_NAME}[cli,operator]" in project["optional-dependencies"]["dev"]
    taken = re.compile(r"(?<![\w-])sesame\[|pip install (?:-\S+ )*'?sesame(?![\w-])")
    for path in repository_files():
        if any(path.is_relative_to(ROOT / part) for part in USER_FACING) or path.name == "pyproject.toml":
            found = taken.search(text_of(path))
            assert found is None, f"{path.relative_to(ROOT)} installs the taken name: {found.group()!r}"


def test_nothing_points_outside_the_repository() -> None:
    for path in repository_files():
        assert BESIDE_THE_TREE not in text_of(path), path.relative_to(ROOT)


def test_links_of_the_readme_and_docs_lead_to_files_of_the_repository() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) >= 5, "docs/ holds the design, the TaskRun, the annotation and the CLI pages"
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            resolved = (page.parent / target).resolve()
            assert resolved.is_relative_to(ROOT), f"{page.name} links outside the repository: {target}"
            assert resolved.exists(), f"{page.name} links to a missing file: {target}"


def test_the_cli_reference_lists_every_exit_code() -> None:
    from sesame.cli.errors import ExitCode

    rows = re.findall(r"^\| (\d+) \|", (ROOT / "docs" / "cli.md").read_text(), re.MULTILINE)
    assert [int(row) for row in rows] == [int(code) for code in ExitCode]
