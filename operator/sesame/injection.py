"""The pure heart of Sesame: (pod spec, requests, what exists) → mutated pod spec, or problems.

No Kopf, no client, no I/O. The inventory holds names and data keys of Secrets only — never
values — and every result holds references (`secretKeyRef`, projected volume items), never values.
Injecting an already-injected spec changes nothing, so the controller and the webhook can both
call this without coordinating.
"""

from __future__ import annotations

import copy
import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sesame import naming
from sesame.requests import SecretRequest

VOLUME_NAME = "sesame-secrets"
# Owner and group may read; nobody else. The group is the pod's fsGroup when it sets one.
FILE_MODE = 0o440


class Reason(enum.Enum):
    """Why a request cannot be met; used as the `SecretsReady` condition reason."""

    SECRET_NOT_FOUND = "SecretNotFound"
    KEY_NOT_FOUND = "KeyNotFound"
    SECRET_NOT_USABLE = "SecretNotUsable"
    ENV_VAR_CLASH = "EnvVarClash"
    UNKNOWN_CONTAINER = "UnknownContainer"
    MOUNT_PATH_CLASH = "MountPathClash"
    INVALID_REQUEST = "InvalidRequest"
    DIRECT_SECRET_REFERENCE = "DirectSecretReference"

    @property
    def waits(self) -> bool:
        """True when a change to the namespace's Secrets can fix it; otherwise only a new spec can
        (and a TaskRun's spec is immutable: that run can never start)."""
        return self in _WAITING


_WAITING = frozenset({Reason.SECRET_NOT_FOUND, Reason.KEY_NOT_FOUND, Reason.SECRET_NOT_USABLE})


@dataclass(frozen=True)
class Problem:
    reason: Reason
    message: str
    secret: str | None = None  # the Secret object whose arrival or change may fix it
    key: str | None = None  # the request it is about


def summarize(problems: Sequence[Problem]) -> str:
    """One line for a condition or event that names every problem."""
    if len(problems) == 1:
        return problems[0].message
    numbered = " ".join(f"[{index}] {problem.message}" for index, problem in enumerate(problems, 1))
    return f"{len(problems)} problems: {numbered}"


@dataclass(frozen=True)
class Delivery:
    """Names and delivery of one request, for `status.secrets` and the injected annotation."""

    key: str
    delivery: str  # "env" or "file"
    env_var: str | None = None
    path: str | None = None

    def to_status(self) -> dict[str, str]:
        entry = {"key": self.key, "delivery": self.delivery}
        if self.env_var:
            entry["envVar"] = self.env_var
        if self.path:
            entry["path"] = self.path
        return entry


@dataclass
class InjectionResult:
    pod_spec: dict[str, Any] | None
    problems: list[Problem] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# Secret types that hold cluster machinery, never a task's credential: no label opts them in.
NEVER_DELIVERED_TYPES = {
    "kubernetes.io/service-account-token": "a ServiceAccount token",
    "bootstrap.kubernetes.io/token": "a bootstrap token",
    "helm.sh/release.v1": "a Helm release record",
}


@dataclass(frozen=True)
class SecretFacts:
    """What Sesame knows of one Secret: names only, never a value."""

    keys: frozenset[str]
    managed: bool = True  # labelled app.kubernetes.io/managed-by=sesame (made by `sesame create secret`)
    opted_in: bool = False  # labelled sesame.dev/usable=true by its owner
    type: str = "Opaque"
    sesame_key: str | None = None  # the `sesame.dev/key` annotation of a Sesame-made Secret

    @staticmethod
    def of(secret: Mapping[str, Any]) -> SecretFacts:
        """From a Secret object (a watch-event body or a read): its data is dropped right here."""
        meta = secret.get("metadata") or {}
        labels = meta.get("labels") or {}
        return SecretFacts(
            keys=frozenset((secret.get("data") or {}).keys()),
            managed=labels.get(naming.MANAGED_BY_LABEL) == naming.MANAGED_BY_VALUE,
            opted_in=labels.get(naming.USABLE_LABEL) == naming.USABLE_VALUE,
            type=str(secret.get("type") or "Opaque"),
            sesame_key=(meta.get("annotations") or {}).get(naming.KEY_ANNOTATION),
        )

    @property
    def usable(self) -> bool:
        return self.type not in NEVER_DELIVERED_TYPES and (self.managed or self.opted_in)


