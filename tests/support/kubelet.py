"""What a kubelet would hand one container of a pod: its environment and its mounted files.

No kubelet runs on the local control plane, so tests that want to run task code against a pod
the operator produced materialise the container here, the way the kubelet does:

- `env`: `envFrom` first, then `env` in order; literal `value`s with `$(VAR)` expanded from the
  variables defined before them (`$$` escapes); `valueFrom.secretKeyRef` / `configMapKeyRef`
  read from the API server (a missing, non-optional reference is the kubelet's
  `CreateContainerConfigError`); Secret bytes become a str the way `os.environ` decodes them.
- volumes: each `volumeMounts` entry gets a host directory laid out like the kubelet's atomic
  writer (`..<timestamp>/` with the files, `..data` → it, and one symlink per top-level entry
  → `..data/<entry>`), file modes from `items[].mode` / `defaultMode`. Calling `refresh()`
  writes a new version and swaps `..data`, as the kubelet does when a Secret changes.

`ContainerView.host_env()` rewrites values that are paths under a mount to the host directory,
so `SESAME_SECRETS_DIR=/etc/sesame/secrets` points at the materialised files.
"""

from __future__ import annotations

import base64
import datetime
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

DEFAULT_MODE = 0o644
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_versions = itertools.count(1)


class KubeletError(RuntimeError):
    """What the kubelet would report instead of starting the container."""


@dataclass
class ContainerView:
    env: dict[str, str]
    mounts: dict[str, Path] = field(default_factory=dict)  # container mountPath → host directory

    def host_path(self, container_path: str) -> str:
        for mount_path, host in sorted(self.mounts.items(), key=lambda item: -len(item[0])):
            if container_path == mount_path or container_path.startswith(mount_path.rstrip("/") + "/"):
                return str(host / container_path[len(mount_path) :].lstrip("/"))
        return container_path

    def host_env(self) -> dict[str, str]:
        return {name: self.host_path(value) for name, value in self.env.items()}


