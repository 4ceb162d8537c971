"""The README's first command, `make demo`, against the suite's cluster so that it cannot rot.

`tools/demo.py` uses the cluster KUBECONFIG names when it is reachable, so here it runs on the
session's control plane and its real node; its namespace is deleted afterwards. Nothing in the demo
marks a pod Succeeded: the kubelet runs the examples.
"""

from __future__ import annotations

import base64
import subprocess
import sys

from tests.support import leaks
from tests.support.cluster import ROOT, TASK_IMAGE, Cluster

NAMESPACE = "my-project-development"  # the demo's: project my_project, domain development
OPERATOR_LOG = ROOT / ".sesame" / "operator-demo.log"  # where tools/demo.py puts its operator's log


def test_demo_tells_the_whole_story(cluster: Cluster) -> None:
    output = ""
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
        assert OPERATOR_LOG.exists(), "the demo's operator wrote no log"
        steps = [
            "TaskRun CRD",
            "$ sesame create secret --project my_project --domain development my_union_api_key",
            "$ sesame run --remote --project my_project --domain development examples/using_secrets.py t1",
            f"created in namespace '{NAMESPACE}' (image {TASK_IMAGE})",
            "sesame: waiting: secret 'my_secret' not found",  # the run says what it waits for ...
            f"run `sesame create secret --namespace {NAMESPACE} my_secret`",  # ... and how to fix it
            "$ sesame create secret --project my_project --domain development my_secret",
            "printed by mistake it reads ****\nsesame: TaskRun t1-",  # the kubelet ran it, masked
            "examples/using_secrets.py t2 --calls 3",
            "t2 would call the API 3 time(s) with UNION_API_KEY set\nsesame: task 't2' returned 3\n",
            "t1 found a service_account credential at /etc/sesame/secrets/gcp_sa",
            "SESAME_SECRET_MY_SECRET            secretKeyRef my-secret/my_secret",
            '[{"apiVersion": "sesame.dev/v1alpha1", "kind": "TaskRun", "name": "t1-',
        ]
        positions = [output.find(step) for step in steps]
        assert -1 not in positions, [s for s, p in zip(steps, positions, strict=True) if p < 0]
        assert positions == sorted(positions), "the demo's story is out of order"
        assert output.count(" Succeeded\n") >= 3
        assert "--subresource=status" not in output  # no pod status is ever written by hand
    finally:
        # The demo makes up its secret values: they are canaries too, for its output and its
        # operator's log, and then for what its namespace shows (looked at before it is deleted).
        for secret in cluster.core.list_namespaced_secret(NAMESPACE).items:
            for value in (secret.data or {}).values():
                if len(base64.b64decode(value)) >= 16:
                    leaks.plant(base64.b64decode(value).decode())
        leaks.record("the demo's output", output)
        leaks.record("the demo's operator log", OPERATOR_LOG.read_bytes() if OPERATOR_LOG.exists() else b"")
        cluster.delete_namespace(NAMESPACE)
