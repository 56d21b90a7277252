# shellcheck shell=bash
# lib/host.sh - sourced by cluster.sh: what `up` changes on the host outside $LAB (sysctls,
# iptables chains, host paths, mounts, the bridge), recorded before the first change and
# restored by `down`.

# sysctls kubelet rewrites at start-up (kernel.panic=10, kernel.panic_on_oops=1,
# vm.overcommit_memory=1, ...) plus the forwarding switches the bridge CNI plugin turns on.
# Their values before the first `up` are recorded in $RUN/sysctl.orig and restored.
KUBELET_SYSCTLS=(vm.overcommit_memory=1 vm.panic_on_oom=0 kernel.panic=10 kernel.panic_on_oops=1
                 kernel.keys.root_maxkeys=1000000 kernel.keys.root_maxbytes=25000000)
CNI_SYSCTLS=(net.ipv4.ip_forward net.ipv6.conf.all.forwarding)
# host paths kubelet/containerd/CNI create outside $LAB; removed by `down` unless they existed
# (kubelet hard-codes /var/log/pods and /var/lib/kubelet/device-plugins; libcni caches in
# /var/lib/cni; mount(8) keeps /run/mount/utab)
# Pod-to-pod traffic crosses the bridge without reaching iptables unless br_netfilter passes
# it there: kube-router's NetworkPolicy firewall needs it on.
BRIDGE_NF=net.bridge.bridge-nf-call-iptables
HOST_PATHS=(/run/containerd /run/netns /run/mount /var/log/pods /var/log/containers /var/lib/cni
            /var/lib/kubelet)

# up, step 7: host preparation. Everything `down` has to undo is recorded first, once.
record_host() {
  mkdir -p "$RUN" "$LOGS"
  touch "$LAB/.crucible-local"   # marks $LAB as ours for `down`'s rm -rf
  [ -f "$RUN/host.recorded" ] && return 0
  local s p
  : >"$RUN/sysctl.orig"
  for s in "${KUBELET_SYSCTLS[@]%%=*}" "${CNI_SYSCTLS[@]}"; do
    [ -e "/proc/sys/${s//.//}" ] && echo "$s=$(sysctl -n "$s")" >>"$RUN/sysctl.orig"
  done
  : >"$RUN/paths.preexisting"
  for p in "${HOST_PATHS[@]}" /sys/fs/cgroup/*/kubepods; do
    [ -e "$p" ] && echo "$p" >>"$RUN/paths.preexisting"
  done
  if command -v iptables-save >/dev/null; then
    iptables-save 2>/dev/null | awk '/^\*/{t=substr($1,2)} /^:/{print t, substr($1,2)}' >"$RUN/iptables.chains" || true
  fi
  ipset list -n >"$RUN/ipsets" 2>/dev/null || true
  # kept apart from sysctl.orig: `up` puts those back while the cluster runs, this one must stay on
  echo "$BRIDGE_NF=$(sysctl -n "$BRIDGE_NF")" >"$RUN/bridge-nf.orig"
  touch "$RUN/host.recorded"
  log "recorded host settings in $RUN ($(tr '\n' ' ' <"$RUN/sysctl.orig"))"
}

prepare_host() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    touch "$RUN/bridge.created"
  fi
  # Read first, then match: under pipefail, `ip … | grep -q` fails when grep exits before ip has
  # written, and the address would be added twice ("Address already assigned").
  case "$(ip addr show dev "$BRIDGE")" in
    *"inet $NODE_IP/"*) ;;
    *) ip addr add "$NODE_IP/24" dev "$BRIDGE" ;;
  esac
  ip link set "$BRIDGE" up
  [ -e /proc/sys/net/bridge ] || die "no /proc/sys/net/bridge: the kernel lacks br_netfilter (CONFIG_BRIDGE_NETFILTER), which kube-router's firewall needs"
  sysctl -qw "$BRIDGE_NF=1"
  # GOTCHA: `ip netns add` (also run by `runsc do`) turns /run/netns into a shared self-bind
  # mount the first time it runs; if CNI netns files are mounted by then, containerd cannot
  # unmount them any more and pods hang in Terminating. Make the self-bind now, while empty.
  mkdir -p /run/netns
  if ! mountpoint -q /run/netns && [ -z "$(ls -A /run/netns)" ]; then
    mount --bind /run/netns /run/netns
    mount --make-shared /run/netns
    touch "$RUN/netns.bound"
  fi
}

