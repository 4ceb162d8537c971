"""Cheap bulk reads for tests that watch hundreds of objects: raw JSON (the client's model
deserialisation costs more than the API server does) and counts via `limit=1`."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException


def raw_get(api: client.ApiClient, path: str, **query: Any) -> dict[str, Any]:
    method, url, headers, _, _ = api.param_serialize(
        "GET",
        path,
        query_params=[(k, v) for k, v in query.items() if v is not None],
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, header_params=headers, _request_timeout=30)
    data = response.read()
    if not 200 <= response.status < 300:
        raise ApiException(status=response.status, reason=response.reason, body=data.decode())
    result: dict[str, Any] = json.loads(data)
    return result


def list_items(api: client.ApiClient, path: str, **query: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = raw_get(api, path, **query).get("items") or []
    return items


def count(api: client.ApiClient, path: str) -> int:
    """How many objects a list would return, without transferring them."""
    result = raw_get(api, path, limit=1)
    return len(result.get("items") or []) + int(result["metadata"].get("remainingItemCount") or 0)


def pods_of(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    return list_items(api, f"/api/v1/namespaces/{namespace}/pods")


def taskruns_of(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    return list_items(api, f"/apis/sesame.dev/v1alpha1/namespaces/{namespace}/taskruns")


def pod_count(api: client.ApiClient, namespace: str) -> int:
    return count(api, f"/api/v1/namespaces/{namespace}/pods")
