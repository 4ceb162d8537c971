"""Parse and check secret requests, from a TaskRun's `spec.secrets` or a pod's annotation.

The CRD schema already refuses most malformed TaskRuns; this module checks again because pod
annotations have no schema and because the operator must never trust what it reads.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sesame import naming


class MountRequirement(enum.Enum):
    """How a secret reaches the container; the names the SDK's `Secret.MountType` uses."""

    ENV_VAR = "ENV_VAR"
    FILE = "FILE"
    ANY = "ANY"  # = ENV_VAR


@dataclass(frozen=True)
class SecretRequest:
    """One entry of `spec.secrets`, checked."""

    key: str
    env_var: str | None = None
    mount_requirement: MountRequirement = MountRequirement.ENV_VAR
    from_secret: str | None = None
    from_key: str | None = None
    containers: tuple[str, ...] | None = None  # None: every container and init container

    @property
    def is_file(self) -> bool:
        return self.mount_requirement is MountRequirement.FILE

    @property
    def secret_name(self) -> str:
        """The Secret object in the pod's namespace that holds the value."""
        return self.from_secret if self.from_secret else naming.secret_object_name(self.key)

    @property
    def data_key(self) -> str:
        return self.from_key if self.from_key else self.key

    @property
    def env_var_name(self) -> str | None:
        """The env var this request sets: the value (ENV_VAR) or the file's path (FILE + envVar)."""
        if self.is_file:
            return self.env_var
        return self.env_var or naming.default_env_var(self.key)

    def to_spec(self) -> dict[str, Any]:
        """The `spec.secrets` entry this request came from, in canonical form."""
        entry: dict[str, Any] = {"key": self.key}
        if self.env_var:
            entry["envVar"] = self.env_var
        if self.mount_requirement is not MountRequirement.ENV_VAR:
            entry["mountRequirement"] = self.mount_requirement.value
        if self.from_secret:
            entry["from"] = {"secret": self.from_secret, "key": self.from_key}
        if self.containers is not None:
            entry["containers"] = list(self.containers)
        return entry


class RequestError(ValueError):
    """A request that can never be satisfied as written; the message says how to fix it."""


_FIELDS = {"key", "envVar", "mountRequirement", "from", "containers"}
_FROM_FIELDS = {"secret", "key"}


def parse_request(raw: Any, where: str) -> SecretRequest:
    """Check one request; `where` names it in messages (e.g. `spec.secrets[2]`)."""
    if not isinstance(raw, dict):
        raise RequestError(f'{where} must be an object like {{"key": "my_secret"}}')
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise RequestError(
            f"{where} has unknown field {unknown[0]!r}; "
            "allowed: key, envVar, mountRequirement, from, containers"
        )
    key = raw.get("key")
    if not isinstance(key, str):
        raise RequestError(f"{where}.key is required and must be a string")
    from_raw = raw.get("from")
    from_secret = from_key = None
    if from_raw is not None:
        if not isinstance(from_raw, dict) or set(from_raw) != _FROM_FIELDS:
            raise RequestError(
                f"{where}.from needs exactly 'secret' and 'key', e.g. {{secret: db-creds, key: password}}"
            )
        from_secret, from_key = from_raw["secret"], from_raw["key"]
        if not isinstance(from_secret, str) or not isinstance(from_key, str):
            raise RequestError(f"{where}.from.secret and {where}.from.key must be strings")
        problem = naming.object_name_problem(from_secret) or naming.data_key_problem(from_key)
        if problem:
            raise RequestError(f"{where}.from: {problem}")
        problem = naming.data_key_problem(key)
    else:
        problem = naming.key_problem(key)
    if problem:
        raise RequestError(f"{where}.key: {problem}")

    mount_raw = raw.get("mountRequirement", "ENV_VAR")
    try:
        mount = MountRequirement(mount_raw)
    except ValueError:
        raise RequestError(f"{where}.mountRequirement is {mount_raw!r}; use ENV_VAR, FILE or ANY") from None
    if mount is MountRequirement.ANY:
        mount = MountRequirement.ENV_VAR

    env_var = raw.get("envVar")
    if env_var is not None:
        if not isinstance(env_var, str):
            raise RequestError(f"{where}.envVar must be a string")
        problem = naming.env_var_problem(env_var)
        if problem:
            raise RequestError(f"{where}.envVar: {problem}")

    containers_raw = raw.get("containers")
    containers: tuple[str, ...] | None = None
    if containers_raw is not None:
        if (
            not isinstance(containers_raw, list)
            or not containers_raw
            or not all(isinstance(c, str) and c for c in containers_raw)
        ):
            raise RequestError(f"{where}.containers must be a non-empty list of container names")
        containers = tuple(dict.fromkeys(containers_raw))

    return SecretRequest(
        key=key,
        env_var=env_var,
        mount_requirement=mount,
        from_secret=from_secret,
        from_key=from_key,
        containers=containers,
    )


def parse_requests(raw: Any, where: str = "spec.secrets") -> list[SecretRequest]:
    """Check a whole list; the first problem is raised (one clear line beats a wall of text)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RequestError(f"{where} must be a list of secret requests")
    parsed = [parse_request(item, f"{where}[{index}]") for index, item in enumerate(raw)]
    seen: dict[str, int] = {}
    for index, request in enumerate(parsed):
        if request.key in seen:
            raise RequestError(
                f"{where}[{index}] requests key {request.key!r} again "
                f"(first at {where}[{seen[request.key]}]); request each key once"
            )
        seen[request.key] = index
    return parsed


def parse_annotation(value: str | None) -> list[SecretRequest]:
    """Requests from a pod's `sesame.dev/secrets` annotation (a JSON list)."""
    where = f"annotation {naming.SECRETS_ANNOTATION}"
    if value is None or not value.strip():
        raise RequestError(f'{where} is missing; set it to a JSON list like [{{"key": "my_secret"}}]')
    try:
        raw = json.loads(value)
    except json.JSONDecodeError as error:
        raise RequestError(f"{where} is not valid JSON ({error.msg} at column {error.colno})") from None
    return parse_requests(raw, where)


def render_requests(requests: Sequence[SecretRequest]) -> list[dict[str, Any]]:
    return [request.to_spec() for request in requests]
