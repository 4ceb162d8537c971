"""Container images for the local node, built without Docker: Debian packages + umoci.

- `TASK_IMAGE` — Sesame's task image: Debian bookworm's Python 3.11 (with `ssl`) and the Sesame
  SDK (the stdlib-only modules `sesame.SDK_MODULES` names). The examples and `sesame run --remote`
  use it on the local node; `Dockerfile.task` builds the same image for people with Docker.
- `PAUSE_IMAGE` — the pod sandbox: Debian's `catatonit` in pause mode (`-P`), a static init that
  sleeps until it is told to stop.

Each image is an OCI archive cached under `~/.cache/sesame/images/`, keyed by the exact Debian
package versions (apt's own download list, with checksums), the files added and this recipe, so a
second run finds it at once. Dev tooling: never imported by the shipped package.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "operator" / "sesame"
CACHE = Path(os.environ.get("SESAME_CACHE_DIR") or Path.home() / ".cache" / "sesame") / "images"


def project_version() -> str:
    for line in (ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise RuntimeError("pyproject.toml has no version line")


TASK_IMAGE = f"ghcr.io/sesame-dev/sesame-task:{project_version()}"
PAUSE_IMAGE = "localhost/sesame/pause:catatonit-0.1.7"
# Debian's Python 3.11 as `python3`, with what `ssl`, `ctypes`, `hashlib` and the compressors load.
PYTHON_PACKAGES = (
    "libc6",
    "libgcc-s1",
    "zlib1g",
    "libexpat1",
    "libssl3",
    "libffi8",
    "libbz2-1.0",
    "liblzma5",
    "libcrypt1",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "python3.11-minimal",
    "python3-minimal",
)
SITE_PACKAGES = "usr/lib/python3/dist-packages"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(RuntimeError):
    """An image that could not be built; says which step failed and why."""


@dataclass(frozen=True)
class Recipe:
    """What goes into one image; `key()` changes whenever any input does."""

    name: str  # repository:tag
    packages: tuple[str, ...]
    files: dict[str, Path] = field(default_factory=dict)  # path in the image -> file on this machine
    entrypoint: tuple[str, ...] = ()
    user: str = ""
    workdir: str = "/"
    env: tuple[str, ...] = (PATH_ENV,)
    directories: dict[str, int] = field(default_factory=dict)  # path -> mode, created empty

    def download_list(self) -> list[str]:
        """apt's `download --print-uris` lines: URL, file name, size and checksum of each .deb."""
        result = _run(["apt-get", "download", "--print-uris", *self.packages], "listing Debian packages")
        return sorted(line for line in result.splitlines() if line.strip())

    def key(self) -> str:
        digest = hashlib.sha256()
        digest.update(Path(__file__).read_bytes())
        digest.update(json.dumps([self.name, self.entrypoint, self.user, self.workdir, self.env]).encode())
        digest.update(json.dumps(sorted(self.directories.items())).encode())
        for line in self.download_list():
            digest.update(line.encode())
        for target, source in sorted(self.files.items()):
            digest.update(target.encode() + b"\0" + source.read_bytes())
        return digest.hexdigest()[:16]

    def archive(self) -> Path:
        repository = self.name.rsplit(":", 1)[0].replace("/", "_")
        return CACHE / f"{repository}-{self.key()}.oci.tar"


def _run(command: Sequence[str], what: str, cwd: Path | None = None) -> str:
    result = subprocess.run(list(command), capture_output=True, text=True, cwd=cwd, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise ImageError(f"{what} failed ({' '.join(command[:3])} … exit {result.returncode}):\n{tail}")
    return result.stdout


def _rootfs(recipe: Recipe, work: Path) -> Path:
    debs, root = work / "debs", work / "rootfs"
    debs.mkdir()
    root.mkdir()
    debs.chmod(0o777)  # apt downloads as its unprivileged `_apt` user when it can
    _run(["apt-get", "download", "-q", *recipe.packages], "downloading Debian packages", cwd=debs)
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"unpacking {deb.name}")
    for path, mode in recipe.directories.items():
        target = root / path.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(mode)
    for path, source in recipe.files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        target.chmod(0o644)
    return root


