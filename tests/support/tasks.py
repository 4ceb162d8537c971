"""Task code that runs on the real node and reports what it sees — never a secret's value.

A report holds, per key, the value's length and a salted SHA-256 prefix (`proof`), so a test
compares it with the value it planted without the value ever reaching a log. The script uses the
Sesame SDK inside the task image exactly as task code would.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from tests.support.cluster import TASK_IMAGE, Cluster

SALT = "sesame-test-salt"

# Runs inside the container: python3 -c REPORT (keys and file keys come from env KEYS / FILES).
REPORT = """
import errno, hashlib, json, os, sesame
salt = os.environ["SALT"]
secrets = sesame.current_context().secrets
def proof(value):
    return {"len": len(value), "sha": hashlib.sha256((salt + value).encode()).hexdigest()[:16]}
report = {"who": os.environ.get("WHO", "?"), "uid": os.getuid(), "values": {}, "files": {}}
for key in os.environ.get("KEYS", "").split(","):
    if key:
        try:
            report["values"][key] = proof(secrets.get(key=key))
        except sesame.SecretNotFoundError:
            report["values"][key] = "missing"
for key in os.environ.get("FILES", "").split(","):
    if key:
        try:
            path = secrets.get_secrets_file(key)
        except sesame.SecretNotFoundError:
            report["files"][key] = "missing"
            continue
        info = os.stat(path)
        try:
            open(path, "a").close()
            writable = True
        except OSError as error:
            writable = errno.errorcode.get(error.errno, str(error.errno))
        report["files"][key] = {"path": path, "name": os.path.basename(path), "write": writable,
                                "mode": oct(info.st_mode & 0o777), "uid": info.st_uid, "gid": info.st_gid}
report["env_paths"] = {n: os.environ.get(n) for n in os.environ.get("PATHS", "").split(",") if n}
print("REPORT " + json.dumps(report, sort_keys=True), flush=True)
"""


def proof(value: str) -> dict[str, Any]:
    """What REPORT prints for `value`: computed here independently of the task."""
    return {"len": len(value), "sha": hashlib.sha256((SALT + value).encode()).hexdigest()[:16]}


def reporting_container(
    name: str, keys: Sequence[str], files: Sequence[str] = (), paths: Sequence[str] = (), **extra: Any
) -> dict[str, Any]:
    env = [
        {"name": "SALT", "value": SALT},
        {"name": "WHO", "value": name},
        {"name": "KEYS", "value": ",".join(keys)},
        {"name": "FILES", "value": ",".join(files)},
        {"name": "PATHS", "value": ",".join(paths)},
    ]
    return {"name": name, "image": TASK_IMAGE, "command": ["python3", "-c", REPORT], "env": env, **extra}


def python(name: str, code: str, **extra: Any) -> dict[str, Any]:
    """A container of the task image that runs `code`."""
    return {"name": name, "image": TASK_IMAGE, "command": ["python3", "-c", code], **extra}


def reports(cluster: Cluster, namespace: str, pod: str, containers: list[str]) -> dict[str, dict[str, Any]]:
    """Each container's report, read from its log through the API server (as `kubectl logs`)."""
    found = {}
    for container in containers:
        log = cluster.core.read_namespaced_pod_log(pod, namespace, container=container)
        line = next(line for line in log.splitlines() if line.startswith("REPORT "))
        found[container] = json.loads(line.removeprefix("REPORT "))
    return found
