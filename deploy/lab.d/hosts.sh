# shellcheck shell=bash
# Building hosts: root bridge, shared FUSE storage, per-host namespaces,
# per-host libvirtd, storage pools and the guest bridge br-vm.

POOLS=(default:/var/lib/libvirt/images slow:/var/lib/libvirt/pools/slow
       fast:/var/lib/libvirt/pools/fast)

# --- root namespace -------------------------------------------------------

ensure_bridge() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        subnet_in_use && die "subnet $NET.0/24 is already used by another interface; set BATON_LAB_SUBNET"
        ip link add "$BRIDGE" type bridge
        ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
    fi
    ip link set "$BRIDGE" up
}

subnet_in_use() { ip -4 -o addr show | awk '{print $4}' | grep -q "^${NET//./\\.}\."; }

# The shared dir is a bindfs FUSE mount with subtype glusterfs: libvirt 9.0
# counts fuse.glusterfs as shared storage, so migrations need no --unsafe.
# It is mounted before any host namespace exists, so every host inherits it
# at the same path.
shared_mounted() { [[ $(findmnt -n -o FSTYPE --mountpoint "$SHARED" 2>/dev/null) == fuse.glusterfs ]]; }

ensure_shared() {
    shared_mounted && return 0
    mkdir -p "$SHARED" "$SHARED_DATA"
    start_daemon "$RUNDIR/bindfs.pid" "$LOGDIR/bindfs.log" \
        bindfs -f -o subtype=glusterfs "$SHARED_DATA" "$SHARED"
    wait_for 10 "shared FUSE mount" shared_mounted
}

# unshare --mount=FILE needs FILE on a non-shared mount: make the ns dir its
# own private bind mount, whatever the propagation of / is.
ensure_nsdir() {
    mkdir -p "$NSDIR"
    if ! findmnt -n --mountpoint "$NSDIR" >/dev/null; then
        mount --bind "$NSDIR" "$NSDIR"
    fi
    mount --make-private "$NSDIR"
}

# --- one host ---------------------------------------------------------------

host_complete() {
    host_ns_ready "$1" && ip link show "$(veth_name "$1")" >/dev/null 2>&1
}

ensure_host() {
    local n=$1
    host_complete "$n" && return 0
    known_hosts | grep -qx "$n" && teardown_hosts "$n" # half-built: start over
    make_host_dirs "$n"
    make_netns "$n"
    make_mount_ns "$n"
}

make_netns() {
    local n=$1 ns veth
    ns=$(netns_name "$n")
    veth=$(veth_name "$n")
    ip netns add "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$BRIDGE" up
    ip -n "$ns" addr add "$(host_ip "$n")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    # The guest bridge exists on every host but h3, so the network pre-flight
    # check has a host to refuse a VM with a NIC on br-vm.
    if ((n != 3)); then
        ip -n "$ns" link add br-vm type bridge
        ip -n "$ns" link set br-vm up
    fi
}

# The mount+UTS namespace is created from inside the netns (nsenter, not
# `ip netns exec`, which would make its own throwaway mount namespace), so the
# fresh /sys shows the host's own interfaces. Per-host dirs are bound over the
# libvirt paths; everything else (/usr, the shared mount, the repo) is common.
make_mount_ns() {
    local n=$1 hd
    hd=$(host_dir "$n")
    touch "$NSDIR/h$n.mnt" "$NSDIR/h$n.uts"
    # shellcheck disable=SC2016 # the script expands its own arguments
    nsenter --net="$(netns_path "$n")" \
        unshare --mount="$NSDIR/h$n.mnt" --uts="$NSDIR/h$n.uts" --propagation private \
        bash -euc '
            hd=$1 hostname=$2; shift 2
            umount -l /sys && mount -t sysfs sysfs /sys
            hostname "$hostname"
            for pair in "$@"; do
                mkdir -p "${pair#*:}"
                mount --bind "$hd/${pair%%:*}" "${pair#*:}"
            done
            mount --bind "$hd/hosts" /etc/hosts
        ' make-host "$hd" "$(netns_name "$n")" "${LIBVIRT_DIRS[@]}"
}

