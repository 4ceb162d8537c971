"""Flux for the GitOps tests: its controllers (tools/flux.py) and a git server (tools/gitserver.py)
on loopback, the examples of gitops/flux/ as a user would apply them, and Flux's verdicts read
from the objects' conditions (the way `flux get` and `kubectl wait` read them)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flux import CONTROLLERS, Flux
from gitserver import GitServer, Repository
from tests.support import leaks
from tests.support.cluster import ROOT, Cluster, eventually

EXAMPLES = ROOT / "gitops" / "flux"
FLUX_NAMESPACE = "flux-system"
KUSTOMIZATION = "kustomizations.kustomize.toolkit.fluxcd.io"
GIT_REPOSITORY = "gitrepositories.source.toolkit.fluxcd.io"
HELM_RELEASE = "helmreleases.helm.toolkit.fluxcd.io"
# The example's placeholder for Sesame's own repository (the chart source).
SESAME_REPOSITORY = "https://github.com/sesame-dev/sesame.git"


def documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def dump(documents: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False)


def example(relative: str) -> list[dict[str, Any]]:
    """A file of gitops/flux/ as written."""
    return documents(EXAMPLES / relative)


def with_source(documents: list[dict[str, Any]], name: str, url: str) -> list[dict[str, Any]]:
    """The documents with GitRepository `name` pointed at `url` (branch main): the only change
    the tests make to the examples."""
    found = False
    for document in documents:
        if document["kind"] == "GitRepository" and document["metadata"]["name"] == name:
            document["spec"]["url"] = url
            document["spec"]["ref"] = {"branch": "main"}
            found = True
    assert found, f"no GitRepository {name} in the example"
    return documents


def condition(item: Mapping[str, Any] | None, kind: str) -> dict[str, Any]:
    for entry in ((item or {}).get("status") or {}).get("conditions") or []:
        if entry.get("type") == kind:
            return dict(entry)
    return {}


@dataclass
class GitOps:
    """One cluster's Flux, one git server, and the platform repository Flux watches."""

    cluster: Cluster
    flux: Flux
    git: GitServer
    platform: Repository

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [self.cluster.kubectl(), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            env=self.cluster.env(),
            timeout=180,
        )
        assert not check or result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def apply(self, documents: list[dict[str, Any]]) -> None:
        """What a user does once per cluster (or `flux bootstrap` commits): apply Flux objects."""
        self.kubectl("apply", "-f", "-", stdin=dump(documents))

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        out = self.kubectl("get", resource, name, "-n", namespace, "-o", "json", "--ignore-not-found")
        return json.loads(out) if out.strip() else None

    def kustomization(self, name: str) -> dict[str, Any]:
        found = self.get(KUSTOMIZATION, FLUX_NAMESPACE, name)
        assert found is not None, f"Kustomization {name} is gone"
        return found

    def commit(self, message: str, files: Mapping[str, str | Path | None]) -> str:
        """Commit to the platform repository and have Flux act on it now, as `flux reconcile
        kustomization NAME --with-source` does: the source fetches the commit, then every
        Kustomization is asked to reconcile; the revision, as Flux names it."""
        revision = f"main@sha1:{self.platform.commit(message, files)}"
        asked = 0.0

        def fetched() -> bool:
            nonlocal asked
            source = self.get(GIT_REPOSITORY, FLUX_NAMESPACE, "platform") or {}
            if ((source.get("status") or {}).get("artifact") or {}).get("revision") == revision:
                return True
            if time.monotonic() - asked > 15:  # again, if a request was handled before the commit
                self.request_reconcile(GIT_REPOSITORY, FLUX_NAMESPACE, "platform")
                asked = time.monotonic()
            return False

        try:
            eventually(fetched, timeout=90, interval=0.3, what=f"the platform source at {revision}")
        except AssertionError as error:
            raise AssertionError(f"{error}; {self.said()}") from None
        self.kubectl(
            "annotate", "--overwrite", KUSTOMIZATION, "--all", "-n", FLUX_NAMESPACE,
            f"reconcile.fluxcd.io/requestedAt={time.time_ns()}",
        )  # fmt: skip
        return revision

    def said(self) -> str:
        """What Flux's objects say now (their Ready conditions), for a failure message."""
        found = []
        for resource in (GIT_REPOSITORY, KUSTOMIZATION, HELM_RELEASE):
            listed = json.loads(self.kubectl("get", resource, "-A", "-o", "json", check=False) or "{}")
            for item in listed.get("items", []):
                ready = condition(item, "Ready")
                found.append(
                    f"{item['kind']} {item['metadata']['name']}: Ready={ready.get('status')} "
                    f"{ready.get('reason')}: {str(ready.get('message'))[:200]}"
                )
        return "Flux says: " + ("; ".join(found) or "no objects")

    def request_reconcile(self, resource: str, namespace: str, name: str) -> None:
        self.kubectl(
            "annotate",
            "--overwrite",
            resource,
            name,
            "-n",
            namespace,
            f"reconcile.fluxcd.io/requestedAt={time.time_ns()}",
        )

    def verdict(self, name: str, revision: str) -> str:
        """What Flux says of Kustomization `name` at `revision`: "Ready", "Progressing", "Failed:
        <message>", or "" while it has not got to that revision yet."""
        item = self.kustomization(name)
        status = item.get("status") or {}
        ready = condition(item, "Ready")
        if status.get("lastAttemptedRevision") != revision:
            return ""
        if ready.get("status") == "True" and status.get("lastAppliedRevision") == revision:
            return "Ready"
        if ready.get("status") == "Unknown" and ready.get("reason") == "Progressing":
            healthy = condition(item, "Healthy")
            if revision in str(healthy.get("message")):
                return "Progressing"  # applied; the health checks of this revision are running
            return ""
        if ready.get("status") == "False":
            return f"Failed: {ready.get('reason')}: {str(ready.get('message')).strip()}"
        return ""

    def wait_for(
        self, name: str, revision: str, expected: str, wrong: tuple[str, ...] = (), timeout: float = 90
    ) -> str:
        """Flux's verdict on Kustomization `name` once it starts with `expected`; a verdict that
        starts with one of `wrong` fails at once (others may be stale, from before a change)."""

        def reached() -> str:
            now = self.verdict(name, revision)
            if wrong and now.startswith(wrong):
                raise AssertionError(f"Kustomization {name} at {revision}: {now}; expected {expected}")
            return now if now.startswith(expected) else ""

        try:
            what = f"Kustomization {name}: {expected}"
            return eventually(reached, timeout=timeout, interval=0.3, what=what)
        except AssertionError as error:
            if "timed out" not in str(error):
                raise
            raise AssertionError(f"{error}; {self.said()}") from None


@contextlib.contextmanager
def running_gitops(cluster: Cluster, state: Path) -> Iterator[GitOps]:
    """Flux's controllers and a git server for as long as the block runs; every Flux object is
    deleted (the controllers prune and uninstall what they made) before the controllers stop."""
    flux = Flux(kubeconfig=cluster.kubeconfig, bin_dir=cluster.bin_dir, state_dir=state / "flux")
    flux.state_dir.mkdir(parents=True, exist_ok=True)
    with GitServer(state / "git") as git:
        flux.start()
        try:
            yield GitOps(cluster, flux, git, git.repository("platform"))
        finally:
            try:
                flux.delete_flux_objects()
            finally:
                leaks.collect(cluster.api, FLUX_NAMESPACE)  # Flux's events and statuses
                flux.stop()
                for controller in CONTROLLERS:
                    leaks.record(f"Flux {controller} log", flux.log(controller))
