# shellcheck shell=bash
# The test guest: image build (Debian kernel + busybox/dirtier initramfs) and
# the guest, guest-rm and console commands.

GUEST_SRC=$LAB_D/guest
# Debian builds virtio as modules; /init loads these (paths below kernel/).
GUEST_MODULES=(drivers/virtio/virtio.ko drivers/virtio/virtio_ring.ko
               drivers/virtio/virtio_pci_modern_dev.ko drivers/virtio/virtio_pci_legacy_dev.ko
               drivers/virtio/virtio_pci.ko drivers/block/virtio_blk.ko
               net/core/failover.ko drivers/net/net_failover.ko drivers/net/virtio_net.ko)

# Images are content-addressed ($CACHE/guest/<hash>/) and never overwritten:
# a running guest's kernel and initrd must stay identical on every host for as
# long as it lives, even if another lab rebuilds.
# GUEST_IMAGE_FORMAT names the layout (v2: vmlinux beside vmlinuz), so a changed build never
# reuses a directory of the old one.
GUEST_IMAGE_FORMAT=v2-pvh
guest_image_dir() {
    echo "$CACHE/guest/$({ echo "$GUEST_IMAGE_FORMAT"; cat "$GUEST_SRC/init" "$GUEST_SRC/dirtier.c"; } |
        sha256sum | cut -c1-12)"
}

# The kernel a guest boots: the uncompressed vmlinux when the build could extract it, else the
# bzImage. QEMU boots an ELF kernel with a PVH note straight at its 32-bit entry: no firmware
# real-mode set-up and no decompressing 8 MB of xz under TCG, which took 3.3 of a boot's 7.4 s.
guest_kernel() {
    local dir=$1
    if [[ -f $dir/vmlinux ]]; then echo "$dir/vmlinux"; else echo "$dir/vmlinuz"; fi
}

# extract_vmlinux BZIMAGE OUT: the ELF inside Debian's xz-compressed bzImage, kept only when it
# carries the PVH entry note (Xen note type 18) that lets QEMU boot it directly.
extract_vmlinux() {
    python3 - "$1" "$2" <<'PY'
import lzma, re, sys
image = open(sys.argv[1], "rb").read()
start = image.find(b"\xfd7zXZ\x00")
if start < 0:
    sys.exit("no xz stream in the kernel image")
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(image[start:])
# an ELF note: namesz 4, descsz, type 18 (XEN_ELFNOTE_PHYS32_ENTRY), name "Xen"
pvh_note = re.compile(rb"\x04\x00\x00\x00[\x04\x08]\x00\x00\x00\x12\x00\x00\x00Xen\x00")
if not elf.startswith(b"\x7fELF") or not pvh_note.search(elf):
    sys.exit("the kernel has no PVH entry note")
open(sys.argv[2], "wb").write(elf)
PY
}

ensure_guest_image() {
    local dir t0
    dir=$(guest_image_dir)
    [[ -f $dir/vmlinuz && -f $dir/initrd.img ]] && return 0
    t0=$(now)
    build_guest_image "$dir"
    log "guest image built in $(elapsed_since "$t0") s: $dir"
}

# The kernel package linux-image-amd64 points at (downloaded once, cached).
kernel_deb() {
    local pkg deb
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    [[ -n $pkg ]] || die "cannot resolve linux-image-amd64 (apt-get update?)"
    mkdir -p "$CACHE/kernel"
    deb=$(compgen -G "$CACHE/kernel/${pkg}_*.deb" | head -n1 || true)
    if [[ -z $deb ]]; then
        (cd "$CACHE/kernel" && apt-get download -q "$pkg" >&2 2>/dev/null) || die "apt-get download $pkg failed"
        deb=$(compgen -G "$CACHE/kernel/${pkg}_*.deb" | head -n1)
    fi
    echo "$deb"
}

