"""Plain JSON requests through the `kubernetes` client's connection pool and credentials.

The generated API methods validate a dict body into pydantic models and back, which costs more
CPU per request than the API server spends on it; the benchmark client must not be the
bottleneck, so it sends JSON it built itself and parses only what it reads.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException


class Rest:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 60, parse: bool = True
    ) -> dict[str, Any]:
        method, url, headers, _, _ = self.api.param_serialize(
            method,
            path,
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self.api.rest_client.pool_manager.request(
            method,
            url,
            body=None if body is None else json.dumps(body),
            headers=headers,
            timeout=timeout,
            preload_content=True,
        )
        if not 200 <= response.status <= 299:
            error = ApiException(status=response.status, reason=response.reason)
            error.body = response.data.decode(errors="replace")
            raise error
        if not parse or not response.data:
            return {}
        result: dict[str, Any] = json.loads(response.data)
        return result

    def create(self, path: str, body: Any) -> None:
        """POST, without parsing the (large) answer."""
        self.request("POST", path, body, parse=False)


def pods(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def secrets(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets"


def taskruns(namespace: str) -> str:
    return f"/apis/sesame.dev/v1alpha1/namespaces/{namespace}/taskruns"


def namespaces() -> str:
    return "/api/v1/namespaces"
