"""What task code really sees, through the real kubelet: env vars, files, modes, rotation.

Every pod here runs on the local node (kubelet + containerd + runc). The task code uses the Sesame
SDK and reports each secret as a length and a salted hash (tests/support/tasks.py), which the
test compares with what it planted; no value is ever printed.
"""

from __future__ import annotations

from tests.support import leaks
from tests.support.cluster import TASK_IMAGE, Cluster, eventually
from tests.support.operator import running_operator
from tests.support.status import condition, finished, status_of
from tests.support.tasks import SALT, proof, python, reporting_container, reports


def test_every_delivery_form_reaches_task_code_through_the_kubelet(
    cluster: Cluster, namespace: str, canary: str
) -> None:
    values = {
        "my_secret": f"{canary}-env",
        "api_key": f"{canary}-custom",
        "My.Cert": f"-----BEGIN CERT-----\n{canary}\n-----END CERT-----\n",
        "gcp_sa": '{"type": "service_account", "key": "' + canary + '"}',
        "password": f"{canary}-pässwörd",
    }
    for key in ("my_secret", "api_key", "My.Cert", "gcp_sa"):
        cluster.store_secret(namespace, key, values[key])
    cluster.create_secret(
        namespace,
        "db-creds",
        {"password": values["password"], "user": "app"},
        labels={"sesame.dev/usable": "true"},
    )
    for value in values.values():
        leaks.plant(value)
    keys = ["my_secret", "api_key", "db_password"]
    files = ["My.Cert", "gcp_sa"]
    spec = {
        "secrets": [
            {"key": "my_secret"},
            {"key": "api_key", "envVar": "UNION_API_KEY"},
            {"key": "My.Cert", "mountRequirement": "FILE"},
            {"key": "gcp_sa", "mountRequirement": "FILE", "envVar": "GOOGLE_APPLICATION_CREDENTIALS"},
            {"key": "db_password", "from": {"secret": "db-creds", "key": "password"}, "containers": ["main"]},
        ],
        "template": {
            "spec": {
                # A non-root user without fsGroup: Sesame gives the files that user's group.
                "securityContext": {"runAsUser": 10001, "runAsGroup": 10001},
                "initContainers": [
                    reporting_container("setup", keys, files, ["GOOGLE_APPLICATION_CREDENTIALS"])
                ],
                "containers": [
                    reporting_container("main", keys, files, ["GOOGLE_APPLICATION_CREDENTIALS"]),
                    # root, to show the mount itself is read-only (the task user is refused sooner)
                    reporting_container("sidecar", keys, files, securityContext={"runAsUser": 0}),
                ],
            }
        },
    }
    with running_operator([namespace]) as runner:
        cluster.create_taskrun(namespace, "train", spec)
        status = finished(cluster, namespace, "train")
        seen = reports(cluster, namespace, "train", ["setup", "main", "sidecar"])
    assert status["phase"] == "Succeeded", status
    assert condition(status, "Succeeded")["status"] == "True"
    main, setup, sidecar = seen["main"], seen["setup"], seen["sidecar"]
    assert main["values"] == {
        "my_secret": proof(values["my_secret"]),
        "api_key": proof(values["api_key"]),
        "db_password": proof(values["password"]),
    }
    # Requests without `containers` reach every container and init container; db_password only main.
    assert sidecar["values"] == setup["values"] == {**main["values"], "db_password": "missing"}
    assert (main["uid"], setup["uid"], sidecar["uid"]) == (10001, 10001, 0)
    for report in (main, setup, sidecar):
        assert report["files"]["My.Cert"] == {
            "path": "/etc/sesame/secrets/My.Cert",
            "name": "My.Cert",  # case and dots kept
            "mode": "0o440",  # owner and group read, nobody else
            "uid": 0,
            "gid": 10001,  # the pod's fsGroup: the task user reads it
            "write": "EROFS" if report["uid"] == 0 else "EACCES",  # a read-only mount, even for root
        }
        assert report["files"]["gcp_sa"]["mode"] == "0o440"
    assert main["env_paths"] == {"GOOGLE_APPLICATION_CREDENTIALS": "/etc/sesame/secrets/gcp_sa"}
    assert SALT not in canary
    assert canary not in runner.output


