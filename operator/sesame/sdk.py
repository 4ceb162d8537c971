"""What task code calls: `sesame.current_context().secrets.get(key=...)`.

Stdlib only, so it installs into any task image. It finds a secret however Sesame delivered it —
default env var, custom `envVar`, or file — and, outside a cluster, reads `SESAME_SECRET_<KEY>` or
files under `SESAME_SECRETS_DIR`, so a task runs locally unchanged.

Nothing here ever puts a secret value into an exception message or a log line.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sesame import naming


class SecretNotFoundError(KeyError):
    """The task asked for a secret that was not delivered to it."""

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0]) if self.args else "secret not found"


class SecretDeliveryError(LookupError):
    """The secret exists, but not in the form asked for (e.g. a file path of an env-var secret)."""


class Secrets:
    """The secrets of the running task, read from its environment and files.

    `environ` defaults to `os.environ`, read on every call (a rotated file is read afresh too).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    @property
    def directory(self) -> Path:
        """Where FILE secrets are: `$SESAME_SECRETS_DIR`, else `/etc/sesame/secrets`."""
        return Path(self._environ.get(naming.SECRETS_DIR_ENV) or naming.SECRETS_DIR)

    def _env_vars(self, key: str) -> list[str]:
        """Env var names that may hold `key`: the custom `envVar` (from the names-only map the
        operator sets), then the default `<prefix><KEY>` (what a local run sets)."""
        names: list[str] = []
        custom = self._environ.get(naming.ENV_VARS_ENV)
        if custom:
            try:
                mapping = json.loads(custom)
            except json.JSONDecodeError:
                mapping = None
            if isinstance(mapping, dict) and isinstance(mapping.get(key), str):
                names.append(mapping[key])
        prefix = self._environ.get(naming.ENV_PREFIX_ENV) or naming.ENV_PREFIX
        default = prefix + naming.default_env_var(key)[len(naming.ENV_PREFIX) :]
        if default not in names:
            names.append(default)
        return names

    def _from_env(self, key: str) -> tuple[str, str] | None:
        """(env var name, value) of an env-delivered secret, or None."""
        for name in self._env_vars(key):
            value = self._environ.get(name)
            if value is not None:
                return name, value
        return None

    def _file(self, key: str) -> Path | None:
        path = self.directory / key
        return path if path.is_file() else None  # follows kubelet's ..data symlinks

    @staticmethod
    def _check(key: str) -> None:
        # A key is a Secret data key; anything else could walk out of the secrets directory.
        problem = naming.data_key_problem(key)
        if problem:
            raise ValueError(f"invalid secret key: {problem}")

    def get(self, key: str) -> str:
        """The secret's value as text, however it was delivered (env var first, then file)."""
        self._check(key)
        found = self._from_env(key)
        if found is not None:
            name, value = found
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # os.environ keeps undecodable bytes as surrogates
                raise SecretDeliveryError(
                    f"secret {key!r} (env var {name}) is not UTF-8 text; read it with get_bytes({key!r})"
                ) from None
            return value
        path = self._file(key)
        if path is not None:
            try:
                # bytes then decode: read_text() would turn "\r\n" into "\n" and change the value
                return path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                raise SecretDeliveryError(
                    f"secret {key!r} is binary; read it with get_bytes({key!r}) or get_secrets_file({key!r})"
                ) from None
        raise self._missing(key, file=False)

    def get_bytes(self, key: str) -> bytes:
        """The secret's value as bytes, exactly as stored (binary files, e.g. keystores)."""
        self._check(key)
        found = self._from_env(key)
        if found is not None:
            return os.fsencode(found[1])  # undoes os.environ's surrogateescape decoding
        path = self._file(key)
        if path is not None:
            return path.read_bytes()
        raise self._missing(key, file=False)

    def get_secrets_file(self, key: str) -> str:
        """The path of a FILE-delivered secret."""
        self._check(key)
        path = self._file(key)
        if path is not None:
            return str(path)
        found = self._from_env(key)
        if found is not None:
            raise SecretDeliveryError(
                f"secret {key!r} was delivered as env var {found[0]}, not as a file; "
                "add `mountRequirement: FILE` to its spec.secrets entry to get a file"
            )
        raise self._missing(key, file=True)

    def _missing(self, key: str, file: bool) -> SecretNotFoundError:
        entry = f"{{key: {key}, mountRequirement: FILE}}" if file else f"{{key: {key}}}"
        local = f"create {self.directory / key}" if file else f"set {self._env_vars(key)[-1]}"
        return SecretNotFoundError(
            f"secret {key!r} was not delivered to this task: add `- {entry}` to the TaskRun's "
            f"spec.secrets (or to the pod's {naming.SECRETS_ANNOTATION} annotation); "
            f"when running locally, {local}"
        )


@dataclass(frozen=True)
class Context:
    secrets: Secrets


def current_context() -> Context:
    """The running task's context; reads the environment on each call, so tests can change it."""
    return Context(secrets=Secrets())


@dataclass(frozen=True)
class Secret:
    """A secret a task needs, as written in Python; renders to a `spec.secrets` entry.

    >>> Secret(key="gcp_sa", mount_requirement=Secret.MountType.FILE).to_request()
    {'key': 'gcp_sa', 'mountRequirement': 'FILE'}
    """

    class MountType(enum.Enum):
        ENV_VAR = "ENV_VAR"
        FILE = "FILE"
        ANY = "ANY"

    key: str
    env_var: str | None = None
    mount_requirement: Secret.MountType = MountType.ENV_VAR
    containers: tuple[str, ...] | None = None  # None: every container and init container

    def __post_init__(self) -> None:
        mount: Any = self.mount_requirement
        if not isinstance(mount, Secret.MountType):
            try:
                object.__setattr__(self, "mount_requirement", Secret.MountType(mount))
            except ValueError:
                raise ValueError(f"mount_requirement {mount!r} must be ENV_VAR, FILE or ANY") from None
        if self.containers is not None:
            object.__setattr__(self, "containers", tuple(self.containers))
        problem = self._problem()
        if problem:
            raise ValueError(problem)

    def _problem(self) -> str | None:
        problem = naming.key_problem(self.key)
        if problem is None and self.env_var is not None:
            problem = naming.env_var_problem(self.env_var)
        if problem is None and self.containers is not None and not (self.containers and all(self.containers)):
            problem = "containers must be a non-empty list of container names"
        return problem

    def to_request(self) -> dict[str, Any]:
        """The `spec.secrets` entry (DESIGN §2), in canonical form."""
        entry: dict[str, Any] = {"key": self.key}
        if self.env_var is not None:
            entry["envVar"] = self.env_var
        if self.mount_requirement is not Secret.MountType.ENV_VAR:
            entry["mountRequirement"] = self.mount_requirement.value
        if self.containers is not None:
            entry["containers"] = list(self.containers)
        return entry


def taskrun_manifest(
    name: str, namespace: str, pod_template: Mapping[str, Any], secrets: Sequence[Secret]
) -> dict[str, Any]:
    """A whole TaskRun manifest, for users who generate manifests in Python.

    `pod_template` is a PodTemplateSpec (`{"spec": {"containers": [...]}}`).
    """
    keys = [secret.key for secret in secrets]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"secret {duplicates[0]!r} is requested twice; request each key once")
    return {
        "apiVersion": f"{naming.API_GROUP}/{naming.API_VERSION}",
        "kind": "TaskRun",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"secrets": [secret.to_request() for secret in secrets], "template": dict(pod_template)},
    }
