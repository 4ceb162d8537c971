"""When each pod appeared: one raw WATCH on pods, timestamps taken as each ADDED line arrives.

No polling and no model deserialisation: the line is parsed only for its type and name, so the
watcher costs little next to the threads that create objects in the same process.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from typing import Any

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines


class PodWatch:
    """ADDED times (time.monotonic) of pods, by namespace and name, from `resourceVersion` on."""

    def __init__(self, api: client.ApiClient, namespace: str | None = None) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.added: dict[tuple[str, str], float] = {}
        self.changed = threading.Condition()
        self.stopped = False
        self.response: Any = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _open(self, resource_version: str) -> Any:
        options: dict[str, Any] = {
            "watch": True,
            "resource_version": resource_version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": 3600,
            "_preload_content": False,
        }
        if self.namespace:
            return self.core.list_namespaced_pod(self.namespace, **options)
        return self.core.list_pod_for_all_namespaces(**options)

    def start(self) -> PodWatch:
        """Returns once the watch is established (response headers received)."""
        if self.namespace:
            listing = self.core.list_namespaced_pod(self.namespace, limit=1, _preload_content=False)
        else:
            listing = self.core.list_pod_for_all_namespaces(limit=1, _preload_content=False)
        resource_version = json.loads(listing.data)["metadata"]["resourceVersion"]
        listing.release_conn()
        self.response = self._open(resource_version)
        self.thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            for line in iter_resp_lines(self.response):
                now = time.monotonic()
                if self.stopped:
                    return
                if not line.startswith('{"type":"ADDED"'):
                    continue
                meta = json.loads(line)["object"]["metadata"]
                with self.changed:
                    self.added.setdefault((meta["namespace"], meta["name"]), now)
                    self.changed.notify_all()
        except BaseException as error:
            if not self.stopped:
                self.error = error
        finally:
            with self.changed:
                self.changed.notify_all()

    def count(self, namespace: str | None = None) -> int:
        with self.changed:
            if namespace is None:
                return len(self.added)
            return sum(1 for ns, _ in self.added if ns == namespace)

    def wait_for(self, keys: set[tuple[str, str]], timeout: float) -> bool:
        """Until every (namespace, name) in `keys` was seen, or `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not keys <= self.added.keys():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.error is not None:
                    return False
                self.changed.wait(min(remaining, 1.0))
        return True

    def stop(self) -> None:
        """Shut the socket down: closing it would wait for the blocked read (up to a bookmark, 60 s)."""
        self.stopped = True
        if self.response is not None:
            sock = getattr(getattr(self.response, "connection", None), "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        if self.thread is not None:
            self.thread.join(timeout=5)
        if self.response is not None:
            self.response.close()
