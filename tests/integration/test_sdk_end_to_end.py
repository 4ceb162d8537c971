"""A secret stored with the CLI reaches task code through the operator and (a simulated) kubelet.

CLI → Secret → TaskRun → operator → pod spec (references only) → kubelet materialises env and
files (tests/support/kubelet.py) → `sesame.Secrets(environ).get(key=…)` returns the value, for
every delivery form.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import sesame
from sesame import naming
from tests.support.cluster import Cluster, eventually
from tests.support.kubelet import Kubelet
from tests.support.operator import running_operator

SESAME = str(Path(sys.executable).parent / "sesame")
TEMPLATE = {"spec": {"containers": [{"name": "main", "image": "python:3.12-slim", "command": ["true"]}]}}


def sesame_cli(cluster: Cluster, canary: str, *args: str, stdin: bytes = b"") -> None:
    result = subprocess.run([SESAME, *args], env=cluster.env(), input=stdin, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert canary.encode() not in result.stdout + result.stderr


def test_cli_secrets_reach_task_code_in_every_delivery_form(
    cluster: Cluster, namespace: str, canary: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {
        "api_token": f"{canary}-default-env",
        "my_union_api_key": f"{canary}-custom-env",
        "tls_cert": f"-----BEGIN {canary}-----\r\nfile line\n",
        "gcp_sa": json.dumps({"type": "service_account", "private_key": f"{canary}-sa"}),
    }
    keystore = bytes(range(256)) + canary.encode() + b"\x00\xff"
    for key, value in values.items():
        sesame_cli(cluster, canary, "create", "secret", "--namespace", namespace, key, stdin=value.encode())
    store = tmp_path / "keystore.p12"
    store.write_bytes(keystore)
    sesame_cli(cluster, canary, "create", "secret", "--namespace", namespace, "keystore", "-f", str(store))

    requests = [
        {"key": "api_token"},
        {"key": "my_union_api_key", "envVar": "UNION_API_KEY"},
        {"key": "tls_cert", "mountRequirement": "FILE"},
        {"key": "gcp_sa", "mountRequirement": "FILE", "envVar": "GOOGLE_APPLICATION_CREDENTIALS"},
        {"key": "keystore", "mountRequirement": "FILE"},
    ]
    with running_operator([namespace]) as runner:
        cluster.create_taskrun(namespace, "train", {"secrets": requests, "template": TEMPLATE})
        pod = eventually(lambda: cluster.pod(namespace, "train"), what="the TaskRun's pod")
        assert canary not in json.dumps(pod)  # references only, never a value

        kubelet = Kubelet(cluster.core, namespace, tmp_path / "kubelet")
        view = kubelet.materialise(pod, "main")
        assert view.env[naming.SECRETS_DIR_ENV] == naming.SECRETS_DIR
        assert naming.SECRETS_DIR in view.mounts
        environ = view.host_env()
        secrets = sesame.Secrets(environ)

        assert secrets.get(key="api_token") == values["api_token"]  # SESAME_SECRET_API_TOKEN
        assert secrets.get(key="my_union_api_key") == values["my_union_api_key"]  # UNION_API_KEY
        assert environ["UNION_API_KEY"] == values["my_union_api_key"]
        assert secrets.get(key="tls_cert") == values["tls_cert"]  # file, byte-exact (\r\n kept)
        assert secrets.get(key="gcp_sa") == values["gcp_sa"]
        assert secrets.get_bytes("keystore") == keystore

        files = view.mounts[naming.SECRETS_DIR]
        assert secrets.get_secrets_file("tls_cert") == str(files / "tls_cert")
        # FILE + envVar: the variable holds the file's path inside the container
        assert view.env["GOOGLE_APPLICATION_CREDENTIALS"] == f"{naming.SECRETS_DIR}/gcp_sa"
        assert Path(environ["GOOGLE_APPLICATION_CREDENTIALS"]).read_text() == values["gcp_sa"]
        assert secrets.get_secrets_file("gcp_sa") == environ["GOOGLE_APPLICATION_CREDENTIALS"]
        with pytest.raises(sesame.SecretDeliveryError, match="mountRequirement: FILE"):
            secrets.get_secrets_file("api_token")
        with pytest.raises(sesame.SecretNotFoundError, match=re.escape("`- {key: not_requested}`")):
            secrets.get(key="not_requested")

        # The same through the public entry point, with the container's environment as the process's.
        for name in list(os.environ):
            if name.startswith("SESAME_"):
                monkeypatch.delenv(name)
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        assert sesame.current_context().secrets.get(key="api_token") == values["api_token"]
        assert sesame.current_context().secrets.get(key="my_union_api_key") == values["my_union_api_key"]

        # Rotation with the CLI: the kubelet re-projects files into the running container.
        rotated = f"{canary}-rotated"
        sesame_cli(
            cluster, canary, "update", "secret", "--namespace", namespace, "tls_cert", stdin=rotated.encode()
        )
        kubelet.refresh(pod, view, "main")
        assert sesame.Secrets(environ).get(key="tls_cert") == rotated
        # env vars change only when a container starts again
        assert kubelet.materialise(pod, "main").env["SESAME_SECRET_API_TOKEN"] == values["api_token"]

        cluster.set_pod_phase(namespace, "train", "Succeeded")
        eventually(
            lambda: cluster.taskrun(namespace, "train").get("status", {}).get("phase") == "Succeeded",
            what="the TaskRun to succeed",
        )
        status = cluster.taskrun(namespace, "train")["status"]
        assert canary not in json.dumps(status)
    assert canary not in runner.output
