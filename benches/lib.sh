# Shared by the benchmark scripts that run oxvirt beside libvirt (sourced, not run): process helpers, the
# release build and guest kit, /dev/kvm for libvirt, libvirt's three daemons and its networks, oxvirtd. The
# caller defines say() and die(), runs with `set -euo pipefail`, and sources this from the repository's root.

# install_missing PACKAGE...: installs (quietly, without recommends) the Debian packages not installed yet.
install_missing() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    printf 'installing %s\n' "${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
}
pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2> /dev/null; }
pid_from_file() { if [ -s "$1" ]; then cat "$1"; fi; }

stop_pid() { # pid: SIGTERM, then SIGKILL after 10 s
    local pid=$1 i
    pid_alive "$pid" || return 0
    kill "$pid" 2> /dev/null || true
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2> /dev/null || true
}

# Where cargo puts the release binaries: CARGO_TARGET_DIR's release/ when it is set, as cargo does.
RELEASE=${CARGO_TARGET_DIR:-$PWD/target}/release

# Builds oxvirtd and oxvirt (release; SKIP_BUILD=1 uses those in $RELEASE as they are).
build_oxvirt() {
    local binary
    if [ "${SKIP_BUILD:-0}" = 1 ]; then
        say "SKIP_BUILD=1: using the release binaries in $RELEASE as they are"
    else
        say "building oxvirtd and oxvirt (release)"
        cargo build --release -q -p oxvirt-daemon -p oxvirt-cli
    fi
    for binary in oxvirtd oxvirt; do
        [ -x "$RELEASE/$binary" ] || die "$RELEASE/$binary is missing: build it (cargo build --release -p oxvirt-daemon -p oxvirt-cli)"
    done
}

# build_oxvirt, and the guest kit.
build_oxvirt_and_guest_kit() {
    build_oxvirt
    say "preparing the guest kit"
    bash scripts/guest-kit.sh > /dev/null
}

# The benchmarks start their own libvirt daemons (there is no systemd here): they refuse to run beside others.
refuse_running_libvirt_daemons() {
    local daemon
    for daemon in libvirtd virtlogd virtlockd; do
        if pgrep -x "$daemon" > /dev/null; then
            die "$daemon is already running (pid $(pgrep -x "$daemon" | tr '\n' ' ')); this benchmark starts and stops its own: stop it first"
        fi
    done
}

# libvirt's "default" network would create virbr0 with a private address in the machine's namespace: takes
# it off autostart (what `virsh net-autostart --disable default` does) before libvirtd starts, and refuses
# to go on if another network would autostart. Sets NET_NOTE, a sentence for the doc.
DEFAULT_NET_AUTOSTART=/etc/libvirt/qemu/networks/autostart/default.xml
keep_libvirt_networks_down() {
    local other
    NET_NOTE="libvirt's default network was not marked for autostart"
    if [ -e "$DEFAULT_NET_AUTOSTART" ] || [ -L "$DEFAULT_NET_AUTOSTART" ]; then
        rm -f "$DEFAULT_NET_AUTOSTART"
        NET_NOTE="libvirt's default network was marked for autostart: the script removed $DEFAULT_NET_AUTOSTART (= net-autostart --disable) before starting libvirtd"
        say "$NET_NOTE"
    fi
    other=$(find /etc/libvirt/qemu/networks/autostart -mindepth 1 2> /dev/null | head -1)
    [ -z "$other" ] || die "libvirt would autostart a network ($other): disable it first"
}

# start_oxvirtd LOG COMMAND...: runs COMMAND (an oxvirtd, with its options, behind any prefix such as
# `ip netns exec NS`) in the background with its stderr in LOG, sets OXVIRTD_PID, and waits until
# "${OXVIRT[@]}" answers.
start_oxvirtd() {
    local log=$1 i
    shift
    "$@" 2> "$log" &
    OXVIRTD_PID=$!
    for ((i = 0; i < 300; i++)); do
        "${OXVIRT[@]}" version > /dev/null 2>&1 && return 0
        pid_alive "$OXVIRTD_PID" || die "oxvirtd exited: $(cat "$log")"
        sleep 0.1
    done
    "${OXVIRT[@]}" version > /dev/null || die "oxvirtd did not answer within 30 s"
}

