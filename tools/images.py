"""Container images for the local node, built without Docker: Debian packages + umoci.

- `TASK_IMAGE` — Sesame's task image: Debian bookworm's Python 3.11 (with `ssl`) and the Sesame
  SDK (the stdlib-only modules `sesame.SDK_MODULES` names). The examples and `sesame run --remote`
  use it on the local node; `Dockerfile.task` builds the same image for people with Docker.
- `PAUSE_IMAGE` — the pod sandbox: Debian's `catatonit` in pause mode (`-P`), a static init that
  sleeps until it is told to stop.
- `OPERATOR_IMAGE` — the operator, `ghcr.io/sesame-dev/sesame:<version>`, the image the Helm chart
  runs: the same Debian Python plus a virtualenv at /opt/sesame holding what `pip install
  '.[operator]'` installs (this project's wheel and the manylinux wheels of its dependencies),
  laid out like the `Dockerfile`'s image (entrypoint `sesame operator run`, user 10001, PATH,
  PYTHONUNBUFFERED); tests/unit/test_dockerfile.py keeps the two equal. Built on demand
  (`make operator-image`, or the Helm tests), not with every cluster: it changes with every edit
  of the operator's code.

Each image is an OCI archive cached under `~/.cache/sesame/images/`, keyed by the exact Debian
package versions (apt's own download list, with checksums), the files added and this recipe, so a
second run finds it at once. The operator's dependency wheels are resolved once per set of pins in
pyproject.toml and kept under `~/.cache/sesame/wheels-*` (a lock: the same wheels until a pin
changes). Dev tooling: never imported by the shipped package.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "operator" / "sesame"
CACHE_ROOT = Path(os.environ.get("SESAME_CACHE_DIR") or Path.home() / ".cache" / "sesame")
CACHE = CACHE_ROOT / "images"


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def project_version() -> str:
    for line in (ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise RuntimeError("pyproject.toml has no version line")


# Debian bookworm's Python; the Dockerfile's base image has the same minor version and release.
DEBIAN_RELEASE = "bookworm"
PYTHON_VERSION = "3.11"
TASK_IMAGE = f"ghcr.io/sesame-dev/sesame-task:{project_version()}"
OPERATOR_IMAGE = f"ghcr.io/sesame-dev/sesame:{project_version()}"
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
    f"libpython{PYTHON_VERSION}-minimal",
    f"libpython{PYTHON_VERSION}-stdlib",
    f"python{PYTHON_VERSION}-minimal",
    "python3-minimal",
)
SITE_PACKAGES = "usr/lib/python3/dist-packages"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The operator image, as the Dockerfile lays it out.
OPERATOR_PREFIX = "/opt/sesame"
OPERATOR_USER = "10001:10001"
OPERATOR_ENTRYPOINT = ("sesame", "operator", "run")
OPERATOR_PORTS = ("8080/tcp", "9090/tcp", "9443/tcp")  # health, metrics, webhook
OPERATOR_EXTRA = "operator"
# Every manylinux tag bookworm's glibc (2.36) runs, newest first: pip expands none of them itself.
MANYLINUX = (*tuple(f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)), "manylinux2014_x86_64")
WHEEL_TARGET = (
    *(arg for platform in MANYLINUX for arg in ("--platform", platform)),
    "--python-version",
    PYTHON_VERSION,
    "--implementation",
    "cp",
    "--abi",
    f"cp{PYTHON_VERSION.replace('.', '')}",
    "--only-binary=:all:",
)


class ImageError(RuntimeError):
    """An image that could not be built; says which step failed and why."""


@dataclass(frozen=True)
class Virtualenv:
    """A virtualenv at `prefix` as `python -m venv` + `pip install <requirement>` leave it, made from
    wheels for the image's Python (pip's `--target` with the image's platform tags), then compiled
    and smoke-tested by the image's own interpreter (under chroot)."""

    prefix: str
    requirement: str  # e.g. sesame-secrets[operator]==0.1.0
    pins: tuple[str, ...]  # the requirement's dependencies, as pyproject.toml pins them
    sources: tuple[Path, ...]  # what the project's wheel is built from (as the Dockerfile COPYs it)
    smoke_test: tuple[str, ...]  # a command that must succeed inside the finished image

    def wheels(self) -> Path:
        return dependency_wheels(self.pins)

    def key_parts(self) -> Iterator[bytes]:
        yield json.dumps([self.prefix, self.requirement, self.smoke_test]).encode()
        for wheel in sorted(self.wheels().glob("*.whl")):
            yield wheel.name.encode() + hashlib.sha256(wheel.read_bytes()).digest()
        for path in _source_files(self.sources):
            yield str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes()

    def install(self, root: Path, work: Path) -> None:
        project = work / "project"
        for source in self.sources:
            if source.is_dir():
                shutil.copytree(source, project / source.name, ignore=_not_sources)
            else:
                project.mkdir(exist_ok=True)
                shutil.copy2(source, project / source.name)
        dist = work / "dist"
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "--quiet"]
        _run([*pip, "wheel", "--no-deps", "--wheel-dir", str(dist), str(project)], "building the wheel")
        target = work / "target"
        _run(
            [
                *pip,
                "install",
                "--no-index",
                "--find-links",
                str(self.wheels()),
                "--find-links",
                str(dist),
                "--target",
                str(target),
                "--no-compile",
                "--no-warn-script-location",
                *WHEEL_TARGET,
                self.requirement,
            ],
            "installing wheels",
        )
        prefix = root / self.prefix.lstrip("/")
        site = prefix / "lib" / f"python{PYTHON_VERSION}" / "site-packages"
        bin_dir = prefix / "bin"
        bin_dir.mkdir(parents=True)
        for script in sorted((target / "bin").iterdir()):
            lines = script.read_text().splitlines(keepends=True)
            if lines and lines[0].startswith("#!"):  # pip wrote the building Python's path there
                lines[0] = f"#!{self.prefix}/bin/python\n"
            (bin_dir / script.name).write_text("".join(lines))
            (bin_dir / script.name).chmod(0o755)
        shutil.rmtree(target / "bin")
        site.parent.mkdir(parents=True)
        target.rename(site)
        interpreter = f"/usr/bin/python{PYTHON_VERSION}"
        for name in ("python", "python3", f"python{PYTHON_VERSION}"):
            (bin_dir / name).symlink_to(interpreter)
        (prefix / "lib64").symlink_to("lib")
        (prefix / "pyvenv.cfg").write_text(
            f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {_python_patch(root)}\n"
            f"executable = {interpreter}\ncommand = {interpreter} -m venv {self.prefix}\n"
        )
        # Byte-code for everything the operator imports: its root filesystem is read-only, so
        # without it every start compiles the standard library and Kopf's dependencies again.
        _chroot(
            root,
            [
                interpreter,
                "-m",
                "compileall",
                "-q",
                "--invalidation-mode",
                "unchecked-hash",
                f"/usr/lib/python{PYTHON_VERSION}",
                f"{self.prefix}/lib",
            ],
            "compiling byte-code",
        )
        _chroot(root, list(self.smoke_test), "the image's smoke test")


