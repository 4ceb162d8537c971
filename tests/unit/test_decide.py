"""The controller's pure decision: every rule of a TaskRun's life, without a cluster.

Expected values are written out by hand (reasons, messages, the exact fix commands); the property
test checks that any interleaving of Secret and pod changes ends where a fresh look would.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sesame.controller import status as status_mod
from sesame.controller.decide import Decision, Observed, Policy, decide
from sesame.injection import SecretFacts

NS = "proj-dev"
AT = "2026-01-01T00:00:00Z"
UID = "uid-train"


def taskrun(
    secrets: list[dict[str, Any]], status: dict[str, Any] | None = None, **meta: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "train", "namespace": NS, "uid": UID, "generation": 1, **meta},
        "spec": {
            "secrets": secrets,
            "template": {"spec": {"containers": [{"name": "main", "image": "img"}]}},
        },
        "status": status or {},
    }


def stored(*keys: str) -> dict[str, SecretFacts]:
    """Secrets as `sesame create secret` stores them: object my-key, data key my_key."""
    return {k.lower().replace("_", "-"): SecretFacts(frozenset({k}), sesame_key=k) for k in keys}


def pod(
    phase: str = "Pending",
    *,
    uid: str = "pod-uid",
    owner: str = UID,
    name: str = "train",
    block: bool = True,
    **status: Any,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": uid,
            "ownerReferences": [
                {
                    "kind": "TaskRun",
                    "name": "train",
                    "uid": owner,
                    "controller": True,
                    "blockOwnerDeletion": block,
                }
            ],
        },
        "status": {"phase": phase, **status},
    }


def run(
    tr: dict[str, Any], secrets: dict[str, SecretFacts], the_pod: dict[str, Any] | None = None, **extra: Any
) -> Decision:
    labelled = extra.pop("labelled", [the_pod] if the_pod else [])
    return decide(Observed(tr, the_pod, labelled, secrets, **extra), AT)


def cond(status: dict[str, Any] | None, type_: str) -> tuple[str, str]:
    found = status_mod.condition_of(status, type_) or {}
    return found.get("status", ""), found.get("reason", "")


def test_every_secret_present_creates_the_pod_and_says_so_once_it_is_on_its_way() -> None:
    tr = taskrun([{"key": "my_secret"}])
    decision = run(tr, stored("my_secret"))
    assert decision.pod is not None
    assert decision.status is None  # the pod first; the status follows the pod
    assert decision.events == []
    env = {e["name"]: e for e in decision.pod["spec"]["containers"][0]["env"]}
    assert env["SESAME_SECRET_MY_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "my-secret",
        "key": "my_secret",
        "optional": False,
    }
    owner = decision.pod["metadata"]["ownerReferences"][0]
    assert (owner["uid"], owner["controller"], owner["blockOwnerDeletion"]) == (UID, True, True)
    made = run(tr, stored("my_secret"), created_uid="pod-uid")  # created, not seen yet
    assert made.pod is None
    status = made.status
    assert status is not None
    assert status["podUID"] == "pod-uid"
    assert (status["phase"], status["reason"], status["podName"]) == ("Pending", "PodPending", "train")
    assert cond(status, "PodCreated") == ("True", "PodCreated")
    assert cond(status, "Succeeded") == ("Unknown", "NotStarted")
    assert cond(status, "Reconciling") == ("True", "PodPending")
    assert cond(status, "Stalled") == ("False", "PodPending")
    assert status["secrets"] == [{"key": "my_secret", "delivery": "env", "envVar": "SESAME_SECRET_MY_SECRET"}]
    assert [(e.type, e.message) for e in made.events] == [("Normal", "created pod 'train'")]
    # Seen in the watch, the pod says the same: nothing to write, nothing to tell again.
    seen = run(taskrun([{"key": "my_secret"}], status), stored("my_secret"), pod("Pending"))
    assert seen.status is not None
    assert status_mod.same_status(status, seen.status)
    assert seen.events == []
    # Seen before the status was written (the usual order in a burst): the same status and event.
    first = run(tr, stored("my_secret"), pod("Pending"), created_uid="pod-uid")
    assert first.status is not None
    assert status_mod.same_status(status, first.status)
    assert [e.reason for e in first.events] == ["PodCreated"]


def test_until_the_status_records_it_only_the_pod_the_operator_created_counts() -> None:
    tr = taskrun([{"key": "my_secret"}])
    swapped = run(tr, stored("my_secret"), pod("Succeeded", uid="swapped-in"), created_uid="pod-uid")
    assert swapped.forged == ["train"]
    assert swapped.status is not None
    assert swapped.status["phase"] == "Pending"
    assert swapped.status.get("podUID") is None


def test_a_missing_secret_holds_the_run_with_the_exact_command() -> None:
    decision = run(taskrun([{"key": "my_secret"}]), {})
    status = decision.status
    assert decision.pod is None
    assert status is not None
    assert (status["phase"], status["reason"]) == ("Pending", "SecretNotFound")
    assert "run `sesame create secret --namespace proj-dev my_secret`" in status["message"]
    assert cond(status, "SecretsReady") == ("False", "SecretNotFound")
    assert cond(status, "PodCreated") == ("False", "WaitingForSecrets")
    assert cond(status, "Reconciling") == ("True", "SecretNotFound")
    assert cond(status, "Stalled")[0] == "False"
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "SecretNotFound")]
    # The same problem again is no news: no second event.
    again = run(taskrun([{"key": "my_secret"}], status), {})
    assert again.events == []
    assert status_mod.same_status(status, again.status or {})


def test_every_problem_is_named_and_counted_and_follows_the_secrets() -> None:
    secrets = [{"key": "have_one", "envVar": "TOKEN"}, {"key": "later_one", "envVar": "TOKEN"}]
    first = run(taskrun(secrets), {})
    status = first.status
    assert status is not None
    assert (status["phase"], status["reason"]) == ("Failed", "EnvVarClash")
    assert status["message"].startswith(
        "the run can never start as written; 3 problems: [1] secret 'have_one'"
    )
    assert "[2] secret 'later_one' not found" in status["message"]
    assert "[3] secrets 'have_one' and 'later_one' both set env var 'TOKEN'" in status["message"]
    assert cond(status, "Stalled") == ("True", "EnvVarClash")
    assert cond(status, "Succeeded") == ("False", "EnvVarClash")
    second = run(taskrun(secrets, status), stored("have_one")).status
    assert second is not None
    assert "2 problems: [1] secret 'later_one' not found" in second["message"]
    third = run(taskrun(secrets, second), stored("have_one", "later_one")).status
    assert third is not None
    assert third["message"] == (
        "the run can never start as written; secrets 'have_one' and 'later_one' both set env var 'TOKEN' in "
        "container 'main'; give one of them a different envVar"
    )
    assert third["phase"] == "Failed"


def test_a_secret_deleted_while_the_pod_runs_makes_secrets_ready_false() -> None:
    running = pod("Running", startTime=AT)
    decision = run(taskrun([{"key": "my_secret"}]), {}, running)
    status = decision.status
    assert status is not None
    assert (status["phase"], status["reason"]) == ("Running", "SecretNotFound")
    assert status["message"].startswith(
        "the task runs, but a restart would fail: secret 'my_secret' not found"
    )
    assert cond(status, "SecretsReady") == ("False", "SecretNotFound")
    assert cond(status, "PodCreated") == ("True", "PodCreated")
    assert status["podUID"] == "pod-uid"


def test_the_kubelets_config_error_is_reported_and_recovers() -> None:
    waiting = {
        "name": "main",
        "state": {
            "waiting": {"reason": "CreateContainerConfigError", "message": 'secret "my-secret" not found'}
        },
    }
    stuck = pod("Pending", containerStatuses=[waiting])
    status = run(taskrun([{"key": "my_secret"}]), {}, stuck).status
    assert status is not None
    assert (status["phase"], status["reason"]) == ("Pending", "SecretNotFound")
    assert status["message"].startswith("the pod cannot start: ")
    # The Secret is back (the index knows it) but the kubelet has not retried yet: still held.
    status = run(taskrun([{"key": "my_secret"}], status), stored("my_secret"), stuck).status
    assert status is not None
    assert cond(status, "SecretsReady") == ("False", "SecretNotFound")
    assert "the kubelet cannot start container 'main': Secret 'my-secret'" in status["message"]
    # The kubelet started it: ready again.
    status = run(taskrun([{"key": "my_secret"}], status), stored("my_secret"), pod("Running")).status
    assert status is not None
    assert (status["phase"], status["reason"]) == ("Running", "Running")
    assert cond(status, "SecretsReady") == ("True", "SecretsFound")


def test_a_forged_pod_is_ignored_and_reported() -> None:
    evil = pod("Succeeded", uid="evil-uid", name="evil")
    tr = taskrun([{"key": "my_secret"}])
    decision = run(tr, {}, None, labelled=[evil])
    assert decision.forged == ["evil"]
    assert decision.status is not None
    assert (decision.status["phase"], decision.status.get("podName")) == ("Pending", None)


def test_a_same_name_pod_without_the_operators_mark_is_not_adopted() -> None:
    for impostor in (pod("Succeeded", block=False), pod("Succeeded", owner="someone-else")):
        decision = run(taskrun([{"key": "my_secret"}]), stored("my_secret"), impostor)
        assert decision.pod is None
        assert decision.status is not None
        assert decision.status["phase"] == "Pending"
        assert decision.status["reason"] in ("PodNameTaken", "PreviousPodTerminating")
        assert decision.forged == ["train"]
    recorded = taskrun([{"key": "my_secret"}], {"phase": "Running", "podName": "train", "podUID": "real"})
    other = run(recorded, stored("my_secret"), pod("Succeeded", uid="replaced")).status
    assert other is not None
    assert other["phase"] != "Succeeded"


def test_the_previous_runs_pod_is_waited_for() -> None:
    old = pod("Running", owner="uid-of-the-deleted-run")
    status = run(taskrun([{"key": "my_secret"}]), stored("my_secret"), old).status
    assert status is not None
    assert (status["phase"], status["reason"]) == ("Pending", "PreviousPodTerminating")
    assert cond(status, "PodCreated") == ("False", "PreviousPodTerminating")


def test_a_pod_gone_before_it_finished_fails_the_run_unless_it_is_on_its_way() -> None:
    tr = taskrun([{"key": "my_secret"}], {"phase": "Running", "podName": "train", "podUID": "pod-uid"})
    status = run(tr, stored("my_secret")).status
    assert status is not None
    assert (status["phase"], status["reason"]) == ("Failed", "PodDeleted")
    assert cond(status, "Succeeded") == ("False", "PodDeleted")
    on_its_way = run(tr, stored("my_secret"), created_uid="pod-uid").status
    assert on_its_way is not None
    assert (on_its_way["phase"], on_its_way["reason"]) == ("Pending", "PodPending")


def test_a_finished_run_stays_as_it_ended() -> None:
    done = run(taskrun([{"key": "my_secret"}]), stored("my_secret"), pod("Succeeded")).status
    assert done is not None
    assert (done["phase"], done["reason"]) == ("Succeeded", "Completed")
    assert cond(done, "Succeeded") == ("True", "Completed")
    assert cond(done, "Reconciling")[0] == "False"
    assert done["completionTime"] == AT
    later = run(taskrun([{"key": "my_secret"}], done), {}, None)
    assert later.status is None
    assert later.pod is None


def test_system_namespaces_are_refused() -> None:
    tr = taskrun([{"key": "my_secret"}])
    tr["metadata"]["namespace"] = "kube-system"
    decision = run(tr, stored("my_secret"))
    assert decision.pod is None
    assert decision.status is not None
    assert (decision.status["phase"], decision.status["reason"]) == ("Failed", "NamespaceNotAllowed")
    assert "TaskRuns are not served in namespace 'kube-system'" in decision.status["message"]
    own = run(taskrun([{"key": "my_secret"}]), stored("my_secret"), policy=Policy(frozenset({NS})))
    assert own.status is not None
    assert own.status["reason"] == "NamespaceNotAllowed"


def test_from_needs_the_secret_owners_consent() -> None:
    request = [{"key": "db", "from": {"secret": "payroll-db", "key": "password"}}]
    theirs = {"payroll-db": SecretFacts(frozenset({"password"}), managed=False)}
    status = run(taskrun(request), theirs).status
    assert status is not None
    assert (status["phase"], status["reason"]) == ("Pending", "SecretNotUsable")
    assert "kubectl label secret -n proj-dev payroll-db sesame.dev/usable=true" in status["message"]
    opted_in = {"payroll-db": SecretFacts(frozenset({"password"}), managed=False, opted_in=True)}
    assert run(taskrun(request), opted_in).pod is not None
    release = {
        "sh.helm.release.v1.payroll.v1": SecretFacts(
            frozenset({"release"}), managed=False, opted_in=True, type="helm.sh/release.v1"
        )
    }
    helm = [{"key": "r", "from": {"secret": "sh.helm.release.v1.payroll.v1", "key": "release"}}]
    held = run(taskrun(helm), release).status
    assert held is not None
    assert held["reason"] == "SecretNotUsable"
    assert "a Helm release record (type helm.sh/release.v1), which Sesame never delivers" in held["message"]


def test_hints_say_what_is_really_missing() -> None:
    # DB_TOKEN is stored; the run asks for db_token (the same Secret object, another key).
    status = run(taskrun([{"key": "db_token"}]), stored("DB_TOKEN")).status
    assert status is not None
    assert status["reason"] == "KeyNotFound"
    assert (
        "holds the secret 'DB_TOKEN' (keys are case-sensitive); request key 'DB_TOKEN' instead"
        in status["message"]
    )
    assert "sesame create secret" not in status["message"]
    # A from-Secret that exists but lacks the data key: add the key, do not create the Secret.
    theirs = {"db-creds": SecretFacts(frozenset({"user"}), managed=False, opted_in=True)}
    request = [{"key": "db", "from": {"secret": "db-creds", "key": "password"}}]
    status = run(taskrun(request), theirs).status
    assert status is not None
    assert "has no data key 'password' (it has: user); add that key to the Secret" in status["message"]
    assert "create Secret" not in status["message"]
    # A run in `default` is told where project secrets live.
    tr = taskrun([{"key": "my_secret"}])
    tr["metadata"]["namespace"] = "default"
    status = run(tr, {}).status
    assert status is not None
    assert "this runs in namespace 'default'" in status["message"]


# --- property: any interleaving ends where a fresh look would --------------------------------

KEYS = ("alpha", "beta")
OPS = st.lists(
    st.sampled_from(
        ["add alpha", "add beta", "drop alpha", "drop beta", "wipe alpha", "run", "config-error", "skip"]
    ),
    max_size=25,
)


class World:
    """A namespace, one TaskRun and the pod the simulated controller made; no kubelet shortcuts."""

    def __init__(self) -> None:
        self.secrets: dict[str, SecretFacts] = {}
        self.pod: dict[str, Any] | None = None
        self.taskrun = taskrun([{"key": k} for k in KEYS])

    def apply(self, op: str) -> None:
        verb, _, key = op.partition(" ")
        if verb == "add":
            self.secrets.update(stored(key))
        elif verb == "drop":
            self.secrets.pop(key, None)
        elif verb == "wipe" and key in self.secrets:
            self.secrets[key] = SecretFacts(frozenset(), sesame_key=key)  # the data key removed
        elif verb == "run" and self.pod is not None:
            self.pod = pod("Running", startTime=AT)
        elif verb == "config-error" and self.pod is not None and self.pod["status"]["phase"] == "Pending":
            # only a container that has not started yet (a Running pod never goes back to Pending)
            waiting = {
                "name": "main",
                "state": {
                    "waiting": {"reason": "CreateContainerConfigError", "message": 'secret "alpha" not found'}
                },
            }
            self.pod = pod("Pending", containerStatuses=[waiting])

    def reconcile(self) -> None:
        decision = decide(
            Observed(self.taskrun, self.pod, [self.pod] if self.pod else [], dict(self.secrets)), AT
        )
        if decision.pod is not None:
            self.pod = pod("Pending")
            self.reconcile()  # the new pod's watch-event brings the next pass
        elif decision.status is not None:
            self.taskrun = {**self.taskrun, "status": decision.status}


@given(OPS)
def test_any_interleaving_ends_with_the_status_a_fresh_reconcile_computes(ops: list[str]) -> None:
    world = World()
    world.reconcile()
    for op in ops:
        world.apply(op)
        if op != "skip":  # a skipped reconcile: events merged in the queue
            world.reconcile()
    world.reconcile()
    final = world.taskrun["status"]
    fresh = decide(
        Observed(
            copy.deepcopy({**world.taskrun, "status": {}}),
            world.pod,
            [world.pod] if world.pod else [],
            dict(world.secrets),
        ),
        AT,
    ).status
    assert fresh is not None
    assert status_mod.essence({**fresh, "podUID": final.get("podUID")}) == status_mod.essence(final)