make_host_dirs() {
    local n=$1 hd
    hd=$(host_dir "$n")
    mkdir -p "$hd"/{etc-libvirt/qemu,run-libvirt,var-lib-libvirt/images,log-libvirt/qemu,cache-libvirt/qemu}
    mkdir -p "$hd/var-lib-libvirt/pools"/{slow,fast}
    cp -n /etc/libvirt/libvirt.conf /etc/libvirt/libvirt-admin.conf "$hd/etc-libvirt/" 2>/dev/null || true
    printf '127.0.0.1 localhost\n%s %s\n' "$(host_ip "$n")" "$(netns_name "$n")" >"$hd/hosts"
    make_host_pki "$n"
    write_libvirtd_conf "$n" >"$hd/etc-libvirt/libvirtd.conf"
    write_qemu_conf "$n" >"$hd/etc-libvirt/qemu.conf"
}

# TLS for libvirt and for QEMU's migration stream, from the lab CA: one certificate per host
# (server and client use: it answers libvirt/QEMU connections and opens them as a source),
# laid out under the names libvirtd (pkipath) and QEMU (x509 dir) look for.
make_host_pki() {
    local n=$1 pki
    pki=$(host_dir "$n")/pki
    "$REPO/deploy/lib/certs" "$LAB_TLS" "h$n" "IP:$(host_ip "$n")" "DNS:$(netns_name "$n")"
    mkdir -p "$pki"
    cp "$LAB_TLS/ca.pem" "$pki/cacert.pem"
    cp "$LAB_TLS/ca.pem" "$pki/ca-cert.pem"
    for role in server client; do
        cp "$LAB_TLS/h$n.pem" "$pki/${role}cert.pem"
        cp "$LAB_TLS/h$n-key.pem" "$pki/${role}key.pem"
        cp "$LAB_TLS/h$n.pem" "$pki/$role-cert.pem"
        cp "$LAB_TLS/h$n-key.pem" "$pki/$role-key.pem"
    done
}

# The root namespace's client certificate (virsh, tests, the pkipath in every host URI).
ensure_client_pki() {
    local pki=$LAB_TLS/libvirt-client
    [[ -s $pki/clientkey.pem ]] && return 0
    "$REPO/deploy/lib/certs" "$LAB_TLS" client "DNS:baton-lab-client"
    mkdir -p "$pki"
    cp "$LAB_TLS/ca.pem" "$pki/cacert.pem"
    cp "$LAB_TLS/client.pem" "$pki/clientcert.pem"
    cp "$LAB_TLS/client-key.pem" "$pki/clientkey.pem"
}

write_libvirtd_conf() {
    cat <<EOF
# Baton lab host h$1 (prefix $PREFIX). Listens inside its netns only, with TLS only:
# a client needs a certificate from the lab CA (deploy/lab uri gives the pkipath).
listen_tls = 1
listen_tcp = 0
listen_addr = "0.0.0.0"
ca_file = "$(host_dir "$1")/pki/cacert.pem"
cert_file = "$(host_dir "$1")/pki/servercert.pem"
key_file = "$(host_dir "$1")/pki/serverkey.pem"
auth_unix_rw = "none"
auth_unix_ro = "none"
unix_sock_group = "root"
host_uuid = "$(host_uuid "$1")"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
}

write_qemu_conf() {
    cat <<EOF
# Baton lab host h$1 (prefix $PREFIX).
security_driver = "none"
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
# no virtlogd: QEMU writes its log and the serial console files directly
stdio_handler = "file"
namespaces = [ ]
# all hosts share one kernel: two daemons could pick the same cgroup name
cgroup_controllers = [ ]
# all hosts share one hostname resolver: never rely on it for migration
migration_address = "$(host_ip "$1")"
migration_host = "$(host_ip "$1")"
# VIR_MIGRATE_TLS: the migration stream (and NBD disk copy) over TLS, both ends verified
migrate_tls_x509_cert_dir = "$(host_dir "$1")/pki"
migrate_tls_x509_verify = 1
EOF
}

# --- libvirtd -----------------------------------------------------------------

libvirtd_pid() {
    local pid
    pid=$(cat "$(host_dir "$1")/run-libvirt/libvirtd.pid" 2>/dev/null) || return 1
    [[ -n $pid && $(readlink "/proc/$pid/ns/net" 2>/dev/null) == "$(ns_id "$1")" ]] && echo "$pid"
}
ns_id() { echo "net:[$(stat -L -c %i "$(netns_path "$1")" 2>/dev/null)]"; }

