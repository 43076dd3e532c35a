# Shared by the benchmark scripts (sourced, not run): process helpers, the release build and guest kit, /dev/kvm
# for libvirt, libvirt's three daemons and its networks, oxvirtd (the scripts that run oxvirt beside libvirt);
# the nested lab's L1 guest (benches/native-vmm.sh, benches/native-restore.sh). The caller defines say() and
# die(), runs with `set -euo pipefail`, and sources this from the repository's root.

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

# kit_with_lab_script SCRIPT: the test guest kit (where scripts/guest-kit.sh puts it: $OXVIRT_GUEST_KIT_DIR
# or target/guest-kit) with SCRIPT as its lab script (/lab/run.sh, which the kit's init runs after boot) in
# WORK: vmlinuz and initramfs.img, readable by libvirt's QEMU; GUEST_KERNEL: the kernel's version.
kit_with_lab_script() {
    local extra=$WORK/extra-root kit=${OXVIRT_GUEST_KIT_DIR:-target/guest-kit}
    mkdir -p "$extra/lab"
    install -m 755 "$1" "$extra/lab/run.sh"
    append_cpio "$kit/initramfs.img" "$extra" "$WORK/initramfs.img" gzip
    cp "$kit/vmlinuz" "$WORK/vmlinuz"
    chmod 644 "$WORK/vmlinuz" "$WORK/initramfs.img"
    GUEST_KERNEL=$(cat "$kit/version")
}

