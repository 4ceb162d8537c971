"""A secret stored with the CLI reaches task code through the operator and the real kubelet.

CLI → Secret → TaskRun (from `sesame run --remote`) → operator → pod spec (references only) →
kubelet (env `secretKeyRef`, projected files) → `sesame.current_context().secrets` in the
container, for every delivery form; then a rotation with the CLI reaches the running task's file
while its env var keeps the start value. The task compares SHA-256 digests that the test hands it
as inputs, so no value is ever printed — and the output is masked anyway.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from sesame import naming
from tests.support.cluster import TASK_IMAGE, Cluster
from tests.support.operator import running_operator
from tests.support.sesame_run import SESAME, LiveRun, taskrun_name

TASK = """
import hashlib, os, time
import sesame
from sesame import Secret

FILE = Secret.MountType.FILE


def digest(value):
    return hashlib.sha256(value if isinstance(value, bytes) else value.encode()).hexdigest()


@sesame.task(secret_requests=[
    Secret(key="api_token"),
    Secret(key="my_union_api_key", env_var="UNION_API_KEY"),
    Secret(key="tls_cert", mount_requirement=FILE),
    Secret(key="gcp_sa", mount_requirement=FILE, env_var="GOOGLE_APPLICATION_CREDENTIALS"),
    Secret(key="keystore", mount_requirement=FILE),
    Secret(key="my.secret"),
])
def check(digests: dict, rotated: str) -> None:
    secrets = sesame.current_context().secrets
    seen = {
        "api_token": digest(secrets.get(key="api_token")),
        "my_union_api_key": digest(secrets.get(key="my_union_api_key")),
        "UNION_API_KEY": digest(os.environ["UNION_API_KEY"]),
        "tls_cert": digest(secrets.get(key="tls_cert")),
        "gcp_sa": digest(open(os.environ["GOOGLE_APPLICATION_CREDENTIALS"], "rb").read()),
        "keystore": digest(secrets.get_bytes("keystore")),
        "my.secret": digest(secrets.get(key="my.secret")),
    }
    for name, expected in sorted(digests.items()):
        print(name, "ok" if seen[name] == expected else "DIFFERENT")
    print("file:", secrets.get_secrets_file("tls_cert"), os.environ["GOOGLE_APPLICATION_CREDENTIALS"])
    print("dir:", os.environ["SESAME_SECRETS_DIR"], sorted(secrets.delivered_keys()))
    for attempt in (
        lambda: secrets.get_secrets_file("api_token"),
        lambda: secrets.get(key="not_requested"),
        lambda: secrets.get(key="my_secret"),  # shares SESAME_SECRET_MY_SECRET with my.secret
    ):
        try:
            attempt()
        except (sesame.SecretDeliveryError, sesame.SecretNotFoundError) as error:
            print(type(error).__name__, error)
    print("waiting for rotation", flush=True)
    deadline = time.monotonic() + 90
    while digest(secrets.get(key="tls_cert")) != rotated and time.monotonic() < deadline:
        time.sleep(0.2)
    print("tls_cert rotated" if digest(secrets.get(key="tls_cert")) == rotated else "tls_cert NOT rotated")
    kept = digest(secrets.get(key="api_token")) == digests["api_token"]
    print("api_token env", "kept" if kept else "CHANGED")
"""


def sha256(value: str | bytes) -> str:
    return hashlib.sha256(value if isinstance(value, bytes) else value.encode()).hexdigest()


def sesame_cli(cluster: Cluster, canary: str, *commands: tuple[list[str], bytes]) -> None:
    """Several `sesame` commands at once (args, stdin), each of which must succeed without echoing."""
    pipe = subprocess.PIPE
    running = [
        (subprocess.Popen([SESAME, *args], env=cluster.env(), stdin=pipe, stdout=pipe, stderr=pipe), stdin)
        for args, stdin in commands
    ]
    for process, stdin in running:
        out, err = process.communicate(stdin, timeout=60)
        assert process.returncode == 0, err.decode()
        assert canary.encode() not in out + err


def test_cli_secrets_reach_task_code_in_every_delivery_form(
    cluster: Cluster, namespace: str, canary: str, tmp_path: Path
) -> None:
    values = {
        "api_token": f"{canary}-default-env",
        "my_union_api_key": f"{canary}-custom-env",
        "tls_cert": f"-----BEGIN {canary}-----\r\nfile line\n",
        "gcp_sa": json.dumps({"type": "service_account", "private_key": f"{canary}-sa"}),
        "my.secret": f"{canary}-dotted",
    }
    keystore = bytes(range(256)) + canary.encode() + b"\x00\xff"
    store = tmp_path / "keystore.p12"
    store.write_bytes(keystore)
    create = ["create", "secret", "--namespace", namespace]
    sesame_cli(
        cluster,
        canary,
        *(([*create, key], value.encode()) for key, value in values.items()),
        ([*create, "keystore", "-f", str(store)], b""),
    )
    task = tmp_path / "check.py"
    task.write_text(TASK)
    digests = {key: sha256(value) for key, value in values.items()}
    digests |= {"UNION_API_KEY": digests["my_union_api_key"], "keystore": sha256(keystore)}
    rotated = f"{canary}-rotated"

    with running_operator([namespace]) as runner:
        run = LiveRun(
            cluster.env(),
            *["--remote", "--namespace", namespace, "--image", TASK_IMAGE, str(task), "check"],
            *["--digests", json.dumps(digests), "--rotated", sha256(rotated)],
        )
        run.wait_for_line("waiting for rotation", stream="out", timeout=90)
        update = ["update", "secret", "--namespace", namespace]
        sesame_cli(
            cluster, canary, *(([*update, key], rotated.encode()) for key in ("tls_cert", "api_token"))
        )
        done = run.finish(timeout=120)
        assert done.code == 0, done.out + done.err
        directory = naming.SECRETS_DIR
        assert done.out.splitlines() == [
            *(f"{name} ok" for name in sorted(digests)),
            f"file: {directory}/tls_cert {directory}/gcp_sa",
            f"dir: {directory} "
            + str(["api_token", "gcp_sa", "keystore", "my.secret", "my_union_api_key", "tls_cert"]),
            "SecretDeliveryError secret 'api_token' was delivered as env var SESAME_SECRET_API_TOKEN, not as "
            "a file; to get a file, request it with `mountRequirement: FILE` (in Python: "
            "mount_requirement=sesame.Secret.MountType.FILE)",
            "SecretNotFoundError secret 'not_requested' was not delivered to this task: add "
            "`sesame.Secret(key='not_requested')` to its secret_requests, or `- {key: not_requested}` to the "
            "TaskRun's spec.secrets (or to the pod's sesame.dev/secrets annotation)",
            "SecretNotFoundError secret 'my_secret' was not delivered to this task: add "
            "`sesame.Secret(key='my_secret')` to its secret_requests, or `- {key: my_secret}` to the "
            "TaskRun's spec.secrets (or to the pod's sesame.dev/secrets annotation)",
            "waiting for rotation",
            "tls_cert rotated",  # the kubelet re-projected the file into the running container
            "api_token env kept",  # an env var changes only when a container starts again
        ]
        pod = cluster.pod(namespace, taskrun_name(done))
        assert pod is not None
        assert canary not in json.dumps(pod)  # references only, never a value
        assert canary not in json.dumps(cluster.taskrun(namespace, pod["metadata"]["name"])["status"])
    assert canary not in runner.output