def _source_files(sources: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for source in sources:
        candidates = sorted(source.rglob("*")) if source.is_dir() else [source]
        found += [
            path
            for path in candidates
            if path.is_file() and not _not_sources("", list(path.relative_to(source.parent).parts))
        ]
    return found


def _not_sources(_directory: str, names: list[str]) -> set[str]:
    """What `pip install .` does not need and the .dockerignore leaves out: caches, editable metadata."""
    return {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".egg-info"))}


def _python_patch(root: Path) -> str:
    """The exact Python version of the unpacked Debian package, e.g. 3.11.2."""
    output = _chroot(
        root,
        [f"/usr/bin/python{PYTHON_VERSION}", "-c", "import platform; print(platform.python_version())"],
        "reading the Python version",
    )
    return output.strip()


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
    texts: dict[str, str] = field(default_factory=dict)  # path in the image -> content (mode 0644)
    labels: dict[str, str] = field(default_factory=dict)
    ports: tuple[str, ...] = ()  # e.g. 8080/tcp
    virtualenv: Virtualenv | None = None

    def download_list(self) -> list[str]:
        """apt's `download --print-uris` lines: URL, file name, size and checksum of each .deb."""
        result = _run(["apt-get", "download", "--print-uris", *self.packages], "listing Debian packages")
        return sorted(line for line in result.splitlines() if line.strip())

    def key(self) -> str:
        digest = hashlib.sha256()
        digest.update(Path(__file__).read_bytes())
        described = [self.name, self.entrypoint, self.user, self.workdir, self.env, self.ports]
        digest.update(json.dumps(described).encode())
        digest.update(json.dumps(sorted(self.directories.items())).encode())
        digest.update(json.dumps([sorted(self.texts.items()), sorted(self.labels.items())]).encode())
        for line in self.download_list():
            digest.update(line.encode())
        for target, source in sorted(self.files.items()):
            digest.update(target.encode() + b"\0" + source.read_bytes())
        if self.virtualenv is not None:
            for part in self.virtualenv.key_parts():
                digest.update(part)
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