# check_root_runs_warmup: the checks a side-by-side bench with RUNS and WARMUP starts with.
check_root_runs_warmup() {
    [ "$(id -u)" = 0 ] || die "run as root (libvirt's qemu:///system needs it)"
    [[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
    [[ $WARMUP =~ ^[01]$ ]] || die "WARMUP must be 0 or 1, not '$WARMUP'"
}

# stop_both_sides PREFIX [UNDEFINE_OPTION...]: the end of a bench that ran start_both_daemons (for its
# exit trap; errors are ignored): every domain whose name starts with PREFIX destroyed and undefined in
# both systems, oxvirtd stopped (and any guest it left), libvirt's daemons stopped, /dev/kvm's mode back.
stop_both_sides() {
    if pid_alive "$(pid_from_file "$WORK/libvirtd.pid")"; then
        remove_libvirt_domains "$@"
    fi
    if pid_alive "$OXVIRTD_PID"; then
        remove_oxvirt_domains "$@"
        stop_pid "$OXVIRTD_PID"
    fi
    stop_oxvirt_guests "$OX_STATE"
    [ "$DAEMONS_STARTED" = 0 ] || stop_libvirt_daemons "$WORK"
    restore_kvm_mode
}

# Timing: seconds since an $EPOCHREALTIME, and the median, minimum and maximum of runs, with TIME_DECIMALS
# decimals (default 2); a ratio with 2; the load average.
seconds_since() { awk -v a="$1" -v b="$EPOCHREALTIME" -v d="${TIME_DECIMALS:-2}" 'BEGIN { printf("%." d "f", b - a) }'; }
stats() { # values...: "median min max"
    printf '%s\n' "$@" | sort -g | awk -v d="${TIME_DECIMALS:-2}" '{ v[NR] = $1 }
        END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; f = "%." d "f"; printf(f " " f " " f "\n", m, v[1], v[NR]) }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# ---------------------------------------------------------------------------------------------------------
# The nested lab: an L1 guest under QEMU TCG (-cpu max) that loads kvm-amd and runs oxvirt-vmm on real KVM
# (docs/native-vmm.md, "Tests"). The caller's L1 script (/lab/run.sh in L1) prints its results on L1's serial
# console and ends with OXVIRT-LAB-EXIT=STATUS.
# ---------------------------------------------------------------------------------------------------------

# install_binary, append_cpio and lab_l1_root: shared with scripts/bench-kit.sh (oxvirt bench's nested kit).
# shellcheck source=scripts/nested/lab.sh
. scripts/nested/lab.sh

# Where the lab keeps the timing helper's build and the console logs of its runs.
BENCH_TARGET=$PWD/target/native-vmm-bench

# lab_begin NAME: the settings' defaults (RUNS=5 counted runs, WRITE_DOC=1, L1_TIMEOUT=2400 s), checks RUNS,
# notes the start's date and load (date_start, load_start), makes the run's directory WORK (/tmp/NAME.XXXXXX)
# and sets the exit trap that kills L1's QEMU (QEMU_PID) and removes WORK.
lab_begin() {
    RUNS=${RUNS:-5}
    WRITE_DOC=${WRITE_DOC:-1}
    L1_TIMEOUT=${L1_TIMEOUT:-2400}
    [[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
    load_start=$(cut -d' ' -f1-3 /proc/loadavg)
    date_start=$(date -u '+%Y-%m-%d %H:%M UTC')
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    QEMU_PID=
    trap lab_cleanup EXIT
}
lab_cleanup() {
    if [ -n "$QEMU_PID" ]; then
        kill "$QEMU_PID" 2> /dev/null || true
        wait "$QEMU_PID" 2> /dev/null || true
    fi
    rm -rf "$WORK"
}

# lab_replay: with L1_LOG=FILE (a console log kept by an earlier run), sets LOG to it and succeeds: the caller
# reports from it instead of booting L1. Fails without L1_LOG.
lab_replay() {
    [ -n "${L1_LOG:-}" ] || return 1
    [ -f "$L1_LOG" ] || die "L1_LOG=$L1_LOG does not exist"
    say "reporting from $L1_LOG (no L1 boot)"
    LOG=$L1_LOG
}

# build_lab BENCH_TARGET TOOL...: checks the host tools (qemu-system-x86_64, cpio, ldd, cc and TOOL...),
# builds oxvirt-vmm (release; SKIP_BUILD=1 uses the one in $RELEASE as it is) and the timing helper
# benches/native-vmm/oxbench-time (outside the workspace, in BENCH_TARGET), and prepares the guest kit. Sets
# GIT_DESC (the commit oxvirt-vmm was built from) and OXBENCH_TIME (the helper's path).
build_lab() {
    local target=$1 tool
    shift
    for tool in qemu-system-x86_64 cpio ldd cc "$@"; do
        command -v "$tool" > /dev/null || die "$tool is missing (apt-get install qemu-system-x86 strace cpio gcc)"
    done
    if [ "${SKIP_BUILD:-0}" = 1 ]; then
        say "SKIP_BUILD=1: using $RELEASE/oxvirt-vmm as it is"
    else
        say "building oxvirt-vmm (release)"
        cargo build --release -q -p oxvirt-vmm
    fi
    # (An assignment takes the status of its last substitution: keep every part of it succeeding under set -e.)
    GIT_DESC=$(git rev-parse --short HEAD 2> /dev/null || echo '?')
    if [ -n "$(git status --porcelain crates/vmm crates/virtio 2> /dev/null)" ]; then
        GIT_DESC="$GIT_DESC plus uncommitted changes in crates/vmm or crates/virtio"
    fi
    [ -x "$RELEASE/oxvirt-vmm" ] || die "$RELEASE/oxvirt-vmm is missing (cargo build --release -p oxvirt-vmm)"
    say "building the timing helper (benches/native-vmm/oxbench-time, outside the workspace)"
    CARGO_TARGET_DIR=$target cargo build --release -q --manifest-path benches/native-vmm/oxbench-time/Cargo.toml
    OXBENCH_TIME=$target/release/oxbench-time
    say "preparing the guest kit"
    bash scripts/guest-kit.sh > /dev/null
}

# lab_root ROOT L1_SCRIPT: the files every lab run puts in L1 (lab_l1_root: L1_SCRIPT as /lab/run.sh,
# scripts/nested/l1-common.sh as /lab/common.sh, oxvirt-vmm, the guest kit's kernel and initramfs, unchanged,
# for L2 in /lab/l2), and oxbench-time in /lab/bin.
lab_root() {
    lab_l1_root "$1" "$2" "$RELEASE/oxvirt-vmm" target/guest-kit/vmlinuz target/guest-kit/initramfs.img
    install_binary "$1" "$OXBENCH_TIME" lab/bin/oxbench-time
}

# L1's QEMU command without its serial log, initramfs and the runs argument (for the reports); L1_EXTRA: more
# options a benchmark gives L1 (a disk, ...).
L1_QEMU=(qemu-system-x86_64 -accel tcg -cpu max -m 2048 -smp 1 -nodefaults -display none -no-reboot)
L1_EXTRA=()

# run_l1 ROOT WORK RUNS KEEP_LOG: boots L1 with the guest kit's initramfs plus ROOT (kernel argument
# oxbench_runs=RUNS), waits (L1_TIMEOUT seconds at most) until its console shows OXVIRT-LAB-EXIT=, stops it,
# and keeps the console in KEEP_LOG followed by the host's side of the run (HOST-DATE, HOST-LOAD-START from
# $date_start and $load_start, HOST-LOAD-END, HOST-RUNS, HOST-GIT). Sets QEMU_PID while L1 runs (the caller's
# exit trap kills it). Dies, showing the console's end, when the L1 script did not exit 0.
run_l1() {
    local root=$1 work=$2 runs=$3 keep=$4 started console=$2/l1-console.log
    append_cpio target/guest-kit/initramfs.img "$root" "$work/l1-initramfs.img"
    say "L1 initramfs: $(du -h "$work/l1-initramfs.img" | cut -f1)"
    local cmd=("${L1_QEMU[@]}" "${L1_EXTRA[@]}" -serial "file:$console" -kernel target/guest-kit/vmlinuz
        -initrd "$work/l1-initramfs.img" -append "console=ttyS0 panic=-1 quiet oxbench_runs=$runs")
    say "booting L1: ${cmd[*]}"
    started=$(date +%s)
    "${cmd[@]}" < /dev/null > /dev/null 2> "$work/l1-qemu.err" &
    QEMU_PID=$!
    while ! grep -q '^OXVIRT-LAB-EXIT=' "$console" 2> /dev/null; do
        kill -0 "$QEMU_PID" 2> /dev/null || break
        if [ $(($(date +%s) - started)) -gt "${L1_TIMEOUT:-2400}" ]; then
            say "L1 did not finish within ${L1_TIMEOUT:-2400}s"
            break
        fi
        sleep 2
    done
    kill "$QEMU_PID" 2> /dev/null || true
    wait "$QEMU_PID" 2> /dev/null || true
    QEMU_PID=
    mkdir -p "$(dirname "$keep")"
    {
        tr -d '\r' < "$console"
        # The host's side of the run, for reports made later from this log (L1_LOG=...).
        echo "HOST-DATE=$date_start"
        echo "HOST-LOAD-START=$load_start"
        echo "HOST-LOAD-END=$(cut -d' ' -f1-3 /proc/loadavg)"
        echo "HOST-RUNS=$runs"
        echo "HOST-GIT=$GIT_DESC"
    } > "$keep"
    say "L1 finished in $(($(date +%s) - started)) s; console log kept in $keep"
    grep -q '^OXVIRT-LAB-EXIT=0' "$keep" || {
        tail -40 "$keep" >&2
        cat "$work/l1-qemu.err" >&2
        die "the L1 run failed"
    }
}

# Reading a lab console log ($LOG): "RESULT <vmm> <kind> <run> KEY=value" lines (run 0 is an uncounted
# warm-up) and "NAME=value" lines.
# values VMM KIND KEY: the KEY values of the counted runs (run 0 is the warm-up), one per line.
values() {
    awk -v v="$1" -v k="$2" -v key="$3=" '$1 == "RESULT" && $2 == v && $3 == k && $4 != "0" && index($5, key) == 1 {
        print substr($5, length(key) + 1) }' "$LOG"
}
median() {
    sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2];
        else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# med VMM KIND KEY [DIVISOR [DECIMALS]]: the median, divided (ms -> s, KiB -> MiB), 2 decimals by default.
med() {
    local m
    m=$(values "$1" "$2" "$3" | grep -E '^[0-9.]+$' | median)
    [ "$m" = n/a ] && { echo n/a; return; }
    awk -v m="$m" -v d="${4:-1}" -v n="${5:-2}" 'BEGIN { printf "%.*f", n, m / d }'
}
count() { values "$1" "$2" "$3" | grep -cE '^[0-9.]+$' || true; }
all() { values "$1" "$2" "$3" | awk -v d="${4:-1}" '{ if ($1 ~ /^[0-9.]+$/) printf "%s%.2f", sep, $1 / d; else printf "%s%s", sep, $1; sep = ", " }'; }
# spread VMM KIND KEY [DIVISOR [DECIMALS]]: "min-max" of the counted runs' values.
spread() {
    values "$1" "$2" "$3" | grep -E '^[0-9.]+$' | sort -n | awk -v d="${4:-1}" -v n="${5:-2}" '
        NR == 1 { lo = $1 } { hi = $1 } END { if (NR == 0) print "n/a"; else printf "%.*f-%.*f", n, lo / d, n, hi / d }'
}
top_value() { sed -n "s/^$1=//p" "$LOG" | head -1; }

# lab_host_values: a log written by run_l1 carries the date, load and run count of its own run: sets
# date_start, load_start, load_end and RUNS from it (a log without them keeps this run's values).
lab_host_values() {
    date_start=$(top_value HOST-DATE | grep . || echo "$date_start")
    load_start=$(top_value HOST-LOAD-START | grep . || echo "$load_start")
    load_end=$(top_value HOST-LOAD-END | grep . || cut -d' ' -f1-3 /proc/loadavg)
    RUNS=$(top_value HOST-RUNS | grep . || echo "$RUNS")
}
