"""Configuration files of the local node's components: containerd, CNI, kubelet, kube-proxy.

Written by the host side before the node starts (`write`), read by the node's init (`paths`).
Every path the components write to is either in the node's state directory or on a tmpfs that
exists only in the node's mount namespace (see tools/localnode.py). Dev tooling only.
"""

from __future__ import annotations

import json
from pathlib import Path

from localnode import APISERVER_IP, KUBELET_PORT, NODE_IP, NODE_NAME, POD_CIDR, NodeConfig

CONTAINERD_SOCKET = "/run/containerd/containerd.sock"  # on the node's private /run


def paths(config: NodeConfig) -> dict[str, Path]:
    etc = config.root / "etc"
    return {
        "containerd": etc / "containerd.toml",
        "cni": etc / "cni",
        "kubelet": etc / "kubelet.yaml",
        "kubelet-kubeconfig": etc / "kubelet.kubeconfig",
        "kube-proxy": etc / "kube-proxy.yaml",
        "kube-proxy-kubeconfig": etc / "kube-proxy.kubeconfig",
        "pki": config.root / "pki",
    }


def kubeconfig(server: str, ca: Path, cert: Path, key: Path, user: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "sesame-local", "cluster": {"server": server, "certificate-authority": str(ca)}}
            ],
            "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
            "contexts": [{"name": "node", "context": {"cluster": "sesame-local", "user": user}}],
            "current-context": "node",
        },
        indent=2,
    )


def containerd_toml(config: NodeConfig, pause_image: str, cni_dir: Path) -> str:
    bin_dir = config.bin_dir
    root = config.root / "containerd"
    return f"""version = 3
root = "{root}"
state = "/run/containerd"
# Plugins a single local node does not use; NRI would add a socket, the others only log errors.
disabled_plugins = [
  "io.containerd.nri.v1.nri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{pause_image}"

[plugins.'io.containerd.cri.v1.runtime']
  # This machine lacks CAP_SYS_RESOURCE: never ask for an oom_score_adj below containerd's own.
  restrict_oom_score_adj = true
  # Pod network namespaces are bind-mounted under the state dir, not /var/run/netns.
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{bin_dir}/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{bin_dir}"]
    conf_dir = "{cni_dir}"
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
"""


def cni_conflist() -> str:
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "sesame-pods",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,  # nothing leaves the node: no NAT, no route out
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": "/var/lib/cni/networks",
                    },
                }
            ],
        },
        indent=2,
    )


def kubelet_yaml(config: NodeConfig, pki: Path, ca: Path) -> str:
    settings = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        # This machine offers cgroup v1 only (Kubernetes 1.35 refuses it unless told otherwise).
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "cgroupRoot": config.cgroup_root,
        "failSwapOn": False,
        "protectKernelDefaults": False,  # its writes land on the node's private copies
        "resolvConf": "",  # no cluster DNS here; pods get no resolver (nothing to resolve)
        "podCIDR": POD_CIDR,
        "maxPods": 110,
        "serializeImagePulls": False,
        # Images are imported, never pulled: keep them however full the host's disk is.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        # A rotated Secret reaches a running pod's files, and a container held for a missing Secret
        # starts, on the pod's next sync (the kubelet's default is every minute; one node, few pods).
        "syncFrequency": "5s",
        "nodeStatusUpdateFrequency": "5s",
        "nodeStatusReportFrequency": "1m",
        "fileCheckFrequency": "1h",
        "httpCheckFrequency": "1h",
        "shutdownGracePeriod": "0s",
    }
    return json.dumps(settings, indent=2)  # YAML is a superset of JSON


def kube_proxy_yaml(kubeconfig_path: Path) -> str:
    settings = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig_path)},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "nodePortAddresses": [f"{NODE_IP}/32"],
        # Leave conntrack alone: its table size is a host-wide setting.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
    }
    return json.dumps(settings, indent=2)


def write(config: NodeConfig, ca: Path, pause_image: str) -> dict[str, Path]:
    """Every file the node's components read. Certificates are in `paths(config)["pki"]` already."""
    files = paths(config)
    for directory in (files["containerd"].parent, files["cni"]):
        directory.mkdir(parents=True, exist_ok=True)
    pki = files["pki"]
    server = f"https://{APISERVER_IP}:{config.apiserver_port}"
    files["containerd"].write_text(containerd_toml(config, pause_image, files["cni"]))
    (files["cni"] / "10-sesame-pods.conflist").write_text(cni_conflist())
    files["kubelet"].write_text(kubelet_yaml(config, pki, ca))
    files["kubelet-kubeconfig"].write_text(
        kubeconfig(
            server, ca, pki / "kubelet-client.crt", pki / "kubelet-client.key", f"system:node:{NODE_NAME}"
        )
    )
    files["kube-proxy"].write_text(kube_proxy_yaml(files["kube-proxy-kubeconfig"]))
    files["kube-proxy-kubeconfig"].write_text(
        kubeconfig(server, ca, pki / "kube-proxy.crt", pki / "kube-proxy.key", "system:kube-proxy")
    )
    return files
