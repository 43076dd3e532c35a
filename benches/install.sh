#!/usr/bin/env bash
# Install benchmark (issue 9): `oxvirt install --import --cloud-init` against Debian's
# `virt-install --import --cloud-init` (libvirt 9.0), side by side on the same image, until cloud-init
# finished; and `oxvirt builder debian-12`, cold and warm. Prints a table and writes the section
# "## Install and builder: oxvirt vs virt-install" of docs/benchmarks.md. Ratios are oxvirt / virt-install
# (below 1: oxvirt is faster).
#
#   sudo bash benches/install.sh                          # RUNS=3 installs each, 1 cold + 2 warm builds
#   RUNS=2 WARMUP=0 WARM_BUILDS=1 bash benches/install.sh # quick run
#   COLD_BUILD=0 ...                                      # skip the cold build (no mirror download)
#   WRITE_DOC=0 ...                                       # print only, doc left alone
#   SKIP_BUILD=1 ...                                      # use the release binaries as they are
#
# What it measures:
#   1. `oxvirt builder debian-12 -o IMG --root-password password:X`: cold (`--no-cache`: mmdebstrap
#      downloads the packages from the Debian mirror again and replaces the cached root filesystem
#      tarball) and warm (the cached tarball is unpacked). The last warm build is the image of part 2.
#   2. for each system, from just before the install command until the domain is shut off: the guest
#      boots a fresh qcow2 overlay of that image, cloud-init's NoCloud seed ends with `power_state:
#      {mode: poweroff}`, which cloud-init runs after all its modules (final stage): "shut off" is
#      "cloud-init finished". Also the install command's own return time (both with --noautoconsole).
#      The domain state is polled every 0.2 s (`oxvirt domstate` / `virsh domstate`).
#   3. whether a virt-builder-like tool from Debian can run here (virt-builder, vmdb2): checked, and said.
#
# Needs root, QEMU, virtinst, and no libvirtd/virtlogd/virtlockd already running: as benches/first-vm.sh,
# the script starts its own libvirt daemons by hand (no systemd) and a private oxvirtd in a temporary
# directory, and on exit (also on failure) destroys and undefines every domain it created, stops the four
# daemons and puts /dev/kvm's mode back. It never starts a network: guests have `--network none`,
# libvirt's default network autostart is disabled, oxvirtd runs with --no-default-network.
set -euo pipefail
export LC_ALL=C

RUNS=${RUNS:-3}
WARMUP=${WARMUP:-1}
COLD_BUILD=${COLD_BUILD:-1}
WARM_BUILDS=${WARM_BUILDS:-2}
WRITE_DOC=${WRITE_DOC:-1}
TIMEOUT=${TIMEOUT:-900}
MEMORY=${MEMORY:-1024}
VCPUS=${VCPUS:-1}
# The same emulated CPU for both. Left to themselves they differ under TCG: oxvirt install asks for
# host-passthrough, which oxvirt's QEMU engine turns into `-cpu max`; virt-install with --virt-type qemu
# writes no <cpu>, so QEMU's default qemu64.
CPU=${CPU:-qemu64}
# i440fx, not the q35 both tools pick for debian11: on q35 the seed CD-ROM is on the ICH9 AHCI (SATA)
# controller, and Debian 12's cloud kernel (linux-image-cloud-amd64, the builder's kernel) is built
# without AHCI (# CONFIG_SATA_AHCI is not set): the guest never sees the cidata disc, cloud-init runs
# without the user-data, and the guest never powers off. On i440fx the CD-ROM is on PIIX IDE (ata_piix).
MACHINE=${MACHINE:-pc}
OS_VARIANT=debian11 # Debian 12's osinfo-db (0.20221130) has no debian12
PREFIX=instbench-
ROOT_PASSWORD=bench
TITLE="## Install and builder: oxvirt vs virt-install"
LIBVIRT_PACKAGES=(libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu virtinst qemu-utils)
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

