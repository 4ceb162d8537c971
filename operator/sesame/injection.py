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
    ENV_VAR_CLASH = "EnvVarClash"
    UNKNOWN_CONTAINER = "UnknownContainer"
    MOUNT_PATH_CLASH = "MountPathClash"
    INVALID_REQUEST = "InvalidRequest"
    DIRECT_SECRET_REFERENCE = "DirectSecretReference"


@dataclass(frozen=True)
class Problem:
    reason: Reason
    message: str
    secret: str | None = None  # the Secret object whose arrival may fix it
    key: str | None = None  # the request it is about


def summarize(problems: Sequence[Problem]) -> str:
    """One line for a condition or event: the first problem in full, the others by key."""
    first, rest = problems[0], problems[1:]
    if not rest:
        return first.message
    others = ", ".join(dict.fromkeys(p.key or p.reason.value for p in rest))
    return f"{first.message} (and {len(rest)} more: {others})"


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


Inventory = Mapping[str, frozenset[str]]
"""Secret object name → its data keys, for one namespace. Names only."""


def fix_hint(request: SecretRequest, namespace: str) -> str:
    """The command or change that makes a missing secret appear."""
    if request.from_secret:
        return (
            f"create Secret {request.from_secret!r} with data key {request.data_key!r} in namespace "
            f"{namespace!r} (or fix the request's 'from')"
        )
    return f"run `sesame create secret --namespace {namespace} {request.key}`"


def check_inventory(requests: Sequence[SecretRequest], inventory: Inventory, namespace: str) -> list[Problem]:
    """Problems of requests whose Secret or data key does not exist in the namespace."""
    problems = []
    for request in requests:
        keys = inventory.get(request.secret_name)
        if keys is None:
            problems.append(
                Problem(
                    Reason.SECRET_NOT_FOUND,
                    f"secret {request.key!r} not found: no Secret {request.secret_name!r} in namespace "
                    f"{namespace!r}; {fix_hint(request, namespace)}",
                    request.secret_name,
                    request.key,
                )
            )
        elif request.data_key not in keys:
            problems.append(
                Problem(
                    Reason.KEY_NOT_FOUND,
                    f"secret {request.key!r}: Secret {request.secret_name!r} in namespace {namespace!r} "
                    f"has no data key {request.data_key!r}; {fix_hint(request, namespace)}",
                    request.secret_name,
                    request.key,
                )
            )
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

    # Env vars: per container, one owner per name; the container's own env wins and is a clash.
    env_owner: dict[tuple[str, str], str] = {}
    for request in requests:
        name = request.env_var_name
        if name is None:
            continue
        for target in _targets(request, names):
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

    deliveries: list[Delivery] = []
    env_names: dict[str, dict[str, str]] = {n: {} for n in names}
    files: dict[str, list[SecretRequest]] = {n: [] for n in names}
    for request in requests:
        targets = _targets(request, names)
        if request.is_file:
            deliveries.append(
                Delivery(request.key, "file", request.env_var, naming.secret_file_path(request.key))
            )
            for target in targets:
                files[target].append(request)
        else:
            env_var = request.env_var_name
            assert env_var is not None
            deliveries.append(Delivery(request.key, "env", env_var))
            for target in targets:
                env_names[target][request.key] = env_var

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
    return InjectionResult(spec, [], deliveries)


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
