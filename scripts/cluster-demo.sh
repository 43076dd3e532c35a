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

tag=oxcl$$
dir=$(mktemp -d /tmp/oxcluster-XXXXXX)
etcd_url=http://10.78.0.1:2379
pids=()
namespaces=()

cleanup() {
    [ "${OXVIRT_DEMO_KEEP:-0}" = 1 ] && { echo "cluster-demo: left running: namespaces ${namespaces[*]}, $dir"; return; }
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    for ns in "${namespaces[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT

netns() { ip netns add "$1"; ip -n "$1" link set lo up; namespaces+=("$1"); }

# The switch: a bridge in a namespace of its own; each member plugs in with a veth pair.
netns "$tag-sw"
ip -n "$tag-sw" link add br0 type bridge
ip -n "$tag-sw" link set br0 up
plug() { # NAMESPACE OUTER-LINK ADDRESS
    netns "$1"
    ip -n "$tag-sw" link add "$2" type veth peer name eth0 netns "$1"
    ip -n "$tag-sw" link set "$2" master br0 up
    ip -n "$1" addr add "$3/24" dev eth0
    ip -n "$1" link set eth0 up
}
plug "$tag-etcd" vetcd 10.78.0.1

echo "cluster-demo: etcd at $etcd_url (log $dir/etcd.log)"
ip netns exec "$tag-etcd" etcd --name demo --data-dir "$dir/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster demo=http://127.0.0.1:2380 >"$dir/etcd.log" 2>&1 </dev/null &
pids+=($!)
for _ in $(seq 120); do grep -q "ready to serve client requests" "$dir/etcd.log" && break; sleep 0.5; done
grep -q "ready to serve client requests" "$dir/etcd.log" || { echo "etcd did not come up:"; cat "$dir/etcd.log"; exit 1; }

declare -A daemon_pid
for i in 0 1 2; do
    name=host-$(printf "\\x$(printf %x $((97 + i)))")
    plug "$tag-$name" "v$name" "10.78.0.$((11 + i))"
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
