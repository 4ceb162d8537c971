#!/usr/bin/env bash
# Build every binary of the local cluster from the Go module proxy, at the versions pinned in
# versions.env, into a cache outside the repo keyed by component and version
# (~/.cache/sesame/components/<component>-<version>/):
#
#   control plane  etcd, kube-apiserver, kube-controller-manager, kube-scheduler
#   node           kubelet, kube-proxy, containerd (+ shim, ctr), runc (seccomp), CNI plugins
#   tools          kubectl, helm
#   gitops         Flux's source-, kustomize- and helm-controller (each with its CRDs in crds/ next
#                  to the binary), for the GitOps tests (tools/flux.py)
#
# A second run finds the cache and returns at once. `--print-bin-dir` prints the one directory
# that holds (symlinks to) every binary of this set of versions.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${SESAME_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sesame}"
set_key="$(cat "$here/versions.env" "$here/controlplane/go.sum" | sha256sum | cut -c1-12)"
bin_dir="$cache_root/bin-$set_key"

# component key -> binaries it provides
declare -A provides=(
  ["etcd-$ETCD_VERSION"]="etcd"
  ["kubernetes-$KUBERNETES_VERSION"]="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"
  ["helm-$HELM_VERSION"]="helm"
  ["containerd-$CONTAINERD_VERSION"]="containerd containerd-shim-runc-v2 ctr"
  ["runc-$RUNC_VERSION"]="runc"
  ["cni-plugins-$CNI_PLUGINS_VERSION"]="bridge host-local loopback"
  ["flux-source-controller-$FLUX_SOURCE_CONTROLLER_VERSION"]="source-controller"
  ["flux-kustomize-controller-$FLUX_KUSTOMIZE_CONTROLLER_VERSION"]="kustomize-controller"
  ["flux-helm-controller-$FLUX_HELM_CONTROLLER_VERSION"]="helm-controller"
)

if [[ "${1:-}" == "--print-bin-dir" ]]; then
  echo "$bin_dir"
  exit 0
fi

complete() {  # component key
  local b
  for b in ${provides[$1]}; do [[ -x "$cache_root/components/$1/$b" ]] || return 1; done
}