def build(recipe: Recipe) -> Path:
    """The OCI archive of `recipe`, built unless cached."""
    archive = recipe.archive()
    if archive.exists():
        return archive
    if shutil.which("umoci") is None:
        raise ImageError("umoci is needed to build images (Debian: apt-get install umoci)")
    CACHE.mkdir(parents=True, exist_ok=True)
    tag = recipe.name.rsplit(":", 1)[1]
    with tempfile.TemporaryDirectory(prefix="sesame-image-", dir=CACHE) as scratch:
        work = Path(scratch)
        root = _rootfs(recipe, work)
        layout = work / "layout"
        image = f"{layout}:{tag}"
        _run(["umoci", "init", "--layout", str(layout)], "umoci init")
        _run(["umoci", "new", "--image", image], "umoci new")
        _run(
            [
                "umoci",
                "insert",
                "--image",
                image,
                "--history.created_by",
                "sesame tools/images.py",
                str(root),
                "/",
            ],
            "umoci insert",
        )
        config = ["umoci", "config", "--image", image, "--architecture", "amd64", "--os", "linux"]
        config += ["--author", "sesame tools/images.py", "--config.workingdir", recipe.workdir]
        config += [f"--config.entrypoint={part}" for part in recipe.entrypoint]
        config += [f"--config.env={env}" for env in recipe.env]
        if recipe.user:
            config += ["--config.user", recipe.user]
        _run(config, "umoci config")
        _run(["umoci", "gc", "--layout", str(layout)], "umoci gc")
        _name_in_index(layout / "index.json", recipe.name)
        partial = archive.with_suffix(".partial")
        _run(["tar", "-C", str(layout), "-cf", str(partial), "."], "packing the OCI archive")
        partial.rename(archive)
    for stale in CACHE.glob(archive.name.rsplit("-", 1)[0] + "-*.oci.tar"):
        if stale != archive:  # an older build of the same image
            stale.unlink()
    return archive


def _name_in_index(index_file: Path, name: str) -> None:
    """OCI's `ref.name` holds only the tag; `ctr images import` (and so `kind load image-archive`)
    names an image from containerd's `io.containerd.image.name` annotation, the full reference."""
    index = json.loads(index_file.read_text())
    for manifest in index["manifests"]:
        manifest.setdefault("annotations", {})["io.containerd.image.name"] = name
    index_file.write_text(json.dumps(index))


def sdk_files() -> dict[str, Path]:
    """The stdlib-only modules of the `sesame` package, as the SDK installs them into an image."""
    sys.path.insert(0, str(PACKAGE.parent))
    from sesame import SDK_MODULES

    return {f"{SITE_PACKAGES}/sesame/{module}.py": PACKAGE / f"{module}.py" for module in SDK_MODULES}


def task_recipe() -> Recipe:
    return Recipe(
        name=TASK_IMAGE,
        packages=PYTHON_PACKAGES,
        files=sdk_files(),
        entrypoint=("/usr/bin/python3",),
        env=(PATH_ENV, "PYTHONUNBUFFERED=1"),  # a task's prints reach `kubectl logs` as they happen
        directories={"/tmp": 0o1777, "/work": 0o755},  # noqa: S108 (the image's own /tmp)
        workdir="/work",
    )


def pause_recipe() -> Recipe:
    return Recipe(name=PAUSE_IMAGE, packages=("catatonit",), entrypoint=("/usr/bin/catatonit", "-P"))


def node_images() -> dict[str, Path]:
    """Every image the local node imports: image name -> OCI archive."""
    return {recipe.name: build(recipe) for recipe in (pause_recipe(), task_recipe())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.parse_args(argv)
    try:
        for name, archive in node_images().items():
            print(f"{name}: {archive} ({archive.stat().st_size / 2**20:.1f} MiB)")
    except ImageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