def _chroot(root: Path, command: list[str], what: str) -> str:
    """Run the image's own program on its unpacked root filesystem (needs root, like the node)."""
    if os.geteuid() != 0:
        raise ImageError(f"{what}: running the image's Python under chroot needs root")
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [chroot, str(root), *command], capture_output=True, text=True, env=env, check=False
    )
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
    for path, text in recipe.texts.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o644)
    if recipe.virtualenv is not None:
        recipe.virtualenv.install(root, work)
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
        config += [f"--config.label={name}={value}" for name, value in recipe.labels.items()]
        config += [f"--config.exposedports={port}" for port in recipe.ports]
        if recipe.user:
            config += ["--config.user", recipe.user]
        _run(config, "umoci config")
        _run(["umoci", "gc", "--layout", str(layout)], "umoci gc")
        _name_in_index(layout / "index.json", recipe.name)
        partial = archive.with_suffix(".partial")
        _run(["tar", "-C", str(layout), "-cf", str(partial), "."], "packing the OCI archive")
        partial.rename(archive)
    builds = re.compile(re.escape(archive.name.rsplit("-", 1)[0]) + r"-[0-9a-f]{16}\.oci\.tar")
    for stale in CACHE.iterdir():
        if stale != archive and builds.fullmatch(stale.name):  # an older build of the same image
            stale.unlink()
    return archive


def archive_config(archive: Path) -> dict[str, Any]:
    """The OCI image config (entrypoint, user, env, labels, …) inside an archive `build` made."""
    with tarfile.open(archive) as tar:

        def blob(digest: str) -> dict[str, Any]:
            member = tar.extractfile(f"./blobs/sha256/{digest.removeprefix('sha256:')}")
            assert member is not None
            loaded: dict[str, Any] = json.load(member)
            return loaded

        index_member = tar.extractfile("./index.json")
        assert index_member is not None
        manifest = blob(json.load(index_member)["manifests"][0]["digest"])
        config: dict[str, Any] = blob(manifest["config"]["digest"])["config"]
        return config


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


def dependency_wheels(pins: Sequence[str]) -> Path:
    """The manylinux wheels of `pins` for the image's Python, downloaded once per set of pins:
    a directory that acts as the lock file of the image."""
    spec = hashlib.sha256(json.dumps([sorted(pins), WHEEL_TARGET]).encode()).hexdigest()[:16]
    locked = CACHE_ROOT / f"wheels-{spec}"
    if locked.is_dir():
        return locked
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sesame-wheels-", dir=CACHE_ROOT) as scratch:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "--disable-pip-version-check",
                "--quiet",
                "download",
                "--dest",
                scratch,
                *WHEEL_TARGET,
                *pins,
            ],
            "downloading the operator's dependency wheels",
        )
        Path(scratch).rename(locked)
        Path(scratch).mkdir()  # for TemporaryDirectory's cleanup
    return locked


def operator_recipe() -> Recipe:
    """The Dockerfile's image, assembled from Debian's Python and pip's wheels."""
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    version = project_version()
    return Recipe(
        name=OPERATOR_IMAGE,
        packages=PYTHON_PACKAGES,
        entrypoint=OPERATOR_ENTRYPOINT,
        user=OPERATOR_USER,
        env=(
            f"PATH={OPERATOR_PREFIX}/bin:{PATH_ENV.removeprefix('PATH=')}",
            "LANG=C.UTF-8",
            "PYTHONUNBUFFERED=1",
            "PYTHONDONTWRITEBYTECODE=1",
        ),
        directories={"/tmp": 0o1777},  # noqa: S108 (the image's own /tmp; the chart mounts an emptyDir)
        # The Dockerfile's `useradd --system --uid 10001 … sesame`: getpass (Kopf's peering
        # identity when POD_ID is not set) needs the user to exist.
        texts={
            "/etc/passwd": "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            "sesame:x:10001:10001::/nonexistent:/usr/sbin/nologin\n",
            "/etc/group": "root:x:0:\nsesame:x:10001:\n",
        },
        labels=dockerfile_labels(),
        ports=OPERATOR_PORTS,
        virtualenv=Virtualenv(
            prefix=OPERATOR_PREFIX,
            requirement=f"{project['name']}[{OPERATOR_EXTRA}]=={version}",
            pins=tuple(sorted(project["optional-dependencies"][OPERATOR_EXTRA])),
            sources=(ROOT / "pyproject.toml", ROOT / "README.md", ROOT / "operator"),
            smoke_test=(
                f"{OPERATOR_PREFIX}/bin/{OPERATOR_ENTRYPOINT[0]}",
                *OPERATOR_ENTRYPOINT[1:],
                "--help",
            ),
        ),
    )


