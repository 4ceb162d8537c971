"""Git repositories served over smart HTTP on loopback, for GitOps controllers to clone.

Flux's source-controller speaks git's smart HTTP protocol (not dumb HTTP, not git://): the server
side is `git http-backend`, a CGI program, here behind a small stdlib HTTP server bound to
127.0.0.1 (`GIT_PROJECT_ROOT`, `GIT_HTTP_EXPORT_ALL`). Each repository is a plain work tree under
the root: a test writes files and commits (`Repository.commit`), the controller fetches the new
revision. Dev tooling: never imported by the shipped package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HTTP_BACKEND = "http-backend"
# Commits carry a fixed identity: no global git configuration is read or needed.
IDENTITY = {
    "GIT_AUTHOR_NAME": "Sesame tests",
    "GIT_AUTHOR_EMAIL": "tests@sesame.invalid",
    "GIT_COMMITTER_NAME": "Sesame tests",
    "GIT_COMMITTER_EMAIL": "tests@sesame.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


class GitError(RuntimeError):
    """A git command failed; the message holds its stderr."""


def _git(work_tree: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=work_tree,
        env={**os.environ, **IDENTITY},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


class Repository:
    """A work tree on branch `main` whose commits the server serves at once."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.url = url
        path.mkdir(parents=True)
        _git(path, "init", "--quiet", "--initial-branch=main")

    def commit(self, message: str, files: Mapping[str, str | Path | None]) -> str:
        """Write (text), copy (a file or directory) or remove (None) each path; commit; the SHA."""
        for relative, content in files.items():
            target = self.path / relative
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            if content is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                if content.is_dir():
                    shutil.copytree(content, target)
                else:
                    shutil.copyfile(content, target)
            else:
                target.write_text(content)
        _git(self.path, "add", "--all")
        _git(self.path, "commit", "--quiet", "--allow-empty", "--message", message)
        return _git(self.path, "rev-parse", "HEAD")


class GitServer:
    """`git http-backend` behind a threaded HTTP server on 127.0.0.1 (a free port)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.requests: list[str] = []  # "METHOD /path status", for a test's failure message
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="git-http", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def repository(self, name: str) -> Repository:
        return Repository(self.root / name, f"{self.base_url}/{name}")

    def start(self) -> GitServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> GitServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._cgi()

            def do_POST(self) -> None:
                self._cgi()

            def log_message(self, format: str, *args: object) -> None:
                """Requests are kept in `GitServer.requests`, not printed."""

            def _cgi(self) -> None:
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "GIT_CONFIG_NOSYSTEM": "1",
                    "GIT_CONFIG_GLOBAL": os.devnull,
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_ADDR": self.client_address[0],
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                }
                result = subprocess.run(
                    ["git", HTTP_BACKEND], input=body, env=env, capture_output=True, check=False
                )
                head, separator, payload = result.stdout.partition(b"\r\n\r\n")
                if not separator:
                    head, _, payload = result.stdout.partition(b"\n\n")
                status = 200
                headers = []
                for line in head.decode("latin-1").splitlines():
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                if result.returncode != 0 and status == 200:
                    status = 500
                server.requests.append(f"{self.command} {path} {status}")
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
