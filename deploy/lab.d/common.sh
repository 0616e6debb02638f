# shellcheck shell=bash
# Naming, addressing, logging and namespace entry for one lab (one prefix).
# Sourced by deploy/lab; every other lab.d file relies on these names.

LAB_ROOT=/var/lib/baton-lab          # per-prefix state lives below (ns files, disks, logs)
CACHE=/var/cache/baton-lab           # shared by all prefixes: guest image, QEMU caps, kernel .deb
NATS_PORT_DEFAULT=4222
LIBVIRT_DIRS=(etc-libvirt:/etc/libvirt run-libvirt:/run/libvirt var-lib-libvirt:/var/lib/libvirt
              log-libvirt:/var/log/libvirt cache-libvirt:/var/cache/libvirt)

log() { printf '[lab %s] %s\n' "$PREFIX" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
elapsed_since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

# init_lab PREFIX: set every per-lab name. The subnet is remembered in the
# state dir, so a lab keeps its addresses whatever the caller's environment.
init_lab() {
    PREFIX=$1
    [[ $PREFIX =~ ^[a-z][a-z0-9]{0,7}$ ]] ||
        die "prefix '$PREFIX' must be 1-8 chars [a-z0-9], starting with a letter (interface names are <= 15 chars)"
    STATE=$LAB_ROOT/$PREFIX
    NSDIR=$STATE/ns
    RUNDIR=$STATE/run
    LOGDIR=$STATE/log
    NATS_KEYS=$STATE/nats/keys
    LAB_TLS=$STATE/tls
    SHARED=$STATE/shared
    SHARED_DATA=$STATE/shared.data
    BRIDGE=${PREFIX}br0
    NET=$(lab_subnet)
    BRIDGE_IP=$NET.254
    NATS_PORT=$(saved_setting NATS_PORT "${BATON_LAB_NATS_PORT:-$NATS_PORT_DEFAULT}")
    NATS_NODES=$(saved_setting NATS_NODES 1) # `up --nats N` sets it when the lab is made
}

saved_setting() { # KEY DEFAULT: value from $STATE/lab.env if the lab exists
    local v=""
    [[ -f $STATE/lab.env ]] && v=$(sed -n "s/^$1=//p" "$STATE/lab.env")
    echo "${v:-$2}"
}

# lab_subnet: first three octets. `lab` gets 10.77.0 (the recipe's layout);
# other prefixes get 10.77.X with X from a hash of the prefix, unless
# BATON_LAB_SUBNET (e.g. 10.77.9 or 10.77.9.0/24) says otherwise.
lab_subnet() {
    local s
    s=$(saved_setting SUBNET "${BATON_LAB_SUBNET:-}")
    if [[ -n $s ]]; then
        [[ $s =~ ^([0-9]+\.[0-9]+\.[0-9]+)(\.0(/24)?)?$ ]] || die "bad BATON_LAB_SUBNET '$s' (want A.B.C or A.B.C.0/24)"
        echo "${BASH_REMATCH[1]}"
    elif [[ $PREFIX == lab ]]; then
        echo 10.77.0
    else
        echo "10.77.$(($(printf '%s' "$PREFIX" | cksum | cut -d' ' -f1) % 250 + 1))"
    fi
}

save_settings() {
    mkdir -p "$STATE"
    printf 'SUBNET=%s\nNATS_PORT=%s\nNATS_NODES=%s\n' "$NET" "$NATS_PORT" "$NATS_NODES" >"$STATE/lab.env"
}

# host_num hN|N -> N
host_num() {
    local n=${1#h}
    if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > 200)); then die "bad host '$1' (expected h1..h200)"; fi
    echo "$n"
}
netns_name() { echo "$PREFIX-h$1"; }
netns_path() { echo "/run/netns/$PREFIX-h$1"; }
veth_name() { echo "${PREFIX}v$1"; }
host_ip() { echo "$NET.$1"; }
host_dir() { echo "$STATE/hosts/h$1"; }
host_uri() { echo "qemu+tls://$NET.$1/system?pkipath=$LAB_TLS/libvirt-client"; }
# NATS node K of $NATS_NODES: its process name, client port and route port. One node is
# `nats` on $NATS_PORT; a cluster's are nats-1..nats-N on consecutive ports, routes 1000 above.
nats_names() {
    local k
    if ((NATS_NODES == 1)); then echo nats; else for ((k = 1; k <= NATS_NODES; k++)); do echo "nats-$k"; done; fi
}
nats_node_port() { echo $((NATS_PORT + $1 - 1)); }
nats_route_port() { echo $((NATS_PORT + 1000 + $1 - 1)); }
# TLS once the lab's CA exists (deploy/lab up makes it before it starts nats-server); every
# node's URL, comma-separated (the clients move to another when theirs goes down).
nats_url() {
    local k scheme=nats urls=()
    [[ -s $LAB_TLS/ca.pem ]] && scheme=tls
    for ((k = 1; k <= NATS_NODES; k++)); do urls+=("$scheme://$BRIDGE_IP:$(nats_node_port "$k")"); done
    local IFS=,
    echo "${urls[*]}"
}
# nats_env ROLE / nats_flags ROLE: how a process of that role reaches the lab's NATS.
nats_env() {
    echo "BATON_NATS=$(nats_url)"
    [[ -s $NATS_KEYS/$1.nk ]] && echo "BATON_NATS_NKEY=$NATS_KEYS/$1.nk"
    [[ -s $LAB_TLS/ca.pem ]] && echo "BATON_NATS_CA=$LAB_TLS/ca.pem"
    return 0
}
nats_flags() {
    echo "--nats $(nats_url)"
    [[ -s $NATS_KEYS/$1.nk ]] && echo "--nats-nkey $NATS_KEYS/$1.nk"
    [[ -s $LAB_TLS/ca.pem ]] && echo "--nats-ca $LAB_TLS/ca.pem"
    return 0
}

