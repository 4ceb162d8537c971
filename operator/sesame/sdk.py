"""What task code calls: `sesame.current_context().secrets.get(key=...)`.

Stdlib only, so it installs into any task image. Nothing here ever puts a secret value into an
exception message or a log line.

Where a key is looked for depends on where the task runs, and never involves guessing:

- In a pod Sesame completed, the operator sets `SESAME_SECRETS_ENV_VARS` (a JSON object
  {key: env var name}, names only) in every container that received a secret; its presence, even as
  `{}`, is how the SDK knows it runs in such a pod. There an env-delivered key is read only from the
  variable that map names, and a FILE key only from `$SESAME_SECRETS_DIR/<key>` (the exact key).
  A key the map does not list is not there — even if another key's default variable looks like it
  (`my.secret` and `my_secret` share `SESAME_SECRET_MY_SECRET`; only the requested one is returned).
- Anywhere else (a laptop, a test, plain `python task.py`), key K is read from exactly one
  variable, `$SESAME_SECRETS_ENV_PREFIX` (default `SESAME_SECRET_`) + K upper-cased with every
  character outside A-Z0-9_ turned into `_`, else from the file `$SESAME_SECRETS_DIR/K` (default
  `/etc/sesame/secrets`). `sesame run` (local) writes the map itself from the task's
  `secret_requests`, so a task run locally finds exactly what it would find in its pod.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sesame import naming
from sesame.requests import Secret, check_request_set


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

    @property
    def in_pod(self) -> bool:
        """True in a container Sesame delivered secrets to: the operator wrote the names map there."""
        return naming.ENV_VARS_ENV in self._environ

    def _names_map(self) -> dict[str, str]:
        raw = self._environ.get(naming.ENV_VARS_ENV, "")
        try:
            mapping: Any = json.loads(raw)
        except json.JSONDecodeError:
            mapping = None
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise SecretDeliveryError(
                f"{naming.ENV_VARS_ENV} is not a JSON object of env var names; the Sesame operator "
                "writes it, so do not set it in the pod template"
            )
        return mapping

    def env_var(self, key: str) -> str | None:
        """The env var that holds `key` here (see the module docstring), or None in a pod that did
        not receive `key` as an env var."""
        if self.in_pod:
            return self._names_map().get(key)
        prefix = self._environ.get(naming.ENV_PREFIX_ENV) or naming.ENV_PREFIX
        return prefix + naming.default_env_var(key)[len(naming.ENV_PREFIX) :]

    def delivered_keys(self) -> list[str]:
        """In a pod: every key delivered to this container (the names map, then the files).
        Outside one there is no list to read, so: only the files under the secrets directory."""
        keys = set(self._names_map()) if self.in_pod else set()
        with contextlib.suppress(OSError):  # no directory: no files
            # kubelet keeps its own `..data` and `..<timestamp>` entries there; no key starts with `..`
            keys |= {entry.name for entry in self.directory.iterdir() if not entry.name.startswith("..")}
        return sorted(keys)

    def _from_env(self, key: str) -> tuple[str, str] | None:
        """(env var name, value) of an env-delivered secret, or None."""
        name = self.env_var(key)
        value = None if name is None else self._environ.get(name)
        return None if name is None or value is None else (name, value)

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
                "to get a file, request it with `mountRequirement: FILE` (in Python: "
                "mount_requirement=sesame.Secret.MountType.FILE)"
            )
        raise self._missing(key, file=True)

    def _missing(self, key: str, file: bool) -> SecretNotFoundError:
        mount = ", mount_requirement=sesame.Secret.MountType.FILE" if file else ""
        entry = f"{{key: {key}, mountRequirement: FILE}}" if file else f"{{key: {key}}}"
        message = (
            f"secret {key!r} was not delivered to this task: add `sesame.Secret(key={key!r}{mount})` to "
            f"its secret_requests, or `- {entry}` to the TaskRun's spec.secrets (or to the pod's "
            f"{naming.SECRETS_ANNOTATION} annotation)"
        )
        if not self.in_pod:
            local = f"create {self.directory / key}" if file else f"set {self.env_var(key)}"
            message += f"; when running locally, {local}"
        return SecretNotFoundError(message)


@dataclass(frozen=True)
class Context:
    secrets: Secrets


def current_context() -> Context:
    """The running task's context; reads the environment on each call, so tests can change it."""
    return Context(secrets=Secrets())


def taskrun_manifest(
    name: str, namespace: str, pod_template: Mapping[str, Any], secrets: Sequence[Secret]
) -> dict[str, Any]:
    """A whole TaskRun manifest, for users who generate manifests in Python.

    `pod_template` is a PodTemplateSpec (`{"spec": {"containers": [...]}}`).
    """
    check_request_set(secrets, "secrets")
    return {
        "apiVersion": f"{naming.API_GROUP}/{naming.API_VERSION}",
        "kind": "TaskRun",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"secrets": [secret.to_request() for secret in secrets], "template": dict(pod_template)},
    }