Inventory = Mapping[str, SecretFacts]
"""Secret object name → what is known of it, for one namespace. Names only."""


def _in_default_namespace(namespace: str) -> str:
    if namespace != "default":
        return ""
    return (
        " (this runs in namespace 'default': secrets stored with --project/--domain live in that "
        "project's namespace, e.g. my-project-development — create the TaskRun there)"
    )


def fix_hint(request: SecretRequest, namespace: str) -> str:
    """The command or change that makes a missing secret appear."""
    if request.from_secret:
        return (
            f"create Secret {request.from_secret!r} with data key {request.data_key!r} in namespace "
            f"{namespace!r} (or fix the request's 'from')"
        )
    return f"run `sesame create secret --namespace {namespace} {request.key}`"


def _problem(request: SecretRequest, facts: SecretFacts | None, namespace: str) -> Problem | None:
    name, where = request.secret_name, f"in namespace {namespace!r}"
    if facts is None:
        message = (
            f"secret {request.key!r} not found: no Secret {name!r} {where}; {fix_hint(request, namespace)}"
        )
        return Problem(Reason.SECRET_NOT_FOUND, message + _in_default_namespace(namespace), name, request.key)
    if facts.type in NEVER_DELIVERED_TYPES:
        message = (
            f"secret {request.key!r}: Secret {name!r} {where} is {NEVER_DELIVERED_TYPES[facts.type]} "
            f"(type {facts.type}), which Sesame never delivers to a task; request another Secret"
        )
        return Problem(Reason.SECRET_NOT_USABLE, message, name, request.key)
    if not facts.usable:
        message = (
            f"secret {request.key!r}: Secret {name!r} {where} was not made by Sesame and its owner has not "
            f"opted it in; to let tasks of this namespace use it, label it: "
            f"kubectl label secret -n {namespace} {name} {naming.USABLE_LABEL}={naming.USABLE_VALUE}"
        )
        return Problem(Reason.SECRET_NOT_USABLE, message, name, request.key)
    if request.data_key in facts.keys:
        return None
    if request.from_secret:
        message = (
            f"secret {request.key!r}: Secret {name!r} {where} has no data key {request.data_key!r} "
            f"(it has: {', '.join(sorted(facts.keys)) or 'none'}); add that key to the Secret, or fix "
            "the request's 'from'"
        )
    elif facts.managed and facts.sesame_key and facts.sesame_key != request.key:
        message = (
            f"secret {request.key!r} not found: Secret {name!r} {where} holds the secret "
            f"{facts.sesame_key!r} (keys are case-sensitive); request key {facts.sesame_key!r} instead, "
            f"or `sesame delete secret --namespace {namespace} {facts.sesame_key}` and create {request.key!r}"
        )
    else:
        message = (
            f"secret {request.key!r}: Secret {name!r} {where} has no data key {request.data_key!r}; "
            f"store it again with `sesame update secret --namespace {namespace} {request.key}`"
        )
    return Problem(Reason.KEY_NOT_FOUND, message, name, request.key)


def check_inventory(requests: Sequence[SecretRequest], inventory: Inventory, namespace: str) -> list[Problem]:
    """Problems of requests whose Secret or data key is missing, or whose Secret may not be used."""
    problems = []
    for request in requests:
        problem = _problem(request, inventory.get(request.secret_name), namespace)
        if problem is not None:
            problems.append(problem)
    return problems


