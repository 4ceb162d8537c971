"""The one definition of a secret request (DESIGN §2), wherever it is written.

A request comes from a TaskRun's `spec.secrets`, from a pod's `sesame.dev/secrets` annotation, or
from task code as `sesame.Secret(...)`; all three become the same `Secret` and pass the same checks,
so the SDK, the CLI, the webhook and the controller can never disagree on what a request means.
The CRD schema refuses most malformed TaskRuns already; this module checks again because pod
annotations have no schema and because the operator must never trust what it reads.

Stdlib only: it is part of the SDK (`sesame.SDK_MODULES`), shipped into task images and by
`sesame run --remote`.

The `from:` form is written `from_secret=` / `from_key=` in Python (`from` is a keyword there).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from sesame import naming


class MountRequirement(enum.Enum):
    """How a secret reaches the container; `sesame.Secret.MountType` is this same enum."""

    ENV_VAR = "ENV_VAR"
    FILE = "FILE"
    ANY = "ANY"  # = ENV_VAR


# Env var names a secret may never set, compared case-insensitively (`http_proxy` and `HTTP_PROXY`
# are both read; zsh ties `path` to `PATH`). Each one steers how programs start, whom they trust or
# where they connect, so a secret written there would hijack the task rather than inform it:
# - process basics: PATH, HOME, USER, LOGNAME, SHELL, PWD, OLDPWD, HOSTNAME, TMPDIR, IFS;
# - code loaded at start: LD_* and DYLD_* (the dynamic loader), GLIBC_TUNABLES, GCONV_PATH, LOCPATH,
#   NLSPATH, ENV and BASH_ENV, PS4, PROMPT_COMMAND, SHELLOPTS, BASHOPTS, CDPATH, GLOBIGNORE,
#   PYTHON*, NODE_OPTIONS, JAVA_TOOL_OPTIONS, _JAVA_OPTIONS, JDK_JAVA_OPTIONS, PERL5OPT, PERL5LIB,
#   RUBYOPT, RUBYLIB;
# - whom TLS trusts: SSL_CERT_*, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, NODE_EXTRA_CA_CERTS;
# - where traffic goes: HTTP_PROXY, HTTPS_PROXY, FTP_PROXY, ALL_PROXY, NO_PROXY, KUBERNETES_*;
# - Sesame's own: SESAME_* (the SDK reads its map of names there).
# `crds/taskrun.yaml` carries this exact pattern in a CEL rule (RE2 reads it the same way), so the
# API server refuses these names too; a unit test keeps the two identical.
RESERVED_ENV_VAR_PATTERN = (
    "(?i)^(PATH|HOME|USER|LOGNAME|SHELL|PWD|OLDPWD|HOSTNAME|TMPDIR|IFS"
    "|LD_.*|DYLD_.*|GLIBC_TUNABLES|GCONV_PATH|LOCPATH|NLSPATH"
    "|ENV|BASH_ENV|PS4|PROMPT_COMMAND|SHELLOPTS|BASHOPTS|CDPATH|GLOBIGNORE"
    "|PYTHON.*|NODE_OPTIONS|JAVA_TOOL_OPTIONS|_JAVA_OPTIONS|JDK_JAVA_OPTIONS|PERL5OPT|PERL5LIB"
    "|RUBYOPT|RUBYLIB"
    "|SSL_CERT_.*|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE|NODE_EXTRA_CA_CERTS"
    "|HTTP_PROXY|HTTPS_PROXY|FTP_PROXY|ALL_PROXY|NO_PROXY|KUBERNETES_.*"
    "|SESAME_.*)$"
)
_RESERVED_ENV_VAR = re.compile(RESERVED_ENV_VAR_PATTERN)


class RequestError(ValueError):
    """A request that can never be satisfied as written; the message says how to fix it."""


def env_var_problem(name: str) -> str | None:
    """Why `name` cannot be a request's `envVar`: not portable, or reserved."""
    problem = naming.env_var_problem(name)
    if problem is None and _RESERVED_ENV_VAR.fullmatch(name):
        problem = (
            f"env var name {name!r} is reserved (PATH, HOME, LD_*, PYTHON*, SESAME_*, KUBERNETES_*, "
            "proxy and TLS trust variables, … steer how the task starts and whom it trusts); "
            "choose another name"
        )
    return problem


# Field names as users write them: in spec.secrets / the annotation, and in Python.
_SPEC_FIELDS = ("key", "envVar", "mountRequirement", "from", "containers")
_PYTHON_FIELDS = {
    "key": "key",
    "envVar": "env_var",
    "mountRequirement": "mount_requirement",
    "from": "from_secret/from_key",
    "containers": "containers",
}


