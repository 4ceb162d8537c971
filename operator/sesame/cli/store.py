"""Sesame secrets as Kubernetes Secrets (docs/design.md §1): one Secret per key, named by the key's
DNS form, labelled `app.kubernetes.io/managed-by: sesame`, annotated `sesame.dev/key: KEY`, value in
the data entry KEY. One key, one secret: no two keys of a namespace share a Secret name or a default
env var name. Values go in and never come out of this module except to the API server."""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sesame import naming
from sesame.cli.connection import Connection, raise_api_error, status_kind, status_message, unreachable
from sesame.cli.errors import CliError, ExitCode

SOURCE_ANNOTATION = f"{naming.API_GROUP}/source"  # "value" (prompt or stdin) or "file" (-f)
UPDATED_ANNOTATION = f"{naming.API_GROUP}/updated-at"  # RFC 3339, UTC, set on create and update
MANAGED_SELECTOR = f"{naming.MANAGED_BY_LABEL}={naming.MANAGED_BY_VALUE}"

T = TypeVar("T")
ValueReader = Callable[[], tuple[bytes, str]]  # → (value, source)


@dataclass(frozen=True)
class Target:
    """The namespace of a project/domain, and how it was derived (for messages)."""

    namespace: str
    origin: str


@dataclass(frozen=True)
class SecretInfo:
    """What `get` shows: names, source and dates — never the value."""

    key: str
    object_name: str
    namespace: str
    source: str
    created: str
    updated: str

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.key,
            "namespace": self.namespace,
            "secretName": self.object_name,
            "source": self.source,
            "created": self.created,
            "updated": self.updated,
        }


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _timestamp(value: Any) -> str:
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value or "")


def _meta(secret: client.V1Secret) -> client.V1ObjectMeta:
    meta = secret.metadata
    if meta is None:  # the API server always sends metadata; keep the type checker honest
        raise CliError(ExitCode.ERROR, "the API server sent a Secret without metadata")
    return meta


def object_name(key: str) -> str:
    problem = naming.key_problem(key)
    if problem:
        raise CliError(ExitCode.INVALID_KEY, f"invalid secret name: {problem}")
    return naming.secret_object_name(key)


