from __future__ import annotations

from tests.support.cluster import Cluster, eventually
from tests.support.operator import running_operator

TEMPLATE = {"spec": {"containers": [{"name": "main", "image": "python:3.12-slim", "command": ["true"]}]}}


def test_default_env_delivery(cluster: Cluster, namespace: str, canary: str) -> None:
    cluster.store_secret(namespace, "my_secret", canary)
    with running_operator([namespace]) as runner:
        cluster.create_taskrun(namespace, "train", {"secrets": [{"key": "my_secret"}], "template": TEMPLATE})
        pod = eventually(lambda: cluster.pod(namespace, "train"), what="pod train")
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env["SESAME_SECRET_MY_SECRET"]["valueFrom"]["secretKeyRef"] == {
            "name": "my-secret",
            "key": "my_secret",
            "optional": False,
        }
        status = eventually(
            lambda: (
                cluster.taskrun(namespace, "train").get("status", {}).get("podName")
                and cluster.taskrun(namespace, "train")["status"]
            ),
            what="status",
        )
        assert status["phase"] == "Pending"
        cluster.set_pod_phase(namespace, "train", "Succeeded")
        eventually(
            lambda: cluster.taskrun(namespace, "train")["status"]["phase"] == "Succeeded", what="Succeeded"
        )
    assert canary not in runner.output
