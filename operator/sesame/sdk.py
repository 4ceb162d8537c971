"""What task code calls: `sesame.current_context().secrets.get(key=...)`.

Stdlib only, so it installs into any task image. It finds a secret however Sesame delivered it —
default env var, custom `envVar`, or file — and, outside a cluster, reads `SESAME_SECRET_<KEY>` or
files under `SESAME_SECRETS_DIR`, so a task runs locally unchanged.
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
        return str(self.args[0])


class SecretDeliveryError(LookupError):
    """The secret exists, but not in the form asked for (e.g. a file path of an env-var secret)."""


class Secrets:
    """The secrets of the running task, read from its environment and files."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    @property
    def directory(self) -> Path:
        return Path(self._environ.get(naming.SECRETS_DIR_ENV, naming.SECRETS_DIR))

    def _env_var(self, key: str) -> str:
        custom = self._environ.get(naming.ENV_VARS_ENV)
        if custom:
            try:
                names = json.loads(custom)
            except json.JSONDecodeError:
                names = {}
            if isinstance(names, dict) and isinstance(names.get(key), str):
                return str(names[key])
        prefix = self._environ.get(naming.ENV_PREFIX_ENV, naming.ENV_PREFIX)
        return prefix + naming.default_env_var(key)[len(naming.ENV_PREFIX) :]

    def _file(self, key: str) -> Path | None:
        if naming.data_key_problem(key):  # never let a key walk out of the secrets directory
            return None
        path = self.directory / key
        return path if path.is_file() else None

    def get(self, key: str) -> str:
        """The secret's value as text, however it was delivered."""
        env_var = self._env_var(key)
        if env_var in self._environ:
            return self._environ[env_var]
        path = self._file(key)
        if path is not None:
            try:
                return path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise SecretDeliveryError(
                    f"secret {key!r} is binary; read it with get_bytes({key!r}) or get_secrets_file({key!r})"
                ) from None
        raise self._missing(key, env_var)

    def get_bytes(self, key: str) -> bytes:
        """The secret's value as bytes (binary files, e.g. keystores)."""
        path = self._file(key)
        if path is not None:
            return path.read_bytes()
        return self.get(key).encode("utf-8")

    def get_secrets_file(self, key: str) -> str:
        """The path of a FILE-delivered secret."""
        path = self._file(key)
        if path is not None:
            return str(path)
        env_var = self._env_var(key)
        if env_var in self._environ:
            raise SecretDeliveryError(
                f"secret {key!r} was delivered as env var {env_var}, not as a file; "
                f"add `mountRequirement: FILE` to its spec.secrets entry to get a file"
            )
        raise self._missing(key, env_var)

    def _missing(self, key: str, env_var: str) -> SecretNotFoundError:
        return SecretNotFoundError(
            f"secret {key!r} was not delivered to this task: add `- key: {key}` to the TaskRun's "
            f"spec.secrets (or to the pod's {naming.SECRETS_ANNOTATION} annotation); "
            f"when running locally, set {env_var} or create {self.directory / key}"
        )


@dataclass(frozen=True)
class Context:
    secrets: Secrets


def current_context() -> Context:
    """The running task's context; reads the environment on each call, so tests can change it."""
    return Context(secrets=Secrets())


@dataclass(frozen=True)
class Secret:
    """A secret a task needs, as written in Python; renders to a `spec.secrets` entry."""

    class MountType(enum.Enum):
        ENV_VAR = "ENV_VAR"
        FILE = "FILE"
        ANY = "ANY"

    key: str
    env_var: str | None = None
    mount_requirement: Secret.MountType = MountType.ENV_VAR

    def to_request(self) -> dict[str, Any]:
        problem = naming.key_problem(self.key) or (self.env_var and naming.env_var_problem(self.env_var))
        if problem:
            raise ValueError(problem)
        entry: dict[str, Any] = {"key": self.key}
        if self.env_var:
            entry["envVar"] = self.env_var
        if self.mount_requirement is not Secret.MountType.ENV_VAR:
            entry["mountRequirement"] = self.mount_requirement.value
        return entry


def taskrun_manifest(
    name: str, namespace: str, pod_template: Mapping[str, Any], secrets: Sequence[Secret]
) -> dict[str, Any]:
    """A whole TaskRun manifest, for users who generate manifests in Python."""
    return {
        "apiVersion": f"{naming.API_GROUP}/{naming.API_VERSION}",
        "kind": "TaskRun",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"secrets": [secret.to_request() for secret in secrets], "template": dict(pod_template)},
    }
