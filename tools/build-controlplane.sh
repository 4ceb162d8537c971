#!/usr/bin/env bash
# Build etcd, kube-apiserver, kube-controller-manager, kubectl and helm from the Go module proxy
# into a cache keyed by version (outside the repo). A second run finds the cache and returns at once.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${SESAME_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sesame}"
out="$cache_root/k8s-${KUBERNETES_VERSION}-etcd-${ETCD_VERSION}-helm-${HELM_VERSION}"
binaries=(etcd kube-apiserver kube-controller-manager kubectl helm)

if [[ "${1:-}" == "--print-bin-dir" ]]; then
  echo "$out/bin"
  exit 0
fi

all_present() {
  for b in "${binaries[@]}"; do [[ -x "$out/bin/$b" ]] || return 1; done
}

if all_present; then
  echo "control plane binaries: cached in $out/bin"
  exit 0
fi

command -v go >/dev/null || { echo "build-controlplane: Go >= 1.24 is needed to build the control plane once (or point KUBECONFIG at an existing cluster)" >&2; exit 1; }

mkdir -p "$out/bin" "$out/logs"
work="$(mktemp -d "$cache_root/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp "$here/controlplane/go.mod" "$here/controlplane/go.sum" "$here/controlplane/tools.go" "$work/"

minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
stamp() {  # the same -X flags Kubernetes' own build sets, so binaries report the real release
  local pkg=$1
  printf -- "-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean -X %s.buildDate=1970-01-01T00:00:00Z " \
    "$pkg" "$KUBERNETES_VERSION" "$pkg" "$pkg" "$minor" "$pkg" "$pkg"
}
k8s_ldflags="-s -w $(stamp k8s.io/component-base/version) $(stamp k8s.io/client-go/pkg/version)"

build() {  # name, package, ldflags
  local name=$1 pkg=$2 flags=$3 log="$out/logs/build-$1.log"
  local start=$SECONDS
  echo "building $name ($pkg)..."
  if ! (cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "$flags" -o "$out/bin/$name.tmp" "$pkg") >"$log" 2>&1; then
    echo "build-controlplane: building $name failed; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  mv "$out/bin/$name.tmp" "$out/bin/$name"
  echo "built $name in $((SECONDS - start))s"
}

[[ -x "$out/bin/etcd" ]] || build etcd go.etcd.io/etcd/server/v3 "-s -w"
[[ -x "$out/bin/kube-apiserver" ]] || build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
[[ -x "$out/bin/kube-controller-manager" ]] || build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags"
[[ -x "$out/bin/kubectl" ]] || build kubectl k8s.io/kubernetes/cmd/kubectl "$k8s_ldflags"
if [[ ! -x "$out/bin/helm" ]]; then
  helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${minor} -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${minor}"
  echo "building helm ${HELM_VERSION}..."
  start=$SECONDS
  if ! GOBIN="$out/bin" GOFLAGS=-buildvcs=false CGO_ENABLED=0 go install -trimpath -ldflags "$helm_ldflags" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >"$out/logs/build-helm.log" 2>&1; then
    echo "build-controlplane: building helm failed; last lines of $out/logs/build-helm.log:" >&2
    tail -n 30 "$out/logs/build-helm.log" >&2
    exit 1
  fi
  echo "built helm in $((SECONDS - start))s"
fi
all_present
echo "control plane binaries: built into $out/bin"
