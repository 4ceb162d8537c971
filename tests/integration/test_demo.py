"""The README's first command, `make demo`, against the suite's cluster so that it cannot rot.

`tools/demo.py` uses the cluster KUBECONFIG names when it is reachable, so here it runs on the
session's control plane; its namespace is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys

from kubernetes.client.exceptions import ApiException

from tests.support.cluster import ROOT, Cluster

NAMESPACE = "my-project-development"  # the demo's, from examples/taskrun.yaml


def test_demo_tells_the_whole_story(cluster: Cluster) -> None:
    try:
        demo = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "demo.py")],
            env=cluster.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        output = demo.stdout + demo.stderr
        assert demo.returncode == 0, output[-4000:]
        steps = [
            "TaskRun CRD",
            "secret 'my_secret' not found",  # waits with the condition's message first ...
            f"run `sesame create secret --namespace {NAMESPACE} my_secret`",  # ... saying what to do
            "storing the secrets with the sesame CLI",
            "SESAME_SECRET_MY_SECRET            secretKeyRef my-secret/my_secret",
            '"path": "my_file_secret"',  # the projected volume
            "taskrun.sesame.dev/train condition met",
            "train   Succeeded   train   True",
        ]
        positions = [output.find(step) for step in steps]
        assert -1 not in positions, [s for s, p in zip(steps, positions, strict=True) if p < 0]
        assert positions == sorted(positions), "the demo's story is out of order"
    finally:
        with contextlib.suppress(ApiException):
            cluster.core.delete_namespace(NAMESPACE)