host_packages() {  # Debian packages the build and the node need (runc's libseccomp, iptables, umoci)
  local missing=() p
  for p in $NODE_HOST_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "build-binaries: the node needs the Debian packages: ${missing[*]} (apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "installing Debian packages: ${missing[*]}..."
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

host_packages

command -v go >/dev/null || {
  echo "build-binaries: Go >= 1.24 is needed to build the local cluster once (or point SESAME_KUBECONFIG at a cluster)" >&2
  exit 1
}

minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
stamp() {  # the same -X flags Kubernetes' own build sets, so binaries report the real release
  local pkg=$1
  printf -- "-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean -X %s.buildDate=1970-01-01T00:00:00Z " \
    "$pkg" "$KUBERNETES_VERSION" "$pkg" "$pkg" "$minor" "$pkg" "$pkg"
}
k8s_ldflags="-s -w $(stamp k8s.io/component-base/version) $(stamp k8s.io/client-go/pkg/version)"

mkdir -p "$cache_root/components" "$cache_root/logs"
work=""
cleanup() { [[ -z "$work" ]] || rm -rf "$work"; }
trap cleanup EXIT

wrapper() {  # a writable copy of the wrapper module that pins Kubernetes' staging modules
  if [[ -z "$work" ]]; then
    work="$(mktemp -d "$cache_root/build.XXXXXX")"
    cp "$here/controlplane/go.mod" "$here/controlplane/go.sum" "$here/controlplane/tools.go" "$work/"
  fi
}

# build KEY NAME -- COMMAND...: run COMMAND (which writes $out/NAME), timed, log kept on failure
build() {
  local key=$1 name=$2; shift 3
  local out="$cache_root/components/$key" log="$cache_root/logs/build-$name.log" start=$SECONDS
  [[ -x "$out/$name" ]] && return 0
  mkdir -p "$out"
  echo "building $name ($key)..."
  if ! (export out; "$@") >"$log" 2>&1; then
    echo "build-binaries: building $name failed; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  [[ -x "$out/$name" ]] || { echo "build-binaries: $name was not produced; see $log" >&2; exit 1; }
  echo "built $name in $((SECONDS - start))s"
}

go_build_wrapper() {  # package ldflags
  (cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "$2" -o "$out/$name.tmp" "$1") && mv "$out/$name.tmp" "$out/$name"
}

go_install() {  # package@version [ldflags [tags [cgo]]]: go install into $out
  GOBIN="$out" GOFLAGS=-buildvcs=false CGO_ENABLED="${4:-0}" go install -trimpath -tags "${3:-}" -ldflags "${2:--s -w}" "$1"
}

key="etcd-$ETCD_VERSION"
if ! complete "$key"; then
  wrapper
  build "$key" etcd -- go_build_wrapper go.etcd.io/etcd/server/v3 "-s -w"
fi

key="kubernetes-$KUBERNETES_VERSION"
if ! complete "$key"; then
  wrapper
  for cmd in ${provides[$key]}; do
    build "$key" "$cmd" -- go_build_wrapper "k8s.io/kubernetes/cmd/$cmd" "$k8s_ldflags"
  done
fi

key="helm-$HELM_VERSION"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${minor} -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${minor}"
complete "$key" || build "$key" helm -- go_install "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" "$helm_ldflags"

key="containerd-$CONTAINERD_VERSION"
containerd_ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=${CONTAINERD_VERSION}"
for cmd in ${provides[$key]}; do
  build "$key" "$cmd" -- go_install "github.com/containerd/containerd/v2/cmd/$cmd@${CONTAINERD_VERSION}" "$containerd_ldflags"
done

# runc needs seccomp: containerd's CRI gives every sandbox a seccomp profile.
key="runc-$RUNC_VERSION"
build "$key" runc -- go_install "github.com/opencontainers/runc@${RUNC_VERSION}" \
  "-s -w -X main.version=${RUNC_VERSION#v}" "seccomp urfave_cli_no_docs" 1

key="cni-plugins-$CNI_PLUGINS_VERSION"
for plugin in main/bridge main/loopback ipam/host-local; do
  build "$key" "${plugin#*/}" -- go_install "github.com/containernetworking/plugins/plugins/${plugin}@${CNI_PLUGINS_VERSION}"
done

# Flux: `go install` refuses these modules (their go.mod has `replace …/api => ./api`), so each is
# built from a writable copy of its module with that replace dropped (the published api module of
# the same version is used instead). Its CRDs (config/crd/bases) go to crds/ next to the binary.
flux_build() {  # controller version [module@version to require instead...]; runs in build's subshell
  local controller=$1 version=$2 module="github.com/fluxcd/$1" dir pin
  shift 2
  dir="$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$dir" ]] || { echo "go mod download $module@$version named no source directory"; return 1; }
  src="$(mktemp -d "$cache_root/build.XXXXXX")" || return 1
  trap 'rm -rf "$src"' EXIT
  cp -r "$dir/." "$src/" && chmod -R u+w "$src" || return 1
  mkdir -p "$out/crds" && cp "$src"/config/crd/bases/*.yaml "$out/crds/" || return 1
  cd "$src" && go mod edit -dropreplace "$module/api" && go mod download "$module/api" || return 1
  for pin in "$@"; do
    go mod edit -require="$pin" && go mod download "${pin%@*}" || return 1
  done
  CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$out/$controller.tmp" . &&
    mv "$out/$controller.tmp" "$out/$controller"
}

build "flux-source-controller-$FLUX_SOURCE_CONTROLLER_VERSION" source-controller -- \
  flux_build source-controller "$FLUX_SOURCE_CONTROLLER_VERSION" "github.com/fluxcd/pkg/artifact@$FLUX_PKG_ARTIFACT_VERSION"
build "flux-kustomize-controller-$FLUX_KUSTOMIZE_CONTROLLER_VERSION" kustomize-controller -- \
  flux_build kustomize-controller "$FLUX_KUSTOMIZE_CONTROLLER_VERSION"
build "flux-helm-controller-$FLUX_HELM_CONTROLLER_VERSION" helm-controller -- \
  flux_build helm-controller "$FLUX_HELM_CONTROLLER_VERSION"

# One directory with every binary of this set of versions.
mkdir -p "$bin_dir"
for key in "${!provides[@]}"; do
  complete "$key" || { echo "build-binaries: $key is incomplete" >&2; exit 1; }
  for b in ${provides[$key]}; do ln -sfn "$cache_root/components/$key/$b" "$bin_dir/$b"; done
done
echo "local cluster binaries: $bin_dir"