# host_uuid N: stable per (prefix, host), different across prefixes. libvirt
# refuses to migrate between daemons with the same host UUID.
host_uuid() {
    local h
    h=$(printf 'baton-lab:%s:h%s' "$PREFIX" "$1" | md5sum | cut -c1-32)
    echo "${h:0:8}-${h:8:4}-4${h:13:3}-8${h:17:3}-${h:20:12}"
}

# Hosts this lab has, in any state (used by down/status/console).
known_hosts() {
    {
        [[ -d $STATE/hosts ]] && find "$STATE/hosts" -mindepth 1 -maxdepth 1 -name 'h*' -printf '%f\n'
        [[ -d $NSDIR ]] && find "$NSDIR" -maxdepth 1 -name 'h*.*' -printf '%f\n' | cut -d. -f1
        ip netns list 2>/dev/null | awk '{print $1}' | sed -n "s/^$PREFIX-\(h[0-9]\+\)\$/\1/p"
    } | sed 's/^h//' | grep -E '^[0-9]+$' | sort -nu
}

is_nsfs() { [[ -e $1 ]] && [[ $(stat -f -c %T "$1" 2>/dev/null) == nsfs ]]; }
host_ns_ready() {
    is_nsfs "$(netns_path "$1")" && is_nsfs "$NSDIR/h$1.mnt" && is_nsfs "$NSDIR/h$1.uts"
}

# hexec N CMD...: run CMD in host N's net+mount+uts namespaces, keeping the
# caller's working directory; nsenter execs, so the exit code passes through.
hexec() {
    local n=$1
    shift
    host_ns_ready "$n" || die "host h$n is not up (no namespaces)"
    nsenter_argv "$n"
    "${NSENTER[@]}" --wd="$PWD" -- "$@"
}

nsenter_argv() { # N: sets NSENTER, the command prefix that enters host N
    NSENTER=(nsenter --net="$(netns_path "$1")" --mount="$NSDIR/h$1.mnt" --uts="$NSDIR/h$1.uts")
}

hvirsh() { # N ARGS...: virsh against host N's own daemon, from inside the host
    local n=$1
    shift
    hexec "$n" virsh -q -c qemu:///system "$@"
}

# Pid files hold "PID STARTTIME" so a recycled pid is never mistaken for ours.
proc_starttime() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }
write_pidfile() { echo "$2 $(proc_starttime "$2")" >"$1"; }
pidfile_alive() { # FILE -> prints pid if that exact process still runs
    local pid st
    [[ -f $1 ]] || return 1
    read -r pid st <"$1" || return 1
    [[ -n $pid && -d /proc/$pid && $(proc_starttime "$pid") == "$st" ]] && echo "$pid"
}

# kill_pids PID...: TERM, wait up to 10 s, then KILL what is left.
kill_pids() {
    (($#)) || return 0
    kill -TERM "$@" 2>/dev/null || true
    local i alive
    for ((i = 0; i < 100; i++)); do
        alive=()
        for p in "$@"; do [[ -d /proc/$p ]] && alive+=("$p"); done
        ((${#alive[@]})) || return 0
        sleep 0.1
    done
    log "killing (SIGKILL) ${alive[*]}"
    kill -KILL "${alive[@]}" 2>/dev/null || true
}

# start_daemon PIDFILE LOG CMD...: detached (own session, no inherited stdio,
# so callers that capture our output are not held open) and recorded by pid.
start_daemon() {
    local pidfile=$1 logfile=$2
    shift 2
    setsid "$@" </dev/null >>"$logfile" 2>&1 &
    write_pidfile "$pidfile" $!
}

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.2 s.
wait_for() {
    local timeout=$1 what=$2
    local deadline=$((SECONDS + timeout))
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what"
        sleep 0.2
    done
}