def dockerfile_labels() -> dict[str, str]:
    """The Dockerfile's OCI labels, so both images describe themselves alike."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    labels: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("LABEL "):
            for pair in shlex.split(line.removeprefix("LABEL ")):
                name, _, value = pair.partition("=")
                labels[name] = value
    return labels


def node_images() -> dict[str, Path]:
    """Every image the local node imports at start: image name -> OCI archive."""
    return {recipe.name: build(recipe) for recipe in (pause_recipe(), task_recipe())}


# --- loading an image into a running local node ----------------------------------------------------


def _node_init_pid(state: Path) -> int:
    """The host PID of the node's init (PID 1 of its namespaces) of the cluster in `state`:
    the child of the `unshare` that `localnode.py run` started."""
    import localnode

    pids_file = state / "pids.json"
    if not pids_file.exists():
        raise ImageError(f"no local cluster runs with state {state} (no pids.json): make cluster first")
    host_side = json.loads(pids_file.read_text()).get("pids", {}).get("node")
    if not host_side:
        raise ImageError(f"the local cluster in {state} has no node")
    for unshare in localnode.children(host_side):
        for init in localnode.children(unshare):
            return init
    raise ImageError(f"the node of the local cluster in {state} (pid {host_side}) is not running")


def _in_node(state: Path, command: Sequence[str], what: str) -> str:
    """Run `command` in the node's mount, network and PID namespaces (where containerd's socket is)."""
    return _run(["nsenter", "-t", str(_node_init_pid(state)), "-m", "-n", "-p", "--", *command], what)


def _ctr(state: Path, *args: str) -> list[str]:
    from localnode import NodeConfig
    from nodeconfig import CONTAINERD_SOCKET

    config = NodeConfig.load(state / "node")
    return [str(Path(config.bin_dir) / "ctr"), "--address", CONTAINERD_SOCKET, "--namespace", "k8s.io", *args]


def load_into_node(state: Path, archive: Path, name: str) -> float:
    """Import `archive` into the running node's containerd (as the node does at start); seconds taken."""
    started = time.monotonic()
    _in_node(state, _ctr(state, "images", "import", "--no-unpack", str(archive)), f"importing {name}")
    listed = _in_node(state, _ctr(state, "images", "list", "--quiet"), "listing the node's images")
    if name not in listed.split():
        raise ImageError(f"{name} is not in the node's images after importing {archive}")
    return time.monotonic() - started


def tag_in_node(state: Path, source: str, target: str) -> None:
    """A second name for an imported image (an upgrade to a new tag without a rebuild)."""
    _in_node(state, _ctr(state, "images", "tag", "--force", source, target), f"tagging {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--operator", action="store_true", help=f"build the operator image ({OPERATOR_IMAGE}) instead"
    )
    parser.add_argument(
        "--archives", action="store_true", help="print only the archives' paths (for `kind load`)"
    )
    parser.add_argument(
        "--load-into",
        type=Path,
        metavar="STATE",
        help="import the image into the running local cluster whose state directory this is",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        started = time.monotonic()
        built = {OPERATOR_IMAGE: build(operator_recipe())} if args.operator else node_images()
        elapsed = time.monotonic() - started
        for name, archive in built.items():
            if args.archives:
                print(archive)
                continue
            print(f"{name}: {archive} ({archive.stat().st_size / 2**20:.1f} MiB, {elapsed:.1f}s)")
            if args.load_into:
                seconds = load_into_node(args.load_into, archive, name)
                print(f"{name}: imported into the node of {args.load_into} in {seconds:.1f}s")
    except ImageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