def _containers(pod_spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(list field, container) for every init container and container, in a stable order."""
    return [
        (field_name, container)
        for field_name in ("initContainers", "containers")
        for container in pod_spec.get(field_name) or []
    ]


_PLUGIN_SECRET_FIELDS = frozenset(
    {"secretRef", "secretName", "nodePublishSecretRef", "controllerPublishSecretRef", "nodeStageSecretRef"}
)


def direct_secret_references(pod_spec: Mapping[str, Any]) -> list[Problem]:
    """Secrets a TaskRun's template reaches by itself, bypassing `spec.secrets`.

    The operator creates TaskRun pods with its own rights, so a template that names Secrets
    directly would let anyone who may create a TaskRun read any Secret of the namespace.
    """
    found: list[str] = []
    for _, container in _containers(pod_spec):
        name = container.get("name", "?")
        for env in container.get("env") or []:
            if (env.get("valueFrom") or {}).get("secretKeyRef"):
                found.append(f"container {name!r} env {env.get('name')!r} uses secretKeyRef")
        for source in container.get("envFrom") or []:
            if source.get("secretRef"):
                found.append(f"container {name!r} envFrom uses secretRef")
    for volume in pod_spec.get("volumes") or []:
        if volume.get("secret"):
            found.append(f"volume {volume.get('name')!r} is a secret volume")
        for source in (volume.get("projected") or {}).get("sources") or []:
            if source.get("secret"):
                found.append(f"volume {volume.get('name')!r} projects a Secret")
        # Volume plugins that are handed a Secret (csi nodePublishSecretRef, azureFile secretName,
        # cephfs/rbd/iscsi/flexVolume/cinder/scaleIO/storageos secretRef) use it for the pod too.
        for plugin, config in volume.items():
            if plugin not in ("name", "secret", "projected") and isinstance(config, Mapping):
                for field_name in sorted(_PLUGIN_SECRET_FIELDS & set(config)):
                    found.append(f"volume {volume.get('name')!r} gives {plugin} a Secret ({field_name})")
    return [
        Problem(
            Reason.DIRECT_SECRET_REFERENCE,
            f"the pod template references a Secret directly ({what}); request it in spec.secrets instead",
        )
        for what in found
    ]


def _env_entries(request: SecretRequest) -> dict[str, Any] | None:
    name = request.env_var_name
    if name is None:
        return None
    if request.is_file:
        return {"name": name, "value": naming.secret_file_path(request.key)}
    return {
        "name": name,
        "valueFrom": {
            "secretKeyRef": {"name": request.secret_name, "key": request.data_key, "optional": False}
        },
    }


def _targets(request: SecretRequest, names: list[str]) -> list[str]:
    return list(request.containers) if request.containers is not None else names


def _upsert(items: list[dict[str, Any]], entry: dict[str, Any], key: str) -> bool:
    """Append `entry` unless an equal one is there; False when a different one holds the name."""
    for existing in items:
        if existing.get(key) == entry[key]:
            return existing == entry
    items.append(entry)
    return True


def inject(
    pod_spec: Mapping[str, Any],
    requests: Sequence[SecretRequest],
    inventory: Inventory,
    namespace: str,
) -> InjectionResult:
    """Return the pod spec with every request delivered, or the problems that stop it."""
    problems = check_inventory(requests, inventory, namespace)
    spec = copy.deepcopy(dict(pod_spec))
    containers = _containers(spec)
    names = [container.get("name", "") for _, container in containers]
    by_name = {container.get("name", ""): container for _, container in containers}

    for request in requests:
        for target in _targets(request, names):
            if target not in by_name:
                problems.append(
                    Problem(
                        Reason.UNKNOWN_CONTAINER,
                        f"secret {request.key!r} names container {target!r}, which the pod does not have "
                        f"(it has: {', '.join(names) or 'none'})",
                        key=request.key,
                    )
                )

    # Env vars: per container, one owner per name; the container's own env wins and is a clash
    # (found here, with every other problem, not only once the Secrets exist).
    env_owner: dict[tuple[str, str], str] = {}
    own_env = {n: {e.get("name"): e for e in (c.get("env") or [])} for n, c in by_name.items()}
    for request in requests:
        name = request.env_var_name
        if name is None:
            continue
        for target in _targets(request, names):
            own = own_env.get(target, {})
            if name in own and own[name] != _env_entries(request):
                problems.append(
                    Problem(
                        Reason.ENV_VAR_CLASH,
                        f"container {target!r} already sets env var {name!r}; "
                        "remove it or choose another envVar",
                        key=request.key,
                    )
                )
                continue
            previous = env_owner.setdefault((target, name), request.key)
            if previous != request.key:
                problems.append(
                    Problem(
                        Reason.ENV_VAR_CLASH,
                        f"secrets {previous!r} and {request.key!r} both set env var {name!r} in container "
                        f"{target!r}; give one of them a different envVar",
                        key=request.key,
                    )
                )

    if problems:
        return InjectionResult(None, problems)

    env_names: dict[str, dict[str, str]] = {n: {} for n in names}
    files: dict[str, list[SecretRequest]] = {n: [] for n in names}
    for request in requests:
        for target in _targets(request, names):
            if request.is_file:
                files[target].append(request)
            else:
                env_names[target][request.key] = str(request.env_var_name)

    # One projected volume per distinct set of files, so a container sees only the files it asked for.
    volume_for: dict[tuple[str, ...], str] = {}
    volumes = spec.setdefault("volumes", [])
    for target in names:
        keys = tuple(r.key for r in files[target])
        if keys and keys not in volume_for:
            volume_name = VOLUME_NAME if not volume_for else f"{VOLUME_NAME}-{len(volume_for)}"
            volume_for[keys] = volume_name
            volume = _projected_volume(volume_name, files[target])
            if not _upsert(volumes, volume, "name"):
                problems.append(
                    Problem(
                        Reason.MOUNT_PATH_CLASH,
                        f"the pod already has a volume named {volume_name!r}; Sesame needs that name",
                    )
                )
    if not volumes:
        del spec["volumes"]

    for target in names:
        container = by_name[target]
        if not env_names[target] and not files[target]:
            continue
        env = container.setdefault("env", [])
        wanted = [_env_entries(r) for r in requests if target in _targets(r, names)]
        wanted += [
            {"name": naming.SECRETS_DIR_ENV, "value": naming.SECRETS_DIR},
            {"name": naming.ENV_PREFIX_ENV, "value": naming.ENV_PREFIX},
            {"name": naming.ENV_VARS_ENV, "value": json.dumps(env_names[target], sort_keys=True)},
        ]
        for entry in wanted:
            if entry is not None and not _upsert(env, entry, "name"):
                problems.append(
                    Problem(
                        Reason.ENV_VAR_CLASH,
                        f"container {target!r} already sets env var {entry['name']!r}; "
                        "remove it or choose another envVar",
                    )
                )
        keys = tuple(r.key for r in files[target])
        if keys:
            mount = {"name": volume_for[keys], "mountPath": naming.SECRETS_DIR, "readOnly": True}
            mounts = container.setdefault("volumeMounts", [])
            if not _upsert(mounts, mount, "mountPath"):
                problems.append(
                    Problem(
                        Reason.MOUNT_PATH_CLASH,
                        f"container {target!r} already mounts something at {naming.SECRETS_DIR}; "
                        "remove that mount",
                    )
                )

    if volume_for:
        _let_user_read_files(spec)
    if problems:
        return InjectionResult(None, problems)
    return InjectionResult(spec, [], deliveries(requests))


def deliveries(requests: Sequence[SecretRequest]) -> list[Delivery]:
    """How each request reaches the task (names and paths only): what `status.secrets` lists."""
    return [
        Delivery(request.key, "file", request.env_var, naming.secret_file_path(request.key))
        if request.is_file
        else Delivery(request.key, "env", request.env_var_name)
        for request in requests
    ]


def _projected_volume(name: str, requests: Sequence[SecretRequest]) -> dict[str, Any]:
    by_secret: dict[str, list[dict[str, Any]]] = {}
    for request in requests:
        by_secret.setdefault(request.secret_name, []).append(
            {"key": request.data_key, "path": request.key, "mode": FILE_MODE}
        )
    return {
        "name": name,
        "projected": {
            "defaultMode": FILE_MODE,
            "sources": [
                {"secret": {"name": secret, "items": items, "optional": False}}
                for secret, items in by_secret.items()
            ],
        },
    }


def _let_user_read_files(spec: dict[str, Any]) -> None:
    """A pod that runs as a non-root user without fsGroup could not read 0440 root-owned files:
    give the files that user's group (fsGroup = runAsGroup, else runAsUser)."""
    context = spec.get("securityContext") or {}
    user = context.get("runAsUser")
    if user and "fsGroup" not in context:
        spec["securityContext"] = {**context, "fsGroup": context.get("runAsGroup", user)}


def injected_annotation(deliveries: Sequence[Delivery]) -> str:
    """The `sesame.dev/injected` annotation: which keys were delivered how (names only)."""
    return json.dumps([d.to_status() for d in deliveries], sort_keys=True, separators=(",", ":"))