# make_work_dir TEMPLATE: makes the run's directory (mktemp -d TEMPLATE) in WORK, open to libvirt's QEMU (it
# runs as libvirt-qemu and must reach the kernel, initramfs, disks and log files there), with private copies
# of oxvirtd and oxvirt (other work on this machine may rebuild the release binaries while the benchmark
# runs); sets OX_SOCKET, OX_STATE and OXVIRT, the client command, for the oxvirtd run from there.
make_work_dir() {
    WORK=$(mktemp -d "$1")
    chmod 755 "$WORK"
    cp "$RELEASE/oxvirtd" "$RELEASE/oxvirt" "$WORK/"
    OX_SOCKET=$WORK/oxvirtd.sock
    OX_STATE=$WORK/oxvirt-state
    OXVIRT=("$WORK/oxvirt" --socket "$OX_SOCKET")
}

# remove_libvirt_domains PREFIX [UNDEFINE_OPTION...]: destroys and undefines every libvirt domain whose name
# starts with PREFIX (one virsh session reading the commands), and removes their QEMU logs. For cleanups:
# errors are ignored.
remove_libvirt_domains() {
    local prefix=$1 name active all
    shift
    active=$("${VIRSH[@]}" list --name 2> /dev/null | grep "^$prefix")
    all=$("${VIRSH[@]}" list --all --name 2> /dev/null | grep "^$prefix")
    {
        for name in $active; do echo "destroy $name"; done
        for name in $all; do echo "undefine $name $*"; done
    } | "${VIRSH[@]}" -q > /dev/null 2>&1
    rm -f /var/log/libvirt/qemu/"$prefix"*.log
}

# remove_oxvirt_domains PREFIX [UNDEFINE_OPTION...]: the same with "${OXVIRT[@]}".
remove_oxvirt_domains() {
    local prefix=$1 name
    shift
    for name in $("${OXVIRT[@]}" list --name 2> /dev/null | grep "^$prefix"); do
        "${OXVIRT[@]}" destroy "$name" > /dev/null 2>&1
    done
    for name in $("${OXVIRT[@]}" list --all --name 2> /dev/null | grep "^$prefix"); do
        "${OXVIRT[@]}" undefine "$name" "$@" > /dev/null 2>&1
    done
}