libvirtd_answers() { timeout 10 virsh -q -c "$(host_uri "$1")" version >/dev/null 2>&1; }

start_libvirtd() {
    local n=$1
    libvirtd_pid "$n" >/dev/null && return 0
    rm -f "$(host_dir "$n")/run-libvirt/libvirtd.pid"
    # Under `tini -s`, a subreaper: QEMU daemonizes away from libvirtd, so an exited QEMU is
    # reaped by its nearest subreaper ancestor, else by PID 1. libvirt waits for a QEMU to end
    # by kill(pid, 0), which a zombie still answers; where PID 1 reaps only now and then (about
    # once a second in this sandbox), every destroy and every migration's end waited for it.
    # libvirtd runs in the foreground as tini's child; callers wait until it answers.
    hexec "$n" setsid tini -s -- libvirtd -l -p /run/libvirt/libvirtd.pid \
        </dev/null >>"$(host_dir "$n")/log-libvirt/libvirtd.stdout" 2>&1 &
}

# QEMU capability probing takes ~7 s per daemon. Probe once (h1), keep the
# result in $CACHE for later labs, and seed every other host with it.
CAPS_SUBDIR=cache-libvirt/qemu/capabilities

seed_caps() {
    local dst
    dst=$(host_dir "$1")/$CAPS_SUBDIR
    [[ -d $CACHE/qemu-caps ]] || return 0
    mkdir -p "$dst"
    cp -n "$CACHE/qemu-caps/"*.xml "$dst/" 2>/dev/null || true
}

save_caps() {
    local src
    src=$(host_dir "$1")/$CAPS_SUBDIR
    compgen -G "$src/*.xml" >/dev/null || return 0
    mkdir -p "$CACHE/qemu-caps"
    cp "$src/"*.xml "$CACHE/qemu-caps/"
}

ensure_libvirtds() {
    local n
    seed_caps 1
    start_libvirtd 1
    wait_for 90 "libvirtd on h1" libvirtd_answers 1
    save_caps 1
    for n in "$@"; do
        ((n == 1)) && continue
        seed_caps "$n"
        start_libvirtd "$n"
    done
    for n in "$@"; do wait_for 60 "libvirtd on h$n" libvirtd_answers "$n"; done
}

# --- pools ----------------------------------------------------------------------

# pool_names N [--all]: virsh pads --name output with spaces; trim it.
pool_names() { hvirsh "$1" pool-list --name "${@:2}" | awk 'NF {print $1}'; }

ensure_pools() {
    local n=$1 have cmds="" pair name path
    have=$(pool_names "$n" --all)
    for pair in "${POOLS[@]}" "shared:$SHARED"; do
        name=${pair%%:*} path=${pair#*:}
        grep -qx "$name" <<<"$have" && continue
        cmds+="pool-define-as $name dir --target $path; pool-build $name; pool-autostart $name; "
    done
    [[ -n $cmds ]] && hvirsh "$n" "$cmds" >/dev/null
    # Start any defined-but-inactive pool (e.g. after a libvirtd restart).
    have=$(pool_names "$n")
    for pair in "${POOLS[@]}" "shared:$SHARED"; do
        name=${pair%%:*}
        grep -qx "$name" <<<"$have" || hvirsh "$n" pool-start "$name" >/dev/null
    done
}

# --- `lab libvirtd hN start|stop|kill`: fail and revive one host's daemon -------
# For failure tests: `kill` is a crash (SIGKILL: guests keep running, QEMU is
# not our child), `stop` a clean shutdown, `start` brings it back and waits.
libvirtd_gone() { ! libvirtd_pid "$1" >/dev/null; }

cmd_libvirtd() {
    local n pid
    n=$(host_num "${1:?usage: libvirtd hN start|stop|kill}")
    case ${2:-} in
        start) start_libvirtd "$n"; wait_for 60 "libvirtd on h$n" libvirtd_answers "$n" ;;
        stop | kill)
            pid=$(libvirtd_pid "$n") || return 0
            kill "-$([[ $2 == kill ]] && echo KILL || echo TERM)" "$pid"
            wait_for 30 "libvirtd on h$n to exit" libvirtd_gone "$n" ;;
        *) die "usage: libvirtd hN start|stop|kill" ;;
    esac
}