ROTATION = """
import hashlib, os, sesame, sys, time
salt = os.environ["SALT"]
secrets = sesame.current_context().secrets
def sha(value): return hashlib.sha256((salt + value).encode()).hexdigest()[:16]
env_at_start = sha(os.environ["SESAME_SECRET_TOKEN"])
print("STARTED", flush=True)
deadline = time.time() + 120
while time.time() < deadline:
    with open(secrets.get_secrets_file("token_file")) as handle:
        now = sha(handle.read())
    if now == os.environ["WANT"]:
        print("FILE", now, "ENV", sha(os.environ["SESAME_SECRET_TOKEN"]), "START", env_at_start, flush=True)
        sys.exit(0)
    time.sleep(0.5)
sys.exit(7)
"""


def test_a_cli_update_reaches_a_running_pods_file_and_the_env_keeps_its_start_value(
    cluster: Cluster, namespace: str, canary: str
) -> None:
    old, new = f"{canary}-old", f"{canary}-rotated"
    leaks.plant(new)
    cluster.store_secret(namespace, "token", old)
    cluster.store_secret(namespace, "token_file", old)
    want = proof(new)["sha"]
    container = python(
        "main", ROTATION, env=[{"name": "SALT", "value": SALT}, {"name": "WANT", "value": want}]
    )
    spec = {
        "secrets": [{"key": "token"}, {"key": "token_file", "mountRequirement": "FILE"}],
        "template": {"spec": {"containers": [container]}},
    }
    with running_operator([namespace]):
        cluster.create_taskrun(namespace, "rotate", spec)
        eventually(
            lambda: "STARTED" in _log(cluster, namespace, "rotate"), timeout=60, what="the task to start"
        )
        for key in ("token", "token_file"):
            result = cluster.sesame("update", "secret", "--namespace", namespace, key, stdin=new.encode())
            assert result.returncode == 0, result.stderr
        status = finished(cluster, namespace, "rotate", timeout=150)
    assert status["phase"] == "Succeeded", status
    line = next(line for line in _log(cluster, namespace, "rotate").splitlines() if line.startswith("FILE"))
    assert line.split() == ["FILE", want, "ENV", proof(old)["sha"], "START", proof(old)["sha"]]


def test_a_secret_deleted_after_the_pod_exists_holds_the_run_until_it_returns(
    cluster: Cluster, namespace: str, canary: str
) -> None:
    """The kubelet cannot start a container whose Secret is gone (CreateContainerConfigError): the
    TaskRun says so, and goes on when the Secret is back."""
    cluster.store_secret(namespace, "late_secret", canary)
    spec = {
        "secrets": [{"key": "late_secret", "containers": ["main"]}],
        "template": {
            "spec": {
                "initContainers": [python("wait", "import time; time.sleep(6)")],
                "containers": [python("main", "print('ran')")],
            }
        },
    }
    with running_operator([namespace]):
        cluster.create_taskrun(namespace, "held", spec)
        eventually(lambda: status_of(cluster, namespace, "held").get("podName"), what="the pod")
        cluster.core.delete_namespaced_secret("late-secret", namespace)
        status = eventually(
            lambda: (s := status_of(cluster, namespace, "held")).get("reason") == "SecretNotFound" and s,
            timeout=20,
            what="SecretsReady=False after the Secret was deleted",
        )
        assert condition(status, "SecretsReady")["status"] == "False"
        assert f"sesame create secret --namespace {namespace} late_secret" in status["message"]
        # The init container ends; the kubelet cannot start main and says why.
        eventually(
            lambda: "CreateContainerConfigError" in str((cluster.pod(namespace, "held") or {}).get("status")),
            timeout=60,
            what="the kubelet's CreateContainerConfigError",
        )
        cluster.store_secret(namespace, "late_secret", canary)
        status = finished(cluster, namespace, "held")
    assert status["phase"] == "Succeeded", status
    assert condition(status, "SecretsReady")["status"] == "True"
    assert "ran" in _log(cluster, namespace, "held")


def _log(cluster: Cluster, namespace: str, pod: str) -> str:
    try:
        text: str = cluster.core.read_namespaced_pod_log(pod, namespace, container="main")
    except Exception:  # not started yet
        return ""
    return text


def test_the_task_image_is_the_one_the_node_imported(cluster: Cluster) -> None:
    images = [
        name
        for node in cluster.core.list_node().items
        for image in node.status.images
        for name in image.names
    ]
    assert TASK_IMAGE in images