class Kubelet:
    def __init__(self, core: client.CoreV1Api, namespace: str, root: Path) -> None:
        self.core = core
        self.namespace = namespace
        self.root = root

    # -- API reads ----------------------------------------------------------------------------

    def _secret_data(self, name: str, optional: bool) -> dict[str, bytes] | None:
        try:
            secret = self.core.read_namespaced_secret(name, self.namespace)
        except ApiException as error:
            if error.status == 404 and optional:
                return None
            if error.status == 404:
                raise KubeletError(f'CreateContainerConfigError: secret "{name}" not found') from None
            raise
        return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}

    def _config_map_data(self, name: str, optional: bool) -> dict[str, bytes] | None:
        try:
            config_map = self.core.read_namespaced_config_map(name, self.namespace)
        except ApiException as error:
            if error.status == 404 and optional:
                return None
            if error.status == 404:
                raise KubeletError(f'CreateContainerConfigError: configmap "{name}" not found') from None
            raise
        data = {key: value.encode() for key, value in (config_map.data or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (config_map.binary_data or {}).items()})
        return data

    def _source(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        return (
            self._secret_data(name, optional) if kind == "secret" else self._config_map_data(name, optional)
        )

    # -- env ----------------------------------------------------------------------------------

    @staticmethod
    def _expand(value: str, defined: dict[str, str]) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1)
            return defined.get(name, match.group(0))

        return _REFERENCE.sub(replace, value)

    def _env(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, ref_field in (("secret", "secretRef"), ("configmap", "configMapRef")):
                ref = source.get(ref_field)
                if ref:
                    data = self._source(kind, ref["name"], bool(ref.get("optional")))
                    for key, raw in (data or {}).items():
                        env[prefix + key] = os.fsdecode(raw)
        for entry in container.get("env") or []:
            name = entry["name"]
            if "valueFrom" not in entry:
                env[name] = self._expand(entry.get("value", ""), env)
                continue
            value_from = entry["valueFrom"]
            if "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
                kind = "secret" if "secretKeyRef" in value_from else "configmap"
                ref = value_from["secretKeyRef" if kind == "secret" else "configMapKeyRef"]
                optional = bool(ref.get("optional"))
                data = self._source(kind, ref["name"], optional)
                if data is None:
                    continue
                if ref["key"] not in data:
                    if optional:
                        continue
                    raise KubeletError(
                        f"CreateContainerConfigError: couldn't find key {ref['key']} in {kind} "
                        f"{self.namespace}/{ref['name']}"
                    )
                env[name] = os.fsdecode(data[ref["key"]])
            elif "fieldRef" in value_from:
                path = value_from["fieldRef"]["fieldPath"]
                fields = {
                    "metadata.name": pod["metadata"]["name"],
                    "metadata.namespace": self.namespace,
                    "spec.nodeName": pod["spec"].get("nodeName", ""),
                    "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
                }
                if path not in fields:
                    raise NotImplementedError(f"fieldRef {path}")
                env[name] = fields[path]
            else:
                raise NotImplementedError(f"env valueFrom {sorted(value_from)}")
        return env

    # -- volumes ------------------------------------------------------------------------------

    def _items(self, kind: str, spec: dict[str, Any], default_mode: int) -> list[tuple[str, bytes, int]]:
        name = spec.get("name") or spec.get("secretName")
        assert isinstance(name, str), spec
        data = self._source(kind, name, bool(spec.get("optional")))
        if data is None:
            return []
        items = spec.get("items")
        if items is None:
            return [(key, value, default_mode) for key, value in sorted(data.items())]
        files = []
        for item in items:
            if item["key"] not in data:
                if spec.get("optional"):
                    continue
                raise KubeletError(
                    f"MountVolume.SetUp failed: couldn't find key {item['key']} in {kind} "
                    f"{self.namespace}/{name}"
                )
            files.append((item["path"], data[item["key"]], item.get("mode", default_mode)))
        return files

    def _volume_files(self, volume: dict[str, Any]) -> list[tuple[str, bytes, int]] | None:
        """(path, content, mode) of every file of a volume; None for an emptyDir."""
        if "emptyDir" in volume:
            return None
        if "secret" in volume:
            spec = volume["secret"]
            return self._items("secret", spec, spec.get("defaultMode", DEFAULT_MODE))
        if "configMap" in volume:
            spec = volume["configMap"]
            return self._items("configmap", spec, spec.get("defaultMode", DEFAULT_MODE))
        if "projected" in volume:
            projected = volume["projected"]
            default_mode = projected.get("defaultMode", DEFAULT_MODE)
            files: list[tuple[str, bytes, int]] = []
            for source in projected.get("sources") or []:
                if "secret" in source:
                    files += self._items("secret", source["secret"], default_mode)
                elif "configMap" in source:
                    files += self._items("configmap", source["configMap"], default_mode)
                else:
                    raise NotImplementedError(f"projected source {sorted(source)}")
            return files
        raise NotImplementedError(f"volume {volume.get('name')!r}: {sorted(set(volume) - {'name'})}")

    @staticmethod
    def _write(directory: Path, files: list[tuple[str, bytes, int]]) -> None:
        """The kubelet's atomic writer: a new version directory, then `..data` swapped onto it."""
        directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y_%m_%d_%H_%M_%S")
        version = directory / f"..{stamp}.{next(_versions)}"
        version.mkdir()
        for path, content, mode in files:
            target = version / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(mode)
        staged = directory / "..data_tmp"
        staged.symlink_to(version.name)
        os.replace(staged, directory / "..data")  # atomic, like the kubelet's rename
        for top in {path.split("/")[0] for path, _, _ in files}:
            link = directory / top
            if not link.is_symlink():
                link.symlink_to(f"..data/{top}")

    def materialise(self, pod: dict[str, Any], container_name: str) -> ContainerView:
        spec = pod["spec"]
        containers = (spec.get("initContainers") or []) + spec["containers"]
        container = next(c for c in containers if c["name"] == container_name)
        view = ContainerView(env=self._env(pod, container))
        volumes = {volume["name"]: volume for volume in spec.get("volumes") or []}
        for index, mount in enumerate(container.get("volumeMounts") or []):
            if mount.get("subPath") or mount.get("subPathExpr"):
                raise NotImplementedError("subPath mounts (and Sesame must not use them)")
            files = self._volume_files(volumes[mount["name"]])
            host = self.root / container_name / f"{index}-{mount['name']}"
            if files is None:
                host.mkdir(parents=True, exist_ok=True)
            else:
                self._write(host, files)
            view.mounts[mount["mountPath"]] = host
        return view

    def refresh(self, pod: dict[str, Any], view: ContainerView, container_name: str) -> None:
        """Re-project the volumes of a running container (what the kubelet does when a Secret
        changes); the environment of a running container never changes."""
        spec = pod["spec"]
        containers = (spec.get("initContainers") or []) + spec["containers"]
        container = next(c for c in containers if c["name"] == container_name)
        volumes = {volume["name"]: volume for volume in spec.get("volumes") or []}
        for mount in container.get("volumeMounts") or []:
            files = self._volume_files(volumes[mount["name"]])
            if files is not None:
                self._write(view.mounts[mount["mountPath"]], files)
