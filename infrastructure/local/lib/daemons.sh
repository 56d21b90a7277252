# shellcheck shell=bash
# lib/daemons.sh - sourced by cluster.sh: starting and stopping the daemons and the pods, and
# the subcommands up, down, status, logs and env.

start_daemon() {   # start_daemon NAME ARGS...
  local name=$1 bin; bin=$(bin_of "$1"); shift
  if alive "$name"; then log "$name already running (pid $(cat "$RUN/$name.pid"))"; return 0; fi
  # In a script (no job control) a background job is not a process-group leader, so setsid
  # does not fork and $! is the daemon's pid.
  setsid "$bin" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
  log "started $name (pid $!)"
}

stop_pid() {   # stop_pid PID LABEL: SIGTERM, wait up to 20 s, then SIGKILL
  local pid=$1 label=$2 deadline
  kill "$pid" 2>/dev/null || return 0
  deadline=$(( $(date +%s) + 20 ))
  while [ -d "/proc/$pid" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
  if [ -d "/proc/$pid" ]; then kill -9 "$pid" 2>/dev/null || true; log "killed $label ($pid)"
  else log "stopped $label ($pid)"; fi
}

stop_daemon() {
  local pid
  if pid=$(daemon_pid "$1"); then stop_pid "$pid" "$1"; fi
  rm -f "$RUN/$1.pid"
}

node_ready() {
  [ "$(kc get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

cmd_up() {
  need_root
  local t0=$SECONDS kubelet_started=0
  ensure_packages
  ensure_runsc
  ensure_binaries
  ensure_tool kube-router
  ensure_images
  record_host
  ensure_pki
  write_configs
  prepare_host

  start_daemon etcd --name crucible --data-dir "$LAB/data/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster crucible=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381
  if ! alive containerd && [ -S "$CTRD_SOCK" ] && ctr_ version >/dev/null 2>&1; then
    die "another containerd already serves $CTRD_SOCK; stop it first"
  fi
  # containerd finds containerd-shim-runc-v2 on PATH
  PATH="$CTRD_BIN:$PATH" start_daemon containerd --config "$LAB/etc/containerd.toml"
  wait_for etcd 30 curl -sf http://127.0.0.1:2379/health
  wait_for containerd 30 ctr_ version

  start_daemon kube-apiserver \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=127.0.0.1 --secure-port=6443 --advertise-address="$NODE_IP" \
    --tls-cert-file="$LAB/pki/apiserver.crt" --tls-private-key-file="$LAB/pki/apiserver.key" \
    --client-ca-file="$LAB/pki/ca.crt" \
    --service-account-key-file="$LAB/pki/sa.pub" --service-account-signing-key-file="$LAB/pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$SVC_CIDR" --authorization-mode=Node,RBAC --allow-privileged=true \
    --kubelet-client-certificate="$LAB/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$LAB/pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,Hostname --v=1
  # pause, python and agent images: needed before kubelet creates pods (imagePullPolicy Never)
  import_if_missing "$PAUSE_IMAGE" "$IMAGES/pause-k8s-$K8S_VERSION.tar"
  import_if_missing "$PY_IMAGE" "$IMAGES/python.tar"
  import_if_missing "$AGENT_IMAGE" "$IMAGES/python-openai-$OPENAI_VERSION.tar"
  wait_for kube-apiserver 120 kc get --raw /readyz

  start_daemon kube-controller-manager \
    --kubeconfig="$LAB/etc/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$LAB/etc/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$LAB/etc/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$LAB/pki/sa.key" --root-ca-file="$LAB/pki/ca.crt" \
    --cluster-signing-cert-file="$LAB/pki/ca.crt" --cluster-signing-key-file="$LAB/pki/ca.key" \
    --service-cluster-ip-range="$SVC_CIDR" --cluster-name=crucible-local --v=1
  start_daemon kube-scheduler \
    --kubeconfig="$LAB/etc/scheduler.kubeconfig" \
    --authentication-kubeconfig="$LAB/etc/scheduler.kubeconfig" \
    --authorization-kubeconfig="$LAB/etc/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --v=1

  alive kubelet || kubelet_started=1
  start_daemon kubelet --config="$LAB/etc/kubelet.yaml" --kubeconfig="$LAB/etc/kubelet.kubeconfig" \
    --hostname-override="$NODE" --node-ip="$NODE_IP" --root-dir="$LAB/kubelet" --v=1
  # GOTCHA: after a restart the Node object still says Ready from before: wait for healthz first
  wait_for "kubelet healthz" 60 curl -sf http://127.0.0.1:10248/healthz
  # GOTCHA: kubelet rewrites kernel.panic, kernel.panic_on_oops, vm.overcommit_memory (and
  # checks a few more) a few seconds after it reports healthy. Wait for that, then put the
  # host's own values back (kubelet does it only once, at start-up).
  if [ "$kubelet_started" = 1 ]; then
    wait_for "kubelet's kernel tunables" 60 kubelet_sysctls_applied \
      || log "WARNING: kubelet did not apply its sysctls in time; restoring anyway"
  fi
  restore_sysctls
  wait_for "node $NODE Ready" 120 node_ready
  # NetworkPolicy: kube-router's firewall only (the bridge CNI does the pod network, there is no
  # service proxy), as a host process with the admin kubeconfig; iptables + ipset, br_netfilter
  start_daemon kube-router --run-firewall=true --run-router=false --run-service-proxy=false \
    --kubeconfig="$KUBECONFIG_PATH" --hostname-override="$NODE" --health-port=0 --v=1
  wait_for "kube-router's firewall chains" 60 iptables -w 5 -n -L KUBE-ROUTER-FORWARD
  # Services: kube-proxy (iptables mode) as a host process with the admin kubeconfig, as above
  start_daemon kube-proxy --config="$LAB/etc/kube-proxy.yaml" --v=1
  wait_for "kube-proxy's service chains" 60 iptables -w 5 -t nat -n -L KUBE-SERVICES
  kc apply -f "$INFRA_DIR/runtimeclasses.yaml" >/dev/null
  wait_for "service account default/default" 60 kc -n default get serviceaccount default
  log "cluster up in $((SECONDS - t0))s. Use: eval \"\$($0 env)\"; kubectl get nodes"
}

kubepods_pids() {   # processes in the kubepods cgroups kubelet created (pods: pause, apps, runsc)
  [ -d /sys/fs/cgroup/pids/kubepods ] || return 0
  find /sys/fs/cgroup/pids/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un
}

stop_pods() {
  # 1. through containerd, while it runs: SIGKILL every task of the k8s.io namespace
  if alive containerd; then
    local tasks t deadline
    tasks=$(ctr_ -n k8s.io tasks ls -q 2>/dev/null || true)
    if [ -n "$tasks" ]; then
      log "killing $(wc -w <<<"$tasks") pod task(s)"
      for t in $tasks; do ctr_ -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
      deadline=$(( $(date +%s) + 15 ))
      while ctr_ -n k8s.io tasks ls 2>/dev/null | awk 'NR > 1 && $3 != "STOPPED"' | grep -q . \
            && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
      for t in $tasks; do ctr_ -n k8s.io tasks delete -f "$t" >/dev/null 2>&1 || true; done
    fi
  fi
}

kill_leftovers() {   # shims, runsc sandboxes/gofers/wrapper helpers, anything left in kubepods
  # shellcheck disable=SC2046
  kill_pids "containerd shim" $(pids_matching "-address $CTRD_SOCK")
  # shellcheck disable=SC2046
  kill_pids runsc $(pids_matching " $CTRD_STATE/runsc") $(pids_matching "=$CTRD_STATE/runsc")
  # shellcheck disable=SC2046
  kill_pids "pod" $(kubepods_pids)
}

cmd_down() {
  need_root
  local t0=$SECONDS c
  if ! ever_started; then
    for c in "${COMPONENTS[@]}"; do
      alive "$c" && die "$c is running but $RUN/host.recorded is missing; refusing to guess"
    done
    log "nothing to stop ($LAB has no recorded cluster)"
    return 0
  fi
  stop_daemon kube-proxy    # its iptables chains go with restore_host
  stop_daemon kube-router   # its iptables chains and ipsets go with restore_host
  stop_daemon kubelet
  stop_pods
  stop_daemon kube-scheduler
  stop_daemon kube-controller-manager
  stop_daemon kube-apiserver
  stop_daemon containerd
  kill_leftovers
  stop_daemon etcd
  restore_host
  # runtime state
  if [ -n "$(mounts_under "$LAB")" ]; then
    die "mounts left under $LAB, not removing it: $(mounts_under "$LAB" | tr '\n' ' ')"
  fi
  [ -f "$LAB/.crucible-local" ] || die "$LAB is not marked as a crucible-local state dir; not removing it"
  rm -rf --one-file-system "$LAB"
  log "cluster down in $((SECONDS - t0))s (cache kept in $CACHE)"
}

cmd_status() {
  local c pid rc=0 ready
  for c in "${COMPONENTS[@]}"; do
    if pid=$(daemon_pid "$c"); then
      printf '%-24s running  pid %-8s rss %s kB\n' "$c" "$pid" "$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")"
    else
      printf '%-24s stopped\n' "$c"; rc=1
    fi
  done
  if alive kube-apiserver && [ -x "$KUBECTL" ]; then
    ready=$(kc get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
  fi
  case "${ready:-}" in
    True) printf '%-24s Ready\n' "node/$NODE" ;;
    "") printf '%-24s unknown\n' "node/$NODE"; rc=1 ;;
    *) printf '%-24s NotReady\n' "node/$NODE"; rc=1 ;;
  esac
  return $rc
}

cmd_logs() {
  local c lines=${LINES:-50}
  if [ $# -gt 0 ]; then
    [ -f "$LOGS/$1.log" ] || die "no log for '$1' (components: ${COMPONENTS[*]})"
    tail -n "$lines" "$LOGS/$1.log"; return 0
  fi
  for c in "${COMPONENTS[@]}"; do
    [ -f "$LOGS/$c.log" ] || continue
    echo "==> $LOGS/$c.log <=="; tail -n "$lines" "$LOGS/$c.log"; echo
  done
}

print_env() {
  # shellcheck disable=SC2016  # $PATH is expanded later, by the caller's eval
  printf 'export KUBECONFIG=%q; export PATH=%q:$PATH\n' "$KUBECONFIG_PATH" "$BIN"
}