restore_sysctls() {   # write back the recorded values that differ now
  local kv s v
  [ -f "$RUN/sysctl.orig" ] || return 0
  while IFS= read -r kv; do
    s=${kv%%=*}; v=${kv#*=}
    if [ "$(sysctl -n "$s" 2>/dev/null)" != "$v" ]; then
      sysctl -qw "$s=$v" && log "restored $s=$v"
    fi
  done <"$RUN/sysctl.orig"
}

kubelet_sysctls_applied() {
  local kv
  for kv in "${KUBELET_SYSCTLS[@]}"; do
    [ "$(sysctl -n "${kv%%=*}")" = "${kv#*=}" ] || return 1
  done
}

mounts_under() {   # mount points at or below $1, in mount order
  awk -v p="$1" '$2 == p || index($2, p "/") == 1 {print $2}' /proc/mounts
}

umount_under() {   # unmount everything mounted at or below $1, innermost first
  local m
  mounts_under "$1" | tac | while read -r m; do
    m=$(printf '%b' "$m")   # /proc/mounts escapes blanks as \040
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "WARNING: cannot unmount $m"
  done
}

cleanup_ipsets() {   # destroy the ipsets kube-router created (after the iptables rules using them)
  command -v ipset >/dev/null || return 0
  local s new=""
  for s in $(ipset list -n 2>/dev/null); do
    grep -qxF "$s" "$RUN/ipsets" 2>/dev/null || new+=" $s"
  done
  [ -n "$new" ] || return 0
  for s in $new; do ipset destroy "$s" 2>/dev/null || log "WARNING: ipset $s not destroyed"; done
  log "destroyed ipsets:$new"
}

ever_started() { [ -f "$RUN/host.recorded" ]; }

preexisting() { grep -qxF "$1" "$RUN/paths.preexisting" 2>/dev/null; }

cleanup_iptables() {   # remove KUBE-*/CNI-* chains that did not exist before `up`
  command -v iptables >/dev/null || return 0
  local t ch new
  for t in filter nat mangle; do
    new=$(iptables -t "$t" -S 2>/dev/null | awk '$1 == "-N" {print $2}' | grep -E '^(KUBE|CNI)-' \
          | while read -r ch; do grep -qxF "$t $ch" "$RUN/iptables.chains" 2>/dev/null || echo "$ch"; done) || true
    [ -n "$new" ] || continue
    new=$(tr '\n' ' ' <<<"$new")
    for ch in $(iptables -t "$t" -S | awk '$1 == "-P" || $1 == "-N" {print $2}'); do
      iptables -t "$t" -L "$ch" -n --line-numbers | awk -v new=" $new " 'NR > 2 && index(new, " " $2 " ") {print $1}' \
        | sort -rn | while read -r n; do iptables -t "$t" -D "$ch" "$n"; done
    done
    for ch in $new; do iptables -t "$t" -F "$ch"; done
    for ch in $new; do iptables -t "$t" -X "$ch"; done
    log "removed iptables chains ($t): $new"
  done
}

# everything `down` restores once the daemons are gone (from the record of record_host)
restore_host() {
  # mounts: pod network namespaces, container rootfs/shm, kubelet volumes
  local ns
  for ns in /run/netns/cni-*; do
    if mountpoint -q "$ns"; then umount "$ns" 2>/dev/null || umount -l "$ns"; fi
    rm -f "$ns"
  done
  umount_under "$CTRD_STATE"
  umount_under "$LAB"
  if [ -f "$RUN/netns.bound" ]; then umount /run/netns 2>/dev/null || umount -l /run/netns; fi
  # network: CNI veths still on the bridge, the bridge, iptables chains
  local ifc
  for ifc in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link delete "$ifc" 2>/dev/null || true
  done
  if [ -f "$RUN/bridge.created" ] && ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link delete "$BRIDGE"; log "deleted bridge $BRIDGE"
  fi
  cleanup_iptables
  cleanup_ipsets
  restore_sysctls
  if [ -f "$RUN/bridge-nf.orig" ]; then sysctl -qw "$(cat "$RUN/bridge-nf.orig")"; fi
  # cgroups kubelet created (cgroupfs driver): /sys/fs/cgroup/*/kubepods
  local cg
  for cg in /sys/fs/cgroup/*/kubepods; do
    if [ ! -d "$cg" ] || preexisting "$cg"; then continue; fi
    find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || log "WARNING: could not remove all of $cg"
  done
  # host paths created by containerd/kubelet/CNI
  local p
  for p in "${HOST_PATHS[@]}"; do
    if [ ! -e "$p" ] || preexisting "$p"; then continue; fi
    if [ -n "$(mounts_under "$p")" ]; then log "WARNING: $p still has mounts, left in place"; continue; fi
    rm -rf --one-file-system "$p"
  done
}