say() { printf '[install] %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}
# shellcheck source=benches/lib.sh
source benches/lib.sh

[ "$(id -u)" = 0 ] || die "run as root (libvirt's qemu:///system and the builder need it)"
for v in RUNS WARM_BUILDS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive number, not '${!v}'"
done

# ---------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------
start_libvirt_side build_oxvirt /var/tmp/install-bench.XXXXXX "${LIBVIRT_PACKAGES[@]}"
# oxvirt install writes its seed ISOs here (default /var/lib/oxvirt/boot): kept inside the work directory.
export OXVIRT_BOOT_DIR=$WORK/boot
mkdir "$OXVIRT_BOOT_DIR"

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    say "cleaning up"
    if pid_alive "$(pid_from_file "$WORK/libvirtd.pid")"; then remove_libvirt_domains "$PREFIX"; fi
    if pid_alive "$OXVIRTD_PID"; then
        remove_oxvirt_domains "$PREFIX"
        stop_pid "$OXVIRTD_PID"
    fi
    stop_oxvirt_guests "$OX_STATE"
    [ "$DAEMONS_STARTED" = 0 ] || stop_libvirt_daemons "$WORK"
    restore_kvm_mode
    if [ "${KEEP_WORK:-0}" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

seconds_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------------------
# 1. oxvirt builder: cold, then warm (the last warm image is the one the installs import)
# ---------------------------------------------------------------------------------------------------------
BUILD_CMD="oxvirt builder debian-12 -o IMG --root-password password:$ROOT_PASSWORD"
build_once() { # output, extra args...: sets BUILT (seconds)
    local out=$1 t0
    shift
    t0=$EPOCHREALTIME
    "$WORK/oxvirt" builder debian-12 -o "$out" --root-password "password:$ROOT_PASSWORD" "$@" \
        > "$WORK/builder.log" 2>&1 || die "builder failed: $(tail -5 "$WORK/builder.log")"
    BUILT=$(seconds_since "$t0")
}
# The cold build runs last (after the installs), so a failure in the installs shows early.
WARM_TIMES=()
say "builder: $WARM_BUILDS warm build(s) (cached root filesystem)"
for ((n = 1; n <= WARM_BUILDS; n++)); do
    rm -f "$WORK/base.qcow2"
    build_once "$WORK/base.qcow2"
    WARM_TIMES+=("$BUILT")
    say "  warm $n: ${BUILT}s"
done
chmod 644 "$WORK/base.qcow2"
IMAGE_INFO=$(qemu-img info "$WORK/base.qcow2" | awk -F': ' '/virtual size|disk size/ { printf "%s%s: %s", sep, $1, $2; sep = ", " }')

# virt-builder-like tools in Debian: can they run here?
if getent hosts builder.libguestfs.org > /dev/null 2>&1; then
    VIRT_BUILDER_NOTE="builder.libguestfs.org resolves from this machine; virt-builder was not measured by this script"
else
    VIRT_BUILDER_NOTE="virt-builder (libguestfs-tools $(apt-cache policy libguestfs-tools 2> /dev/null | awk '/Candidate/ { print $2 }') in Debian 12) downloads its templates from libguestfs.org's index (https://builder.libguestfs.org/index.asc), and this machine cannot reach it (\`getent hosts builder.libguestfs.org\` finds no address): it cannot build anything here, so it was not installed or measured"
fi
if grep -qw device-mapper /proc/devices; then
    VMDB2_NOTE="the kernel has device-mapper; vmdb2 was not measured by this script"
else
    VMDB2_NOTE="vmdb2 (Debian's image builder from a YAML recipe) maps the image's partitions with kpartx, which needs the kernel's device-mapper, and this host kernel ($(uname -r)) has none (no device-mapper in /proc/devices or /proc/misc, although /dev/mapper/control exists as a node): it cannot run here"
fi

# ---------------------------------------------------------------------------------------------------------
# 2. Daemons
# ---------------------------------------------------------------------------------------------------------
start_both_daemons

# ---------------------------------------------------------------------------------------------------------
# 3. install --import --cloud-init until cloud-init finished (the guest powers itself off)
# ---------------------------------------------------------------------------------------------------------
cat > "$WORK/user-data" << 'EOF'
#cloud-config
runcmd:
  - [sh, -c, 'echo install-bench > /var/tmp/install-bench']
# cloud-init runs this after every module of its final stage: the guest is off once cloud-init finished.
power_state:
  mode: poweroff
  message: install-bench cloud-init finished
  condition: true
EOF
chmod 644 "$WORK/user-data"

COMMON_ARGS="--memory $MEMORY --vcpus $VCPUS --cpu $CPU --machine $MACHINE --import --disk path=OVERLAY,format=qcow2,bus=virtio --cloud-init user-data=USER_DATA,meta-data=META_DATA --os-variant $OS_VARIANT --network none --graphics none --noautoconsole"
INSTALL_CMD_OX="OXVIRT_BOOT_DIR=\$WORK/boot oxvirt --socket \$SOCK install --name NAME $COMMON_ARGS"
INSTALL_CMD_LV="virt-install --connect qemu:///system --virt-type qemu --name NAME $COMMON_ARGS"

install_cmd() { # system, name, overlay, meta-data
    local system=$1 name=$2 overlay=$3 meta=$4 args
    args=(--name "$name" --memory "$MEMORY" --vcpus "$VCPUS" --cpu "$CPU" --machine "$MACHINE" --import
        --disk "path=$overlay,format=qcow2,bus=virtio"
        --cloud-init "user-data=$WORK/user-data,meta-data=$meta"
        --os-variant "$OS_VARIANT" --network none --graphics none --noautoconsole)
    if [ "$system" = ox ]; then
        "${OXVIRT[@]}" install "${args[@]}"
    else
        virt-install --connect qemu:///system --virt-type qemu "${args[@]}"
    fi
}
domstate() { # system, name
    if [ "$1" = ox ]; then "${OXVIRT[@]}" domstate "$2" 2> /dev/null; else "${VIRSH[@]}" domstate "$2" 2> /dev/null; fi
}

OTHERS=()
# install_once SYSTEM LABEL: sets RETURNED and FINISHED (seconds from just before the install command).
install_once() {
    local system=$1 label=$2 name=$PREFIX$1-$2 overlay t0 deadline state
    overlay=$WORK/$name.qcow2
    qemu-img create -q -f qcow2 -F qcow2 -b "$WORK/base.qcow2" "$overlay"
    printf 'instance-id: %s\nlocal-hostname: %s\n' "$name" "$name" > "$WORK/$name.meta-data"
    chmod 644 "$overlay" "$WORK/$name.meta-data"
    # Other guests on this shared machine (not ours) compete for the 2 cores: counted for the doc.
    OTHERS+=("$(pgrep -af qemu-system | grep -vc "guest=$PREFIX" || true)")
    t0=$EPOCHREALTIME
    install_cmd "$system" "$name" "$overlay" "$WORK/$name.meta-data" > "$WORK/$name.install.log" 2>&1 ||
        die "$system install failed: $(cat "$WORK/$name.install.log")"
    RETURNED=$(seconds_since "$t0")
    deadline=$((${EPOCHREALTIME%.*} + TIMEOUT))
    while :; do
        state=$(domstate "$system" "$name" | sed '/^$/d')
        [ "$state" != "shut off" ] || break
        ((${EPOCHREALTIME%.*} < deadline)) || die "$name not shut off after ${TIMEOUT}s (state: $state)"
        sleep 0.2
    done
    FINISHED=$(seconds_since "$t0")
    # The definitions each tool kept, for the doc (first run only).
    if [ ! -e "$WORK/final-$system.xml" ]; then
        if [ "$system" = ox ]; then "${OXVIRT[@]}" dumpxml "$name" > "$WORK/final-$system.xml"; else "${VIRSH[@]}" dumpxml "$name" > "$WORK/final-$system.xml"; fi
        cp "$WORK/$name.install.log" "$WORK/install-output-$system.txt"
    fi
    if [ "$system" = ox ]; then
        "${OXVIRT[@]}" undefine "$name" > /dev/null
    else
        "${VIRSH[@]}" undefine "$name" > /dev/null
        rm -f /var/log/libvirt/qemu/"$name".log
    fi
    rm -f "$overlay"
    sleep 2 # let the host settle (QEMU teardown) before the next run
}

if [ "$WARMUP" = 1 ]; then
    say "install: 1 warm-up run each (not counted)"
    install_once ox warmup
    say "  warm-up ox: returned ${RETURNED}s, shut off after ${FINISHED}s"
    install_once lv warmup
    say "  warm-up lv: returned ${RETURNED}s, shut off after ${FINISHED}s"
fi
say "install: $RUNS runs each, alternating which goes first"
RET_OX=() FIN_OX=() RET_LV=() FIN_LV=()
for ((run = 1; run <= RUNS; run++)); do
    order=(ox lv)
    ((run % 2)) || order=(lv ox)
    for system in "${order[@]}"; do
        install_once "$system" "$run"
        if [ "$system" = ox ]; then
            RET_OX+=("$RETURNED") FIN_OX+=("$FINISHED")
        else
            RET_LV+=("$RETURNED") FIN_LV+=("$FINISHED")
        fi
        say "  run $run $system: install returned in ${RETURNED}s, shut off (cloud-init finished) after ${FINISHED}s"
    done
done

# ---------------------------------------------------------------------------------------------------------
# 4. oxvirt builder, cold (the guests are all gone by now)
# ---------------------------------------------------------------------------------------------------------
COLD_TIME=
if [ "$COLD_BUILD" = 1 ]; then
    say "builder: cold build (--no-cache: mmdebstrap downloads from the mirror)"
    build_once "$WORK/cold.qcow2" --no-cache
    COLD_TIME=$BUILT
    say "  cold: ${COLD_TIME}s"
    rm -f "$WORK/cold.qcow2"
fi
LOAD_AT_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------
OX_VERSION=$("${OXVIRT[@]}" version | sed '/^$/d' | paste -sd';' | sed 's/;/; /g')
LV_VERSION=$("${VIRSH[@]}" version | sed '/^$/d' | paste -sd';' | sed 's/;/; /g')
VIRTINST_VERSION=$(dpkg-query -W -f='${Version}' virtinst)
OSINFO_VERSION=$(dpkg-query -W -f='${Version}' osinfo-db 2> /dev/null || echo unknown)
MMDEBSTRAP_VERSION=$(dpkg-query -W -f='${Version}' mmdebstrap 2> /dev/null || echo unknown)
QEMU_VERSION=$(qemu-system-x86_64 --version | head -1)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM_GIB=$(free -g | awk '/^Mem:/ { print $2 }')
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2> /dev/null || echo unknown)
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2> /dev/null)" ]; then
    COMMIT="$COMMIT plus uncommitted changes"