@dataclass(frozen=True)
class Secret:
    """One secret a task needs — `sesame.Secret(key=…)` in task code, one `spec.secrets` entry in a
    TaskRun, one element of the `sesame.dev/secrets` annotation. Checked when it is made.

    >>> Secret(key="gcp_sa", mount_requirement=Secret.MountType.FILE).to_request()
    {'key': 'gcp_sa', 'mountRequirement': 'FILE'}
    >>> Secret(key="db_password", from_secret="db-creds", from_key="password").to_request()
    {'key': 'db_password', 'from': {'secret': 'db-creds', 'key': 'password'}}

    `mount_requirement` also takes the names as strings; `ANY` means `ENV_VAR` and is stored as
    such. `containers` (any iterable of names) defaults to every container and init container.
    """

    MountType: ClassVar[type[MountRequirement]] = MountRequirement

    key: str
    env_var: str | None = None
    mount_requirement: MountRequirement = MountRequirement.ENV_VAR
    from_secret: str | None = None
    from_key: str | None = None
    containers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        mount: Any = self.mount_requirement
        if not isinstance(mount, MountRequirement):
            try:
                mount = MountRequirement(mount)
            except ValueError:
                raise RequestError(
                    f"{self._where('mountRequirement')} is {mount!r}; use ENV_VAR, FILE or ANY"
                ) from None
        object.__setattr__(self, "mount_requirement", _any_is_env(mount))
        containers: Any = self.containers
        if containers is not None and not isinstance(containers, str) and isinstance(containers, Iterable):
            object.__setattr__(self, "containers", tuple(dict.fromkeys(containers)))
        found = _problem(self.key, self.env_var, self.from_secret, self.from_key, self.containers)
        if found is not None:
            field, problem = found
            raise RequestError(f"{self._where(field)}: {problem}")

    def _where(self, field: str) -> str:
        return f"sesame.Secret(key={self.key!r}) {_PYTHON_FIELDS[field]}"

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
        """The `spec.secrets` entry, in canonical form (parse_request of it gives this request back)."""
        entry: dict[str, Any] = {"key": self.key}
        if self.env_var is not None:
            entry["envVar"] = self.env_var
        if self.mount_requirement is not MountRequirement.ENV_VAR:
            entry["mountRequirement"] = self.mount_requirement.value
        if self.from_secret is not None:
            entry["from"] = {"secret": self.from_secret, "key": self.from_key}
        if self.containers is not None:
            entry["containers"] = list(self.containers)
        return entry

    to_request = to_spec  # the SDK's name for it


SecretRequest = Secret  # the operator's name for it


def _any_is_env(mount: MountRequirement) -> MountRequirement:
    return MountRequirement.ENV_VAR if mount is MountRequirement.ANY else mount


def _problem(
    key: Any, env_var: Any, from_secret: Any, from_key: Any, containers: Any
) -> tuple[str, str] | None:
    """(spec field, why) for the first thing wrong with a request's fields, or None."""
    if not isinstance(key, str):
        return "key", "a string is required"
    if from_secret is not None or from_key is not None:
        if not isinstance(from_secret, str) or not isinstance(from_key, str):
            return "from", "needs a Secret name and a data key, both strings"
        problem = naming.object_name_problem(from_secret) or naming.data_key_problem(from_key)
        if problem:
            return "from", problem
        problem = naming.data_key_problem(key)
    else:
        problem = naming.key_problem(key)
    if problem:
        return "key", problem
    if env_var is not None:
        if not isinstance(env_var, str):
            return "envVar", "must be a string (an env var name)"
        problem = env_var_problem(env_var)
        if problem:
            return "envVar", problem
    if containers is not None and (
        not isinstance(containers, (list, tuple))
        or not containers
        or not all(isinstance(c, str) and c for c in containers)
    ):
        return "containers", "must be a non-empty list of container names"
    return None


def parse_request(raw: Any, where: str) -> Secret:
    """Check one request written as data; `where` names it in messages (e.g. `spec.secrets[2]`)."""
    if not isinstance(raw, dict):
        raise RequestError(f'{where} must be an object like {{"key": "my_secret"}}')
    unknown = sorted(set(raw) - set(_SPEC_FIELDS))
    if unknown:
        raise RequestError(f"{where} has unknown field {unknown[0]!r}; allowed: {', '.join(_SPEC_FIELDS)}")
    from_raw = raw.get("from")
    from_secret = from_key = None
    if from_raw is not None:
        if not isinstance(from_raw, dict) or set(from_raw) != {"secret", "key"}:
            raise RequestError(
                f"{where}.from needs exactly 'secret' and 'key', e.g. {{secret: db-creds, key: password}}"
            )
        from_secret, from_key = from_raw["secret"], from_raw["key"]
    found = _problem(raw.get("key"), raw.get("envVar"), from_secret, from_key, raw.get("containers"))
    if found is not None:
        field, problem = found
        raise RequestError(f"{where}.{field}: {problem}")
    mount = raw.get("mountRequirement", MountRequirement.ENV_VAR.value)
    if not isinstance(mount, str) or mount not in MountRequirement.__members__:
        raise RequestError(f"{where}.mountRequirement is {mount!r}; use ENV_VAR, FILE or ANY")
    return Secret(
        key=raw["key"],
        env_var=raw.get("envVar"),
        mount_requirement=MountRequirement(mount),
        from_secret=from_secret,
        from_key=from_key,
        containers=None if raw.get("containers") is None else tuple(raw["containers"]),
    )


def check_request_set(requests: Sequence[Secret], where: str) -> None:
    """A set of requests asks for each key once."""
    seen: dict[str, int] = {}
    for index, request in enumerate(requests):
        if request.key in seen:
            raise RequestError(
                f"{where}[{index}] requests key {request.key!r} again "
                f"(first at {where}[{seen[request.key]}]); request each key once"
            )
        seen[request.key] = index


def parse_requests(raw: Any, where: str = "spec.secrets") -> list[Secret]:
    """Check a whole list; the first problem is raised (one clear line beats a wall of text)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RequestError(f"{where} must be a list of secret requests")
    parsed = [parse_request(item, f"{where}[{index}]") for index, item in enumerate(raw)]
    check_request_set(parsed, where)
    return parsed


def parse_annotation(value: str | None) -> list[Secret]:
    """Requests from a pod's `sesame.dev/secrets` annotation (a JSON list)."""
    where = f"annotation {naming.SECRETS_ANNOTATION}"
    if value is None or not value.strip():
        raise RequestError(f'{where} is missing; set it to a JSON list like [{{"key": "my_secret"}}]')
    try:
        raw = json.loads(value)
    except json.JSONDecodeError as error:
        raise RequestError(f"{where} is not valid JSON ({error.msg} at column {error.colno})") from None
    return parse_requests(raw, where)