build_guest_image() {
    local dir=$1 tmp deb root
    mkdir -p "$CACHE/guest"
    tmp=$(mktemp -d "$CACHE/guest/.build.XXXXXX")
    deb=$(kernel_deb)
    root=$tmp/root
    mkdir -p "$tmp/k" "$root"/{bin,dev,proc,sys,lib/modules}
    # Only vmlinuz and the (uncompressed) virtio modules are needed.
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/k" --wildcards --no-wildcards-match-slash \
        './boot/vmlinuz-*' "${GUEST_MODULES[@]/#/./lib/modules/*/kernel/}"
    find "$tmp/k/lib/modules" -name '*.ko' -exec cp {} "$root/lib/modules/" \;
    cp "$tmp"/k/boot/vmlinuz-* "$tmp/vmlinuz"
    extract_vmlinux "$tmp/vmlinuz" "$tmp/vmlinux" ||
        log "guest image: booting the compressed kernel (slower under TCG)"
    cp /bin/busybox "$root/bin/busybox"
    install -m 0755 "$GUEST_SRC/init" "$root/init"
    gcc -static -O2 -Wall -o "$root/dirtier" "$GUEST_SRC/dirtier.c"
    mknod "$root/dev/console" c 5 1
    (cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -9) >"$tmp/initrd.img"
    rm -rf "$tmp/k" "$root"
    chmod 0755 "$tmp"
    mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp" # a concurrent build won: keep theirs
}

# --- guest ---------------------------------------------------------------------

guest_usage() {
    die "usage: guest NAME --host hN [--memory MIB] [--dirty-mb N] [--dirty-rate MIB_S] [--storage shared|local] [--pool NAME] [--disk-mib N] [--no-disk-io] [--nic] [--transient] [--no-start] [--no-wait] [--timeout S]"
}

cmd_guest() {
    local name="" host="" memory=128 dirty_mb=16 dirty_rate=8 storage=shared disk_mib=256 pool=""
    local disk_io=1 nic=0 transient=0 start=1 wait=1 timeout=120
    while (($#)); do
        case $1 in
            --host) host=$2; shift ;;
            --memory) memory=$2; shift ;;
            --dirty-mb) dirty_mb=$2; shift ;;
            --dirty-rate) dirty_rate=$2; shift ;;
            --storage) storage=$2; shift ;;
            --pool) pool=$2; shift ;;
            --disk-mib) disk_mib=$2; shift ;;
            --timeout) timeout=$2; shift ;;
            --no-disk-io) disk_io=0 ;;
            --nic) nic=1 ;;
            --transient) transient=1 ;;
            --no-start) start=0 ;;
            --no-wait) wait=0 ;;
            -*) guest_usage ;;
            *) [[ -z $name ]] || guest_usage; name=$1 ;;
        esac
        shift
    done
    [[ -n $name && -n $host ]] || guest_usage
    [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "bad guest name '$name'"
    [[ $storage == shared || $storage == local ]] || die "--storage must be shared or local"
    ((transient && !start)) && die "--transient needs a start (drop --no-start)"
    local n disk xml
    n=$(host_num "$host")
    host_ns_ready "$n" || die "host h$n is not up"
    ensure_guest_image
    if [[ -n $pool ]]; then disk=$(pool_disk_path "$pool" "$name"); else disk=$(guest_disk_path "$storage" "$name"); fi
    # Once in a while the FUSE shared dir answers qemu-img's image lock on a brand-new file
    # with "Failed to get write lock"; the file is ours alone, so one more try is safe.
    hexec "$n" qemu-img create -q -f qcow2 "$disk" "${disk_mib}M" ||
        { sleep 1; hexec "$n" qemu-img create -q -f qcow2 "$disk" "${disk_mib}M"; }
    xml=$STATE/guests/$name.xml
    mkdir -p "$STATE/guests"
    domain_xml "$name" "$memory" "$disk" "$nic" \
        "dirty_mb=$dirty_mb dirty_rate=$dirty_rate disk_io=$disk_io" >"$xml"
    rm -f "$(host_dir "$n")/log-libvirt/qemu/$name-console.log"
    if ((transient)); then
        hvirsh "$n" create "$xml" >/dev/null
    else
        hvirsh "$n" define "$xml" >/dev/null
        ((start)) && hvirsh "$n" start "$name" >/dev/null
    fi
    ((start && wait)) && wait_guest_ready "$n" "$name" "$timeout"
    log "guest $name on h$n ($storage disk $disk)"
}

guest_disk_path() { # STORAGE NAME: path as seen from inside the hosts
    if [[ $1 == shared ]]; then echo "$SHARED/$2.qcow2"; else echo "/var/lib/libvirt/images/$2.qcow2"; fi
}