fi
xml_summary() { # final XML: machine, cpu, devices of note
    awk '
        /<domain / { sub(/^ */, ""); t = $0 }
        /<type / { sub(/^ */, ""); m = $0 }
        /<cpu / { sub(/^ */, ""); c = $0 }
        /<model fallback|<model>/ { sub(/^ */, ""); c = c " " $0 }
        END { printf "%s %s %s", t, m, c }' "$1"
}
XML_OX=$(xml_summary "$WORK/final-ox.xml")
XML_LV=$(xml_summary "$WORK/final-lv.xml")

med_ret_ox=$(median "${RET_OX[@]}") med_ret_lv=$(median "${RET_LV[@]}")
med_fin_ox=$(median "${FIN_OX[@]}") med_fin_lv=$(median "${FIN_LV[@]}")
med_warm=$(median "${WARM_TIMES[@]}")

TABLE=$(
    echo "| measurement (median of $RUNS) | oxvirt | virt-install + libvirt | ratio oxvirt/virt-install |"
    echo "|---|---|---|---|"
    printf '| install command returns (s) | %s | %s | %s |\n' "$med_ret_ox" "$med_ret_lv" "$(ratio "$med_ret_ox" "$med_ret_lv")"
    printf '| install command start to cloud-init finished, guest shut off (s) | %s | %s | %s |\n' \
        "$med_fin_ox" "$med_fin_lv" "$(ratio "$med_fin_ox" "$med_fin_lv")"
)
BUILD_TABLE=$(
    echo "| \`oxvirt builder debian-12\` | seconds |"
    echo "|---|---|"
    if [ -n "$COLD_TIME" ]; then
        echo "| cold (\`--no-cache\`: mmdebstrap downloads from the mirror), 1 run | $COLD_TIME |"
    else
        echo "| cold | not run (COLD_BUILD=0) |"
    fi
    echo "| warm (cached root filesystem tarball), median of $WARM_BUILDS | $med_warm |"
)
RAW=$(
    echo "- install returns (s): oxvirt ${RET_OX[*]}; virt-install ${RET_LV[*]}"
    echo "- to shut off (s): oxvirt ${FIN_OX[*]}; virt-install ${FIN_LV[*]}"
    echo "- builder warm (s): ${WARM_TIMES[*]}${COLD_TIME:+; cold: $COLD_TIME}"
    echo "- other QEMU processes on the machine (not this benchmark's) when each install started, warm-ups included: ${OTHERS[*]}"
)

