# shellcheck shell=bash
# `lab install`: the apt packages and the libvirt-qemu user, idempotently.
# libvirt-daemon-system is deliberately NOT installed: it pulls in systemd. Neither is
# Debian's nats-server (it enables an unauthenticated service); the pinned wheel is the server.

APT_PACKAGES=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
              busybox-static bindfs gcc libc6-dev iproute2 util-linux bc tini
              cockpit-ws cockpit-bridge chromium) # the web console (`console-ui`) and its test
# QEMU must come from bookworm-backports (10.x): bookworm's 7.2 loses dirty
# pages in TCG migrations and corrupts guests.
BACKPORTS_PACKAGES=(qemu-system-x86 qemu-utils)
BACKPORTS_SOURCES=/etc/apt/sources.list.d/lab-bookworm-backports.sources

package_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

qemu_is_backports() {
    local v
    v=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null) || return 1
    dpkg --compare-versions "$v" ge 1:9
}

install_needed() {
    local p
    for p in "${APT_PACKAGES[@]}" "${BACKPORTS_PACKAGES[@]}"; do
        package_installed "$p" || return 0
    done
    qemu_is_backports || return 0
    getent passwd libvirt-qemu >/dev/null || return 0
    return 1
}

# Reuse the machine's own Debian mirror for bookworm-backports.
debian_mirror_uri() {
    local f=/etc/apt/sources.list.d/debian.sources
    if [[ -f $f ]]; then
        awk '/^URIs:/{print $2; exit}' "$f"
    else
        awk '$1 == "deb" && $3 ~ /^bookworm/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null
    fi
}

ensure_backports_source() {
    grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
    local uri
    uri=$(debian_mirror_uri)
    [[ -n $uri ]] || uri=http://deb.debian.org/debian
    log "adding bookworm-backports ($uri)"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
        "$uri" /usr/share/keyrings/debian-archive-keyring.gpg >"$BACKPORTS_SOURCES"
}

# libvirt's QEMU driver refuses to start without this user, even with user="root".
ensure_libvirt_qemu_user() {
    getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
    getent passwd libvirt-qemu >/dev/null ||
        useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
}

cmd_install() {
    local t0
    t0=$(now)
    ensure_backports_source
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}" >&2
    apt-get install -y -q --no-install-recommends -t bookworm-backports "${BACKPORTS_PACKAGES[@]}" >&2
    ensure_libvirt_qemu_user
    log "install done in $(elapsed_since "$t0") s"
}

ensure_installed() {
    if install_needed; then
        log "packages or libvirt-qemu user missing: running install"
        cmd_install
    fi
}