pool_disk_path() { # POOL NAME: the disk in one of the lab's pools (overrides --storage)
    local entry
    [[ $1 == shared ]] && { echo "$SHARED/$2.qcow2"; return; }
    for entry in "${POOLS[@]}"; do
        [[ ${entry%%:*} == "$1" ]] && { echo "${entry#*:}/$2.qcow2"; return; }
    done
    die "--pool must be shared or one of: ${POOLS[*]%%:*}"
}

domain_xml() {
    local name=$1 memory=$2 disk=$3 nic=$4 params=$5 img nic_xml=""
    img=$(guest_image_dir)
    ((nic)) && nic_xml="    <interface type='bridge'><source bridge='br-vm'/><model type='virtio'/></interface>"
    cat <<EOF
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>$memory</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$(guest_kernel "$img")</kernel>
    <initrd>$img/initrd.img</initrd>
    <cmdline>console=ttyS0 loglevel=4 mitigations=off $params</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='$disk'/>
      <target dev='vda' bus='virtio'/>
    </disk>
$nic_xml
    <serial type='file'>
      <source path='/var/log/libvirt/qemu/$name-console.log' append='on'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

console_file() { echo "$(host_dir "$1")/log-libvirt/qemu/$2-console.log"; }

wait_guest_ready() {
    local n=$1 name=$2 timeout=$3 deadline
    deadline=$((SECONDS + timeout))
    until grep -q GUEST-READY "$(console_file "$n" "$name")" 2>/dev/null; do
        if ((SECONDS >= deadline)) || ! domain_running "$n" "$name" ||
            grep -q 'Kernel panic' "$(console_file "$n" "$name")" 2>/dev/null; then
            tail -n 20 "$(console_file "$n" "$name")" >&2 2>/dev/null || true
            die "guest $name on h$n not ready after ${timeout}s (state: $(hvirsh "$n" domstate "$name" 2>&1))"
        fi
        sleep 0.3
    done
}

domain_running() { [[ $(hvirsh "$1" domstate "$2" 2>/dev/null) == running* ]]; }
domain_known() { hvirsh "$1" dominfo "$2" >/dev/null 2>&1; }

# guest_host NAME: the host running NAME, else one defining it, else the one
# with the newest console log.
guest_host() {
    local name=$1 n
    mapfile -t hosts < <(known_hosts)
    for n in "${hosts[@]}"; do host_ns_ready "$n" && domain_running "$n" "$name" && { echo "$n"; return; }; done
    for n in "${hosts[@]}"; do host_ns_ready "$n" && domain_known "$n" "$name" && { echo "$n"; return; }; done
    # shellcheck disable=SC2012 # names are ours, no odd characters
    n=$(ls -t "$STATE"/hosts/h*/log-libvirt/qemu/"$name"-console.log 2>/dev/null | head -n1)
    [[ -n $n ]] && echo "$n" | sed -E 's|.*/hosts/h([0-9]+)/.*|\1|'
}

cmd_console() {
    [[ $# == 1 ]] || die "usage: console NAME"
    local n
    n=$(guest_host "$1")
    [[ -n $n ]] || die "no guest $1 on any host"
    cat "$(console_file "$n" "$1")"
}

# guest-rm NAME: destroy + undefine everywhere, remove its disks and consoles.
cmd_guest_rm() {
    [[ $# == 1 ]] || die "usage: guest-rm NAME"
    local name=$1 n disks=() d
    mapfile -t hosts < <(known_hosts)
    for n in "${hosts[@]}"; do
        if ! host_ns_ready "$n" || ! domain_known "$n" "$name"; then continue; fi
        mapfile -t -O "${#disks[@]}" disks < <(hvirsh "$n" domblklist "$name" --details |
            awk '$2 == "disk" && $4 != "-" {print $4}' | sed "s|^|$n:|")
        hvirsh "$n" destroy "$name" >/dev/null 2>&1 || true
        hvirsh "$n" undefine "$name" >/dev/null 2>&1 || true
    done
    for d in "${disks[@]}"; do hexec "${d%%:*}" rm -f "${d#*:}"; done
    rm -f "$SHARED/$name.qcow2" "$STATE/guests/$name.xml"
    for n in "${hosts[@]}"; do
        rm -f "$(host_dir "$n")/var-lib-libvirt/images/$name.qcow2" "$(console_file "$n" "$name")" \
            "$(host_dir "$n")"/var-lib-libvirt/pools/*/"$name.qcow2" \
            "$(host_dir "$n")/log-libvirt/qemu/$name.log"
    done
}