echo
echo "$TABLE"
echo
echo "$BUILD_TABLE"
echo
echo "$RAW"
echo
echo "final XML: oxvirt: $XML_OX"
echo "           libvirt: $XML_LV"
echo "load average at start: $LOAD_AT_START; at end: $LOAD_AT_END"
echo "virt-builder: $VIRT_BUILDER_NOTE"
echo "vmdb2: $VMDB2_NOTE"

[ "$WRITE_DOC" = 1 ] || exit 0

SECTION=$WORK/section.md
cat > "$SECTION" << EOF
$TITLE

\`bash benches/install.sh\` (RUNS=$RUNS, WARMUP=$WARMUP, WARM_BUILDS=$WARM_BUILDS, COLD_BUILD=$COLD_BUILD), $(date -u '+%Y-%m-%d %H:%M UTC').
Release build of oxvirt (commit $COMMIT); Debian's virt-install $VIRTINST_VERSION with libvirt's default
configuration. Ratios are oxvirt / virt-install (below 1: oxvirt is faster).

### \`install --import --cloud-init\` until cloud-init finished

Both import the same image (made by \`oxvirt builder\` in this run, below; $IMAGE_INFO), each run on a
fresh qcow2 overlay of it, with the same NoCloud seed whose user-data ends with \`power_state: {mode:
poweroff}\`: cloud-init runs that after every module of its final stage, so the guest is shut off once
cloud-init finished. The time is from just before the install command until \`domstate\` (polled every
0.2 s with the same tool's client) says "shut off". Medians of $RUNS runs each$([ "$WARMUP" = 1 ] && echo ", after one uncounted warm-up run each"); oxvirt
and virt-install runs alternate (which goes first flips every run). TCG for both (/dev/kvm here is not
hardware KVM), $VCPUS vCPU, $MEMORY MiB, CPU model $CPU and machine $MACHINE for both.

$TABLE

Every run, in order:

$RAW

**Why \`--machine $MACHINE\`**: both tools give \`--os-variant debian11\` a q35 machine, where the seed CD-ROM
sits on the ICH9 AHCI (SATA) controller. Debian 12's cloud kernel (linux-image-cloud-amd64, the one
\`oxvirt builder\` installs) is built without AHCI (\`# CONFIG_SATA_AHCI is not set\`), so on q35 the guest
never sees the cidata disc: in a trial run of this script on q35, oxvirt's guest logged "Cloud-init v.
22.4.2 finished ... Datasource DataSourceNoCloud [seed=dmi]" (only oxvirt's SMBIOS \`ds=nocloud\` hint, no
user-data, no meta-data: hostname still \`debian\`), and never powered off. virt-install also puts the CD-ROM on
SATA on q35 (its default there). On i440fx the CD-ROM is on PIIX IDE, which the cloud kernel drives
(ata_piix), and cloud-init reads the seed.

**Commands timed** (\`\$SOCK\` is the private oxvirtd's socket; NAME, OVERLAY, USER_DATA, META_DATA per run):
- \`$INSTALL_CMD_OX\`
- \`$INSTALL_CMD_LV\`

then, untimed, \`oxvirt domstate NAME\` / \`virsh -c qemu:///system domstate NAME\` until "shut off",
then \`undefine\` with the same tool. user-data:

\`\`\`yaml
$(cat "$WORK/user-data")
\`\`\`

meta-data: \`instance-id: NAME\`, \`local-hostname: NAME\`.

**The domains** (the definitions each kept, from \`dumpxml\` after the run): oxvirt: \`$XML_OX\`;
libvirt: \`$XML_LV\`. \`oxvirt install\` writes \`<domain type='kvm'>\` (it has no \`--virt-type\`), and
oxvirtd runs it under TCG because /dev/kvm here is not hardware KVM (its start warns "domain type is
'kvm' but hardware KVM is not available: running under TCG"); virt-install gets \`--virt-type qemu\`,
as libvirt refuses type='kvm' without hardware KVM. \`--cpu $CPU\` is given to both because their defaults
differ under TCG (oxvirt: host-passthrough, run as \`-cpu max\`; virt-install with type qemu: no \`<cpu>\`,
QEMU's qemu64). Not the same work: libvirt also runs QEMU as libvirt-qemu with its seccomp sandbox, DAC
relabelling, cgroups and a paused start configured over QMP (see the First VM section). Both build a
cidata seed ISO on the host and add the SMBIOS hint \`serial=ds=nocloud\`; virt-install deletes its ISO
as it returns (QEMU keeps it open), oxvirt leaves it to a detached \`oxvirt __install-finish\` that
removes it when the first instance ends.

### \`oxvirt builder debian-12\`

\`$BUILD_CMD\` (qcow2, 4 GiB, both firmware kinds: the defaults), mmdebstrap $MMDEBSTRAP_VERSION.

$BUILD_TABLE

No virt-builder-like tool from Debian could run here, so there is no ratio for the builder:
- $VIRT_BUILDER_NOTE.
- $VMDB2_NOTE.

**Machine**: $(nproc) cores ($CPU_MODEL), ${MEM_GIB} GiB (\`free -g\`), kernel $(uname -r); load average
(1/5/15 min) $LOAD_AT_START at the start and $LOAD_AT_END at the end (the machine is shared with other
work; TCG guests are CPU-bound, so the absolute times move with the load).

**Versions**: oxvirt: $OX_VERSION. libvirt: $LV_VERSION. virtinst $VIRTINST_VERSION, osinfo-db $OSINFO_VERSION
(no debian12 entry: both get \`--os-variant $OS_VARIANT\`). $QEMU_VERSION.

**Setup** (done by the script, as benches/first-vm.sh): \`virtlogd -d; virtlockd -d; libvirtd -d\` started
by hand (no systemd) and a private \`oxvirtd --socket \$SOCK --state-dir \$DIR --no-default-network\` in a
temporary directory; all stopped at the end. No network is started ($NET_NOTE); the guests have
\`--network none\`. /dev/kvm is made root:kvm 0660 for the run when it is root-only (see First VM).
EOF
write_doc_section "$TITLE" "$SECTION"
