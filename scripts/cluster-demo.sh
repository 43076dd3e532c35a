#!/usr/bin/env bash
# The cluster (docs/cluster.md) on one machine, as root: etcd in a network namespace, three oxvirtd in three
# more (each with its own state directory and socket), a bridge joining them in a namespace of its own; nothing
# is added to the host's own namespace (10.78.0.0/24 exists only inside). It shows `oxvirt host-list` with the
# three hosts up, SIGKILLs host-b's oxvirtd and shows its lease expire, then removes everything it made.
# OXVIRT_DEMO_SKIP_SETUP=1 skips scripts/setup.sh (packages, build); OXVIRT_BIN_DIR picks the binaries
# (default target/debug); OXVIRT_DEMO_KEEP=1 leaves the namespaces, daemons and directory running for a look.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
[ "${OXVIRT_DEMO_SKIP_SETUP:-0}" = 1 ] || bash "$repo/scripts/setup.sh"
bin=${OXVIRT_BIN_DIR:-$repo/target/debug}
command -v etcd >/dev/null || { echo "cluster-demo: etcd is missing (Debian's etcd-server)" >&2; exit 1; }
# shellcheck source=scripts/cluster-lab.sh
source "$repo/scripts/cluster-lab.sh"

tag=oxcl$$
dir=$(mktemp -d /tmp/oxcluster-XXXXXX)
etcd_url=http://10.78.0.1:2379
pids=()

cleanup() {
    [ "${OXVIRT_DEMO_KEEP:-0}" = 1 ] && { echo "cluster-demo: left running: namespaces ${CLUSTER_LAB_NAMESPACES[*]}, $dir"; return; }
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    cluster_lab_remove
    rm -rf "$dir"
}
trap cleanup EXIT

# The switch: a bridge in a namespace of its own; each member plugs in with a veth pair.
cluster_lab_switch "$tag"
cluster_lab_plug "$tag-etcd" vetcd 10.78.0.1

echo "cluster-demo: etcd at $etcd_url (log $dir/etcd.log)"
cluster_lab_etcd "$tag-etcd" "$etcd_url" "$dir/etcd" "$dir/etcd.log" || exit 1

declare -A daemon_pid
for i in 0 1 2; do
    name=host-$(printf "\\x$(printf %x $((97 + i)))")
    cluster_lab_plug "$tag-$name" "v$name" "10.78.0.$((11 + i))"
    mkdir -p "$dir/$name"
    ip netns exec "$tag-$name" "$bin/oxvirtd" --socket "$dir/$name/oxvirtd.sock" --state-dir "$dir/$name/state" \
        --no-default-network --cluster "etcd=$etcd_url" --host-name "$name" >"$dir/$name/oxvirtd.log" 2>&1 </dev/null &
    daemon_pid[$name]=$!
    pids+=($!)
done

oxvirt_a() { "$bin/oxvirt" --socket "$dir/host-a/oxvirtd.sock" "$@"; }
wait_for() { # SECONDS PATTERN: until host-list on host-a matches
    for _ in $(seq $(($1 * 2))); do
        oxvirt_a host-list 2>/dev/null | grep -Eq "$2" && return 0
        sleep 0.5
    done
    echo "cluster-demo: host-list never showed /$2/:"; oxvirt_a host-list || true; return 1
}

wait_for 90 '^ host-c +up'
wait_for 30 '^ host-b +up'
echo "cluster-demo: three hosts joined; oxvirt host-list on host-a:"
oxvirt_a host-list

echo "cluster-demo: SIGKILL to host-b's oxvirtd; its lease (10 s) expires..."
kill -9 "${daemon_pid[host-b]}"
wait "${daemon_pid[host-b]}" 2>/dev/null || true
start=$(date +%s)
wait_for 30 '^ host-b +lease expired'
echo "cluster-demo: host-b seen down $(( $(date +%s) - start )) s after the kill:"
oxvirt_a host-list