class SecretStore:
    def __init__(self, connection: Connection, target: Target) -> None:
        self.connection = connection
        self.namespace = target.namespace
        self.target = target
        self.core = connection.core

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, verb: str, resource: str, handled: tuple[int, ...], call: Callable[[], T]) -> T:
        """Run one API call; transport failures and unhandled HTTP statuses become CliErrors."""
        try:
            return call()
        except ApiException as error:
            if error.status in handled:
                raise
            raise_api_error(error, verb, resource, self.namespace)
        except urllib3.exceptions.HTTPError as error:
            raise unreachable(error, self.connection.host, self.connection.timeout) from None

    def _namespace_missing(self) -> bool:
        """True only when the API server says the namespace does not exist (a user who may not
        read namespaces gets the benefit of the doubt)."""
        try:
            self._call(
                "get",
                "namespaces",
                (403, 404),
                lambda: self.core.read_namespace(
                    self.namespace, _request_timeout=self.connection.request_timeout
                ),
            )
        except ApiException as error:
            return bool(error.status == 404)
        return False

    def _no_namespace(self) -> NoReturn:
        raise CliError(
            ExitCode.NAMESPACE_NOT_FOUND,
            f"namespace {self.namespace!r} not found ({self.target.origin}); "
            f"create it (kubectl create namespace {self.namespace}) or check the project and domain",
        )

    def _read(self, name: str, forbidden_ok: bool = False) -> client.V1Secret | None:
        """The Secret `name`, or None when it does not exist (or, with forbidden_ok, may not be read)."""
        handled = (403, 404) if forbidden_ok else (404,)
        try:
            secret: client.V1Secret = self._call(
                "get",
                "secrets",
                handled,
                lambda: self.core.read_namespaced_secret(
                    name, self.namespace, _request_timeout=self.connection.request_timeout
                ),
            )
        except ApiException:
            return None
        return secret

    def _read_existing(self, key: str, name: str, hint: str) -> client.V1Secret:
        """The Secret holding `key`; NotFound (ending with `hint`) / NamespaceNotFound / KeyClash."""
        secret = self._read(name)
        if secret is None:
            if self._namespace_missing():
                self._no_namespace()
            raise CliError(
                ExitCode.NOT_FOUND,
                f"secret {key!r} not found in namespace {self.namespace!r} ({self.target.origin}); {hint}",
            )
        self._check_owner(secret, key)
        return secret

    def _check_owner(self, secret: client.V1Secret, key: str) -> None:
        meta = _meta(secret)
        labels = meta.labels or {}
        annotations = meta.annotations or {}
        if labels.get(naming.MANAGED_BY_LABEL) != naming.MANAGED_BY_VALUE:
            raise CliError(
                ExitCode.KEY_CLASH,
                f"Secret {meta.name!r} in namespace {self.namespace!r} exists but is not managed by sesame "
                f"(no label {MANAGED_SELECTOR}); sesame leaves it alone: choose another name for {key!r}",
            )
        first = annotations.get(naming.KEY_ANNOTATION)
        if first != key:
            raise CliError(
                ExitCode.KEY_CLASH,
                f"secret {key!r} clashes with existing secret {first!r}: both map to Secret {meta.name!r} "
                f"in namespace {self.namespace!r}; use {first!r} or choose another name",
            )

    def _info(self, secret: client.V1Secret) -> SecretInfo:
        meta = _meta(secret)
        annotations = meta.annotations or {}
        created = _timestamp(meta.creation_timestamp)
        return SecretInfo(
            key=str(annotations.get(naming.KEY_ANNOTATION) or meta.name),
            object_name=str(meta.name),
            namespace=self.namespace,
            source=annotations.get(SOURCE_ANNOTATION, "value"),
            created=created,
            updated=annotations.get(UPDATED_ANNOTATION) or created,
        )

    # -- commands ---------------------------------------------------------------------------

    def create(self, key: str, read_value: ValueReader) -> SecretInfo:
        name = object_name(key)
        # Everything that can refuse the key is said before the value is asked for.
        existing = self._read(name, forbidden_ok=True)
        if existing is not None:
            self._refuse_existing(existing, key)
        if self._namespace_missing():
            self._no_namespace()
        self._refuse_clash(key)
        value, source = read_value()
        body = client.V1Secret(
            api_version="v1",
            kind="Secret",
            type="Opaque",
            metadata=client.V1ObjectMeta(
                name=name,
                labels={naming.MANAGED_BY_LABEL: naming.MANAGED_BY_VALUE},
                annotations={
                    naming.KEY_ANNOTATION: key,
                    SOURCE_ANNOTATION: source,
                    UPDATED_ANNOTATION: now(),
                },
            ),
            data={key: base64.b64encode(value).decode("ascii")},
        )
        try:
            created: client.V1Secret = self._call(
                "create",
                "secrets",
                (404, 409),
                lambda: self.core.create_namespaced_secret(
                    self.namespace, body, _request_timeout=self.connection.request_timeout
                ),
            )
        except ApiException as error:
            if error.status == 404 or status_kind(error) == "namespaces":
                self._no_namespace()
            again = self._read(name)  # 409: created meanwhile
            if again is not None:
                self._refuse_existing(again, key)
            raise_api_error(error, "create", "secrets", self.namespace)
        return self._info(created)

    def _refuse_clash(self, key: str) -> None:
        """KEY_CLASH when a stored key maps to the same Secret name or default env var name.
        Needs `list secrets`: without it the check cannot be made, and create refuses."""
        try:
            secrets: client.V1SecretList = self._call(
                "list",
                "secrets",
                (403,),
                lambda: self.core.list_namespaced_secret(
                    self.namespace,
                    label_selector=MANAGED_SELECTOR,
                    _request_timeout=self.connection.request_timeout,
                ),
            )
        except ApiException as error:
            raise CliError(
                ExitCode.PERMISSION_DENIED,
                f"permission denied: cannot list secrets in namespace {self.namespace!r}, which create "
                "needs to check that no stored key maps to the same Secret or env var name "
                f"(server: {status_message(error)})",
            ) from None
        stored = [self._info(secret).key for secret in secrets.items]
        clash = naming.clashing_key(key, stored)
        if clash is not None:
            first, shared = clash
            raise CliError(
                ExitCode.KEY_CLASH,
                f"secret {key!r} clashes with existing secret {first!r}: both map to {shared} in namespace "
                f"{self.namespace!r}; use {first!r} or choose another name",
            )

    def _refuse_existing(self, secret: client.V1Secret, key: str) -> NoReturn:
        self._check_owner(secret, key)  # KEY_CLASH when another key or another tool owns the name
        raise CliError(
            ExitCode.ALREADY_EXISTS,
            f"secret {key!r} already exists in namespace {self.namespace!r}; "
            f"change it with `sesame update secret --namespace {self.namespace} {key}`",
        )

    def update(self, key: str, read_value: ValueReader) -> SecretInfo:
        name = object_name(key)
        hint = f"create it with `sesame create secret --namespace {self.namespace} {key}`"
        secret = self._read_existing(key, name, hint)
        value, source = read_value()
        data = dict(secret.data or {})
        data[key] = base64.b64encode(value).decode("ascii")
        secret.data = data
        meta = _meta(secret)
        meta.annotations = {
            **(meta.annotations or {}),
            SOURCE_ANNOTATION: source,
            UPDATED_ANNOTATION: now(),
        }
        try:  # resourceVersion is kept: a concurrent change is refused, not overwritten
            updated: client.V1Secret = self._call(
                "update",
                "secrets",
                (404, 409),
                lambda: self.core.replace_namespaced_secret(
                    name, self.namespace, secret, _request_timeout=self.connection.request_timeout
                ),
            )
        except ApiException as error:
            if error.status == 404:
                raise CliError(
                    ExitCode.NOT_FOUND,
                    f"secret {key!r} was deleted from namespace {self.namespace!r} while updating it",
                ) from None
            raise CliError(
                ExitCode.ERROR,
                f"secret {key!r} in namespace {self.namespace!r} was changed by someone else while "
                "updating it; run the command again",
            ) from None
        return self._info(updated)

    def delete(self, key: str) -> None:
        name = object_name(key)
        hint = f"nothing to delete; list the secrets with `sesame get secret --namespace {self.namespace}`"
        secret = self._read_existing(key, name, hint)
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(
                uid=_meta(secret).uid, resource_version=_meta(secret).resource_version
            )
        )
        try:
            self._call(
                "delete",
                "secrets",
                (404, 409),
                lambda: self.core.delete_namespaced_secret(
                    name, self.namespace, body=options, _request_timeout=self.connection.request_timeout
                ),
            )
        except ApiException as error:
            if error.status == 404:
                raise CliError(
                    ExitCode.NOT_FOUND,
                    f"secret {key!r} was already deleted from namespace {self.namespace!r}",
                ) from None
            raise CliError(
                ExitCode.ERROR,
                f"secret {key!r} in namespace {self.namespace!r} was changed by someone else while "
                "deleting it; run the command again",
            ) from None

    def get(self, key: str) -> SecretInfo:
        name = object_name(key)
        secret = self._read(name)
        if secret is None and self._namespace_missing():
            self._no_namespace()
        if secret is not None:
            try:
                self._check_owner(secret, key)
            except CliError as error:
                raise CliError(
                    ExitCode.NOT_FOUND, f"secret {key!r} not found in namespace {self.namespace!r}: {error}"
                ) from None
            return self._info(secret)
        raise CliError(
            ExitCode.NOT_FOUND,
            f"secret {key!r} not found in namespace {self.namespace!r} ({self.target.origin})",
        )

    def list(self) -> list[SecretInfo]:
        secrets: client.V1SecretList = self._call(
            "list",
            "secrets",
            (),
            lambda: self.core.list_namespaced_secret(
                self.namespace,
                label_selector=MANAGED_SELECTOR,
                _request_timeout=self.connection.request_timeout,
            ),
        )
        if not secrets.items and self._namespace_missing():
            self._no_namespace()
        return sorted((self._info(secret) for secret in secrets.items), key=lambda info: info.key)
