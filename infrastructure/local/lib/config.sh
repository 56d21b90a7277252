# shellcheck shell=bash
# lib/config.sh - sourced by cluster.sh: `up` steps 5-6, the PKI, kubeconfigs and the
# containerd, CNI and kubelet configuration under $LAB.

# up, step 5: PKI (openssl) and kubeconfigs
cert() {   # cert NAME CN O SAN server|client
  local n=$1 cn=$2 o=$3 san=$4 use=$5 subj
  [ -f "$n.crt" ] && return 0
  openssl genrsa -out "$n.key" 2048 2>/dev/null
  subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o$subj"
  openssl req -new -key "$n.key" -subj "$subj" -out "$n.csr"
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ "$use" = server ]; then echo "extendedKeyUsage=serverAuth"; else echo "extendedKeyUsage=clientAuth"; fi
    [ -n "$san" ] && echo "subjectAltName=$san"; } >"$n.ext"
  openssl x509 -req -in "$n.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
    -extfile "$n.ext" -out "$n.crt" 2>/dev/null
  rm -f "$n.csr" "$n.ext"
}

kubeconfig_file() {   # kubeconfig_file OUT USER CERTNAME
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: crucible-local
  cluster: {certificate-authority: $LAB/pki/ca.crt, server: "https://127.0.0.1:6443"}
users:
- name: $2
  user: {client-certificate: $LAB/pki/$3.crt, client-key: $LAB/pki/$3.key}
contexts:
- name: crucible-local
  context: {cluster: crucible-local, user: $2}
current-context: crucible-local
EOF
}

ensure_pki() {
  mkdir -p "$LAB/pki" "$LAB/etc"
  (cd "$LAB/pki"
   umask 077
   if [ ! -f ca.crt ]; then
     openssl genrsa -out ca.key 2048 2>/dev/null
     openssl req -x509 -new -nodes -key ca.key -sha256 -days 3650 -subj "/CN=crucible-local-ca" -out ca.crt
   fi
   if [ ! -f sa.pub ]; then
     openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
   fi
   cert apiserver kube-apiserver "" "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1,IP:$NODE_IP" server
   cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "" client
   cert admin admin system:masters "" client
   cert controller-manager system:kube-controller-manager "" "" client
   cert scheduler system:kube-scheduler "" "" client
   cert kubelet-client "system:node:$NODE" system:nodes "" client
   cert kubelet-server "$NODE" "" "DNS:$NODE,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP" server)
  kubeconfig_file "$KUBECONFIG_PATH" admin admin
  kubeconfig_file "$LAB/etc/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  kubeconfig_file "$LAB/etc/scheduler.kubeconfig" system:kube-scheduler scheduler
  kubeconfig_file "$LAB/etc/kubelet.kubeconfig" "system:node:$NODE" kubelet-client
}

# up, step 6: containerd, CNI and kubelet configuration, runsc wrapper
write_configs() {
  mkdir -p "$LAB/etc" "$LAB/bin" "$LAB/cni/net.d" "$LAB/cni/ipam" "$LAB/containerd" "$LAB/kubelet" \
           "$LAB/data"
  install -m 0755 "$SCRIPT_DIR/runsc-wrapper" "$LAB/bin/runsc-wrapper"
  ln -sfn runsc-wrapper "$LAB/bin/runsc-wrapper-net"
  ln -sfn "$RUNSC_DIR/usr/bin/runsc" "$LAB/bin/runsc"   # the runsc the wrapper runs
  cat >"$LAB/etc/containerd.toml" <<EOF
version = 4
root = "$LAB/containerd/root"
state = "$CTRD_STATE"
[grpc]
  address = "$CTRD_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$LAB/containerd/opt"    # default /opt/containerd
[plugins."io.containerd.nri.v1.nri"]
  disable = true                  # nothing uses NRI; it would create /var/run/nri on the host
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$PAUSE_IMAGE"
[plugins."io.containerd.cri.v1.runtime"]
  # GOTCHA: this VM's root lacks CAP_SYS_RESOURCE, so runc cannot set the negative
  # oom_score_adj CRI asks for (-998): "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "/usr/bin/runc"
    # gVisor through the stock runc v2 shim; runsc flags and fixes in runsc-wrapper
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runsc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runsc.options]
        BinaryName = "$LAB/bin/runsc-wrapper"
        Root = "$CTRD_STATE/runsc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runsc-net]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runsc-net.options]
        BinaryName = "$LAB/bin/runsc-wrapper-net"
        Root = "$CTRD_STATE/runsc-net"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$LAB/cni/net.d"
EOF
  # bridge CNI: no masquerade and no default route in the pods, so pods reach only 10.88.0.0/24
  # and, through the node (kube-proxy's DNAT, daemons.sh), Services' cluster IPs, which lead
  # back to pods. NetworkPolicy is kube-router's firewall (daemons.sh), not the CNI's.
  cat >"$LAB/cni/net.d/10-crucible.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "crucible",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "$SVC_CIDR"}],
        "dataDir": "$LAB/cni/ipam"
      }
    }
  ]
}
EOF
  # kube-proxy: Services' dataplane (iptables mode; no IPVS in this kernel). It changes no host
  # setting: conntrack limits and timeouts at 0 leave the kernel's, no localhost NodePorts (which
  # would set route_localnet), NodePorts only on the bridge address. Its chains go with `down`.
  cat >"$LAB/etc/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$KUBECONFIG_PATH"}
hostnameOverride: $NODE
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s, udpTimeout: 0s, udpStreamTimeout: 0s}
EOF
  cat >"$LAB/etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $LAB/pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
# the host is cgroup v1 (hybrid), which kubelet 1.35+ refuses unless told otherwise
failCgroupV1: false
containerRuntimeEndpoint: unix://$CTRD_SOCK
runtimeRequestTimeout: 5m
failSwapOn: false
tlsCertFile: $LAB/pki/kubelet-server.crt
tlsPrivateKeyFile: $LAB/pki/kubelet-server.key
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
address: $NODE_IP
podCIDR: $POD_CIDR
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# no KUBE-MARK/KUBE-FIREWALL chains in the host's iptables (there is no kube-proxy anyway)
makeIPTablesUtilChains: false
evictionHard: {memory.available: "200Mi", nodefs.available: "5%", imagefs.available: "5%"}
# no image garbage collection: the images are imported from the cache and cannot be pulled
# again, so removing one at 85% disk (a build or the battery's disk bomb) fails every later pod
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# volume usage measured every 10 s, not every minute: a pod over its ephemeral-storage limit
# (the attack battery's disk bomb, 90 s timeout) is evicted within seconds, not near its deadline
volumeStatsAggPeriod: 10s
# the first status after registration is NotReady; post the change sooner than every 10 s
nodeStatusUpdateFrequency: 4s
EOF
}
