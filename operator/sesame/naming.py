"""How Sesame names things in Kubernetes.

Stdlib only: the SDK, the CLI and the operator all import this module, so a key is spelled the
same way everywhere (object name, env var, file path, namespace).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

API_GROUP = "sesame.dev"
API_VERSION = "v1alpha1"
TASKRUN_PLURAL = "taskruns"

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "sesame"
KEY_ANNOTATION = f"{API_GROUP}/key"
TASKRUN_LABEL = f"{API_GROUP}/taskrun"
INJECT_LABEL = f"{API_GROUP}/inject"
SECRETS_ANNOTATION = f"{API_GROUP}/secrets"
INJECTED_ANNOTATION = f"{API_GROUP}/injected"
# On a Secret Sesame did not create: its owner lets Sesame deliver it to tasks of its namespace.
USABLE_LABEL = f"{API_GROUP}/usable"
USABLE_VALUE = "true"

SECRETS_DIR = "/etc/sesame/secrets"
ENV_PREFIX = "SESAME_SECRET_"
SECRETS_DIR_ENV = "SESAME_SECRETS_DIR"
ENV_PREFIX_ENV = "SESAME_SECRETS_ENV_PREFIX"
# JSON object {key: env var name} for env-delivered secrets: names only, so the SDK finds custom envVars.
ENV_VARS_ENV = "SESAME_SECRETS_ENV_VARS"

DEFAULT_NAMESPACE_TEMPLATE = "{project}-{domain}"
NAMESPACE_TEMPLATE_ENV = "SESAME_NAMESPACE_TEMPLATE"

MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63
MAX_SECRET_BYTES = 1024 * 1024

# Always used with fullmatch: `$` would also match before a trailing newline ("a\n" passed).
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NOT_ENV_CHAR = re.compile(r"[^A-Z0-9_]")


class NamingError(ValueError):
    """A name that Kubernetes (or Sesame's portable subset of it) would refuse."""


def key_problem(key: str) -> str | None:
    """Why `key` cannot be a Sesame secret key, or None when it can."""
    if not key:
        return "a secret key must not be empty"
    if len(key) > MAX_NAME_LENGTH:
        return f"secret key {key[:40]!r}… is {len(key)} characters; at most {MAX_NAME_LENGTH} are allowed"
    if not _DATA_KEY.fullmatch(key) or key.startswith(".."):
        return (
            f"secret key {key!r} may only contain letters, digits, '-', '_' and '.', "
            "and must not start with '..'"
        )
    if not _DNS_SUBDOMAIN.fullmatch(_object_name(key)):
        return (
            f"secret key {key!r} must start and end with a letter or digit "
            "(and not put '.' next to '.', '-' or '_'), so it maps to a valid Secret name"
        )
    return None


def data_key_problem(key: str) -> str | None:
    """Why `key` cannot be a data key of a Secret, or None when it can."""
    if not key or len(key) > MAX_NAME_LENGTH or not _DATA_KEY.fullmatch(key) or key.startswith(".."):
        return f"{key!r} is not a valid Secret data key (letters, digits, '-', '_', '.'; at most 253)"
    return None


def _object_name(key: str) -> str:
    return key.lower().replace("_", "-")


def secret_object_name(key: str) -> str:
    """The Secret object that holds `key`: lower-case, `_` → `-` (so MY_KEY and my-key share one)."""
    problem = key_problem(key)
    if problem:
        raise NamingError(problem)
    return _object_name(key)


def object_name_problem(name: str) -> str | None:
    """Why `name` is not a valid Secret object name (DNS subdomain), or None."""
    if not name or len(name) > MAX_NAME_LENGTH or not _DNS_SUBDOMAIN.fullmatch(name):
        return (
            f"{name!r} is not a valid Secret name (lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit, at most 253)"
        )
    return None


def default_env_var(key: str) -> str:
    """`SESAME_SECRET_<KEY>`: upper-case, every character outside A-Z0-9_ becomes `_`."""
    return ENV_PREFIX + _NOT_ENV_CHAR.sub("_", key.upper())


def env_var_problem(name: str) -> str | None:
    """Why `name` is not a portable environment variable name, or None."""
    if not _ENV_VAR.fullmatch(name):
        return (
            f"env var name {name!r} must start with a letter or '_' and contain only letters, digits and '_'"
        )
    return None


def clashing_key(key: str, stored: Iterable[str]) -> tuple[str, str] | None:
    """The stored key that `key` cannot coexist with (they map to one Secret name or one default
    env var name, e.g. `my_secret` and `my.secret`), and the name they share; None when `key` is
    free. The same key again is not a clash: it is the same secret. One key, one secret."""
    name, env = _object_name(key), default_env_var(key)
    for other in sorted(stored):
        if other == key:
            continue
        if _object_name(other) == name:
            return other, f"Secret {name!r}"
        if default_env_var(other) == env:
            return other, f"env var {env!r}"
    return None


def secret_file_path(key: str) -> str:
    """Where a FILE-delivered secret appears inside the container (file name = key, case kept)."""
    return f"{SECRETS_DIR}/{key}"


RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# Set to 1 to allow a template with only one of {project} and {domain} (several of either then
# share one namespace); without it such a template is refused.
NAMESPACE_TEMPLATE_PARTIAL_ENV = "SESAME_NAMESPACE_TEMPLATE_PARTIAL"
_ALNUM = re.compile(r"[a-z0-9]+")


def _normalised(value: str) -> str:
    return value.lower().replace("_", "-")


def template_problem(template: str, allow_partial: bool = False) -> str | None:
    """Why `template` cannot name namespaces one-to-one, or None.

    One project and domain must give one namespace and one namespace one project and domain:
    both placeholders appear once, with literal text between them that ends (or, domain first,
    starts) with a character other than a letter or digit; domains are letters and digits only
    (see `namespace_for`), so the split is never in doubt. A template that could name a system
    namespace (`kube-…`) is refused.
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        parts = [("", "?", "", None)]
    fields = [field for _, field, _, _ in parts if field is not None]
    if any(field not in ("project", "domain") for field in fields):
        return f"namespace template {template!r} is invalid: use only {{project}} and {{domain}}, each once"
    if sorted(fields) != ["domain", "project"]:
        if allow_partial and len(fields) == 1:
            return None
        return (
            f"namespace template {template!r} must contain {{project}} and {{domain}} once each (a template "
            f"without one puts several of them in one namespace; set {NAMESPACE_TEMPLATE_PARTIAL_ENV}=1 to "
            "allow that on purpose)"
        )
    literals = [literal for literal, _, _, _ in parts]
    between = literals[1]
    domain_first = fields[0] == "domain"
    edge = between[:1] if domain_first else between[-1:]
    if not edge or edge.isalnum():
        return (
            f"namespace template {template!r} needs a separator such as '-' between {{project}} and "
            "{domain}: without one, two different projects could give the same namespace"
        )
    if _normalised(literals[0]).startswith("kube-"):
        return (
            f"namespace template {template!r} could name a system namespace (kube-…); choose another prefix"
        )
    return None


def namespace_for(
    project: str, domain: str, template: str = DEFAULT_NAMESPACE_TEMPLATE, allow_partial: bool = False
) -> str:
    """The namespace of a project and domain: the template, lower-cased, with `_` → `-`.

    Project and domain names are compared the same way (`My_Project` and `my-project` are one
    project); a domain is letters and digits only, so that no two pairs share a namespace.
    """
    if not project or not domain:
        raise NamingError("both --project and --domain are needed (or give --namespace)")
    problem = template_problem(template, allow_partial)
    if problem:
        raise NamingError(problem)
    if "{domain}" in template and not _ALNUM.fullmatch(_normalised(domain)):
        raise NamingError(
            f"domain {domain!r} may only contain letters and digits (e.g. development, staging2): with "
            "'-' or '_' in a domain, two projects and domains could share one namespace"
        )
    name = _normalised(template.format(project=project, domain=domain))
    if len(name) > MAX_LABEL_LENGTH or not _DNS_LABEL.fullmatch(name):
        raise NamingError(
            f"project {project!r} and domain {domain!r} give namespace {name!r} (template {template!r}), "
            "which is not a valid namespace name (lower-case letters, digits and '-', at most 63)"
        )
    if name in RESERVED_NAMESPACES or name.startswith("kube-"):
        raise NamingError(
            f"project {project!r} and domain {domain!r} give namespace {name!r}, which belongs to the "
            "cluster itself; choose another project"
        )
    return name
