"""Plain JSON over the `kubernetes` client's credentials and connection pool: the one raw client.

The generated methods of the `kubernetes` client (37.x) validate every dict body into pydantic
models and every answer back into models, which cost more CPU per pod than everything else the
operator does for a TaskRun (`make bench`, profiled with py-spy). The operator's controller, the
bench and the test support all speak JSON through this instead. Credentials, TLS settings and the
pool are the client's own; errors are the client's `ApiException` (status, reason, body).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sesame import naming

TIMEOUT = 30.0  # seconds per request, as Kopf's own settings.networking.request_timeout
MERGE_PATCH = "application/merge-patch+json"
# Writes answer with the object's metadata only: the server encodes, and the client decodes, a
# fraction of a created pod (~4 kB of JSON) or of a patched TaskRun.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


def pods_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/pods" + (f"/{quote(name)}" if name else "")


def secrets_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/secrets" + (f"/{quote(name)}" if name else "")


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/events"


def taskruns_path(namespace: str, name: str = "") -> str:
    base = (
        f"/apis/{naming.API_GROUP}/{naming.API_VERSION}/namespaces/{quote(namespace)}/{naming.TASKRUN_PLURAL}"
    )
    return base + (f"/{quote(name)}" if name else "")


class JsonApi:
    """JSON requests with the credentials of one `kubernetes.client.ApiClient`."""

    def __init__(self, api: client.ApiClient, timeout: float = TIMEOUT, retries: int | None = None) -> None:
        self.api = api
        self.timeout = timeout
        self.retries = retries  # None: the client's own policy (3 retries, each logged by urllib3)

    def raw(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: Mapping[str, Any] | None = None,
        accept: str = "application/json",
    ) -> bytes:
        """The answer's bytes; any status outside 2xx raises `ApiException`."""
        if query:
            path = f"{path}?{urlencode({k: v for k, v in query.items() if v is not None})}"
        _, url, headers, _, _ = self.api.param_serialize(
            method,
            path,
            header_params={"Accept": accept, "Content-Type": content_type},
            auth_settings=["BearerToken"],
        )
        pool = self.api.rest_client.pool_manager
        response = pool.request(
            method,
            url,
            body=None if body is None else json.dumps(body, separators=(",", ":")),
            headers=headers,
            timeout=self.timeout,
            retries=pool.connection_pool_kw.get("retries") if self.retries is None else self.retries,
        )
        if not 200 <= response.status <= 299:
            error = ApiException(status=response.status, reason=response.reason)
            error.body = response.data.decode("utf-8", errors="replace")
            error.headers = response.headers
            raise error
        data: bytes = response.data
        return data

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        parse: bool = True,
        query: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The answer as a dict; `parse=False` skips decoding it (a created pod is ~4 kB of JSON)."""
        data = self.raw(method, path, body, content_type, query)
        if not parse or not data:
            return {}
        result: dict[str, Any] = json.loads(data)
        return result

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        return self.request("GET", path, query=query)

    def items(self, path: str, **query: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(path, **query).get("items") or []
        return items

    def count(self, path: str) -> int:
        """How many objects a list would return, without transferring them."""
        result = self.get(path, limit=1)
        return len(result.get("items") or []) + int(result["metadata"].get("remainingItemCount") or 0)

    def create(self, path: str, body: Any) -> dict[str, Any]:
        """POST; the created object's metadata."""
        return self._metadata(self.raw("POST", path, body, accept=METADATA_ONLY))

    def merge_patch(self, path: str, patch: Any) -> dict[str, Any]:
        """PATCH with a JSON merge patch; the patched object's metadata."""
        return self._metadata(self.raw("PATCH", path, patch, MERGE_PATCH, accept=METADATA_ONLY))

    @staticmethod
    def _metadata(data: bytes) -> dict[str, Any]:
        if not data:
            return {}
        metadata: dict[str, Any] = json.loads(data).get("metadata") or {}
        return metadata
