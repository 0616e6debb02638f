# shellcheck shell=bash
# `lab down` and partial-host cleanup. Works from any partial state (a killed
# `up`, crashed daemons) and is idempotent. Processes are found by pid file or
# by namespace membership, never by name.

# ns_member_pids INODE KIND: pids whose /proc/PID/ns/KIND is that namespace.
ns_member_pids() {
    stat -L -c '%i %n' /proc/[0-9]*/ns/"$2" 2>/dev/null |
        awk -v ino="$1" -v self="$$" -v me="$BASHPID" \
            '$1 == ino { split($2, a, "/"); if (a[3] != self && a[3] != me) print a[3] }'
}

# host_pids N: everything running in host N (libvirtd, QEMU, agents, execs).
host_pids() {
    local n=$1 f kind
    for f in "$(netns_path "$n"):net" "$NSDIR/h$n.mnt:mnt"; do
        kind=${f##*:}
        f=${f%:*}
        is_nsfs "$f" && ns_member_pids "$(stat -L -c %i "$f")" "$kind"
    done | sort -u
}

teardown_hosts() {
    local n pids=()
    for n in "$@"; do
        mapfile -t -O "${#pids[@]}" pids < <(host_pids "$n")
    done
    ((${#pids[@]})) && log "stopping ${#pids[@]} processes in hosts: ${pids[*]}"
    kill_pids "${pids[@]}"
    for n in "$@"; do
        umount "$NSDIR/h$n.mnt" "$NSDIR/h$n.uts" 2>/dev/null || true
        rm -f "$NSDIR/h$n.mnt" "$NSDIR/h$n.uts"
        ip netns del "$(netns_name "$n")" 2>/dev/null || true
        ip link del "$(veth_name "$n")" 2>/dev/null || true
        rm -rf "$(host_dir "$n")"
    done
}

unmount_shared() {
    if findmnt -n --mountpoint "$SHARED" >/dev/null 2>&1; then
        umount "$SHARED" 2>/dev/null || umount -l "$SHARED"
    fi
    local pid
    pid=$(pidfile_alive "$RUNDIR/bindfs.pid") && kill_pids "$pid"
    rm -f "$RUNDIR/bindfs.pid"
}

# Anything still mounted below the state dir (deepest first), so rm -rf never
# walks into a mount.
unmount_below_state() {
    local m
    { findmnt -rn -o TARGET | grep "^$STATE/" || true; } | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
}

# `ip netns add` turns /run/netns into a bind mount of itself. Undo that only
# when no namespace at all is left (another lab or tool may still use it).
release_run_netns() {
    [[ -z $(ls -A /run/netns 2>/dev/null) ]] || return 0
    findmnt -n --mountpoint /run/netns >/dev/null 2>&1 || return 0
    umount /run/netns 2>/dev/null || true
}

cmd_down() {
    local t0 hosts
    t0=$(now)
    stop_stack
    mapfile -t hosts < <(known_hosts)
    ((${#hosts[@]})) && teardown_hosts "${hosts[@]}"
    ip link del "$BRIDGE" 2>/dev/null || true
    release_run_netns
    unmount_shared
    unmount_below_state
    if findmnt -rn -o TARGET | grep -q "^$STATE\(/\|$\)"; then
        die "mounts remain under $STATE; not removing it"
    fi
    rm -rf "$STATE"
    log "down in $(elapsed_since "$t0") s"
}
