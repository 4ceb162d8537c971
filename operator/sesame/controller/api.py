"""The controller's few API calls as plain JSON over the `kubernetes` client's connection pool.

The generated methods of the `kubernetes` client (37.x) validate every dict body into pydantic
models and every answer back into models, which the controller then turns into dicts again: for
a pod that cost more CPU than everything else the operator does for a TaskRun (`make bench`,
profiled with py-spy). The credentials, TLS settings and connection pool are the client's own;
errors are the same `ApiException` (status, reason, body), so callers handle them unchanged.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sesame import naming

TIMEOUT = 30.0  # seconds per request, as Kopf's own settings.networking.request_timeout
MERGE_PATCH = "application/merge-patch+json"


class JsonApi:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        parse: bool = True,
    ) -> dict[str, Any]:
        """The answer as a dict; `parse=False` skips decoding it (a created pod is ~4 kB of JSON)."""
        _, url, headers, _, _ = self.api.param_serialize(
            method,
            path,
            header_params={"Accept": "application/json", "Content-Type": content_type},
            auth_settings=["BearerToken"],
        )
        response = self.api.rest_client.pool_manager.request(
            method,
            url,
            body=None if body is None else json.dumps(body, separators=(",", ":")),
            headers=headers,
            timeout=TIMEOUT,
        )
        if not 200 <= response.status <= 299:
            error = ApiException(status=response.status, reason=response.reason)
            error.body = response.data.decode("utf-8", errors="replace")
            error.headers = response.headers
            raise error
        if not parse or not response.data:
            return {}
        result: dict[str, Any] = json.loads(response.data)
        return result

    def create_pod(self, namespace: str, pod: dict[str, Any]) -> None:
        self.request("POST", f"/api/v1/namespaces/{quote(namespace)}/pods", pod, parse=False)

    def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}")

    def _taskrun(self, namespace: str, name: str) -> str:
        return (
            f"/apis/{naming.API_GROUP}/{naming.API_VERSION}/namespaces/{quote(namespace)}/"
            f"{naming.TASKRUN_PLURAL}/{quote(name)}"
        )

    def read_taskrun(self, namespace: str, name: str) -> dict[str, Any]:
        return self.request("GET", self._taskrun(namespace, name))

    def patch_taskrun_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """A JSON merge patch of `status` (what the generated client sends for a dict body)."""
        self.request(
            "PATCH", self._taskrun(namespace, name) + "/status", {"status": status}, MERGE_PATCH, parse=False
        )