# finish_work STATUS: removes WORK after a successful run; keeps it (and says so) after a failure or with
# KEEP_WORK=1.
finish_work() {
    if [ "${KEEP_WORK:-0}" = 1 ] || [ "$1" != 0 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}

# Debian's udev gives /dev/kvm to group kvm (libvirt-qemu is a member). Without udev it stays root-only,
# and then libvirt finds its cached QEMU capabilities "outdated" (KVM probed but not usable now) and probes
# QEMU again on every start, which adds seconds. Gives libvirt the Debian setup, remembering the old mode in
# KVM_MODE_SAVED for restore_kvm_mode (to call at exit).
KVM_MODE_SAVED=
give_kvm_to_libvirt() {
    if [ -c /dev/kvm ] && ! runuser -u libvirt-qemu -- test -r /dev/kvm -a -w /dev/kvm 2> /dev/null; then
        KVM_MODE_SAVED="$(stat -c '%u:%g %a' /dev/kvm)"
        chgrp kvm /dev/kvm
        chmod 0660 /dev/kvm
        say "/dev/kvm: root:kvm 0660 for the run (was $KVM_MODE_SAVED)"
    fi
}
restore_kvm_mode() {
    if [ -n "$KVM_MODE_SAVED" ]; then
        chown "${KVM_MODE_SAVED% *}" /dev/kvm
        chmod "${KVM_MODE_SAVED#* }" /dev/kvm
    fi
}

# stop_oxvirt_guests STATE_DIR: stops any QEMU that the oxvirtd with STATE_DIR left running. It should never
# happen, but a guest must not outlive the benchmark.
stop_oxvirt_guests() {
    local pidfile pid
    for pidfile in "$1"/run/*/qemu.pid; do
        [ -e "$pidfile" ] || continue
        pid=$(pid_from_file "$pidfile")
        if pid_alive "$pid" && grep -qa "$1" "/proc/$pid/cmdline"; then stop_pid "$pid"; fi
    done
}

# start_libvirt_daemons DIR [PREFIX...]: starts virtlogd, virtlockd and libvirtd (no systemd here), each run
# through PREFIX (e.g. nsenter ...), with their pid files in DIR, and waits until "${VIRSH[@]}" answers.
start_libvirt_daemons() {
    local dir=$1 i
    shift
    "$@" virtlogd -d -p "$dir/virtlogd.pid"
    "$@" virtlockd -d -p "$dir/virtlockd.pid"
    "$@" libvirtd -d -p "$dir/libvirtd.pid"
    for ((i = 0; i < 300; i++)); do
        "${VIRSH[@]}" version > /dev/null 2>&1 && return 0
        if [ -s "$dir/libvirtd.pid" ] && ! pid_alive "$(pid_from_file "$dir/libvirtd.pid")"; then
            tail -3 /var/log/libvirt/libvirtd.log >&2 || true
            die "libvirtd exited while starting (did another libvirtd start at the same time?)"
        fi
        sleep 0.1
    done
    "${VIRSH[@]}" version > /dev/null || die "libvirtd did not answer within 30 s"
}

# stop_libvirt_daemons DIR: stops the daemons start_libvirt_daemons started.
stop_libvirt_daemons() {
    local name
    for name in libvirtd virtlogd virtlockd; do
        stop_pid "$(pid_from_file "$1/$name.pid")"
    done
}

# write_doc_section TITLE FILE: replaces the section headed TITLE (a "## ..." line, up to the next "## ")
# of docs/benchmarks.md with the contents of FILE (which starts with that heading), or appends it.
write_doc_section() {
    local title=$1 section=$2 doc=$REPO/docs/benchmarks.md out
    [ -f "$doc" ] || printf '# Benchmarks\n\nEach section is written by the script it names; re-run the script to refresh it.\n' > "$doc"
    out=$(mktemp)
    awk -v title="$title" -v section="$section" '
        function put_section(  line) { while ((getline line < section) > 0) print line; close(section) }
        $0 == title { put_section(); skipping = 1; done = 1; next }
        skipping && /^## / { skipping = 0; print "" }
        !skipping { print; last = $0 }
        END { if (!done) { if (last != "") print ""; put_section() } }
    ' "$doc" > "$out"
    cp "$out" "$doc"
    rm -f "$out"
    say "wrote \"$title\" in docs/benchmarks.md"
}

# start_libvirt_side BUILD TEMPLATE PACKAGE...: the first steps of a bench that runs Debian's libvirt on
# qemu:///system beside oxvirtd: its packages, no libvirt daemon already running, the release build (BUILD:
# build_oxvirt or build_oxvirt_and_guest_kit), the run's directory (make_work_dir TEMPLATE), and the globals
# the caller's cleanup reads (VIRSH, OXVIRTD_PID, DAEMONS_STARTED: 1 once libvirt's daemons run).
start_libvirt_side() {
    local build=$1 template=$2
    shift 2
    install_missing "$@"
    refuse_running_libvirt_daemons
    "$build"
    make_work_dir "$template"
    VIRSH=(virsh -c qemu:///system)
    OXVIRTD_PID=
    DAEMONS_STARTED=0
}

# start_both_daemons: libvirt's three daemons (with /dev/kvm for its QEMU, its networks kept down, and a
# refusal if one is active anyway) and then oxvirtd, both keeping their files in WORK.
start_both_daemons() {
    local net
    give_kvm_to_libvirt
    keep_libvirt_networks_down
    say "starting virtlogd, virtlockd, libvirtd"
    DAEMONS_STARTED=1
    start_libvirt_daemons "$WORK"
    for net in $("${VIRSH[@]}" net-list --name); do
        die "libvirt network '$net' is active: refusing to go on"
    done
    say "starting oxvirtd"
    start_oxvirtd "$WORK/oxvirtd.log" "$WORK/oxvirtd" --socket "$OX_SOCKET" --state-dir "$OX_STATE" --no-default-network --log-level warn
}
