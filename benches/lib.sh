# Shared by the benchmark scripts that run oxvirt beside libvirt (sourced, not run): process helpers, the
# release build and guest kit, /dev/kvm for libvirt, and libvirt's three daemons. The caller defines say()
# and die(), and runs with `set -euo pipefail`.

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

# Builds oxvirtd and oxvirt (release; SKIP_BUILD=1 uses target/release as it is) and the guest kit.
build_oxvirt_and_guest_kit() {
    local binary
    if [ "${SKIP_BUILD:-0}" = 1 ]; then
        say "SKIP_BUILD=1: using the release binaries already in target/release"
    else
        say "building oxvirtd and oxvirt (release)"
        cargo build --release -q -p oxvirt-daemon -p oxvirt-cli
    fi
    for binary in oxvirtd oxvirt; do
        [ -x "target/release/$binary" ] || die "target/release/$binary is missing: build it (cargo build --release -p oxvirt-daemon -p oxvirt-cli)"
    done
    say "preparing the guest kit"
    bash scripts/guest-kit.sh > /dev/null
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
