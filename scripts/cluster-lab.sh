# Sourced by scripts/cluster-demo.sh and benches/cluster.sh (not run): the cluster's namespaces on one
# machine, as crates/cli/tests/clustersupport sets them up in Rust. A switch namespace TAG-sw with bridge
# br0; each member (and etcd) a namespace plugged into it by a veth pair, with an address that exists only
# inside. Every namespace made is in CLUSTER_LAB_NAMESPACES, for cluster_lab_remove.
CLUSTER_LAB_NAMESPACES=()

# cluster_lab_netns NAME: a namespace with its loopback up.
cluster_lab_netns() {
    ip netns add "$1"
    CLUSTER_LAB_NAMESPACES+=("$1")
    ip -n "$1" link set lo up
}

# cluster_lab_switch TAG: the switch, TAG-sw with br0.
cluster_lab_switch() {
    CLUSTER_LAB_TAG=$1
    cluster_lab_netns "$1-sw"
    ip -n "$1-sw" link add br0 type bridge
    ip -n "$1-sw" link set br0 up
}

# cluster_lab_plug NAMESPACE OUTER-LINK ADDRESS: a new namespace on the switch, its eth0 at ADDRESS/24.
cluster_lab_plug() {
    cluster_lab_netns "$1"
    ip -n "$CLUSTER_LAB_TAG-sw" link add "$2" type veth peer name eth0 netns "$1"
    ip -n "$CLUSTER_LAB_TAG-sw" link set "$2" master br0 up
    ip -n "$1" addr add "$3/24" dev eth0
    ip -n "$1" link set eth0 up
}

# cluster_lab_etcd NAMESPACE URL DATA_DIR LOG: Debian's etcd in NAMESPACE serving clients at URL (a single
# member, its peer port on the namespace's loopback), in the background; returns once it is ready (fails
# after 60 s, or when it exits). Sets CLUSTER_LAB_ETCD_PID.
cluster_lab_etcd() {
    local i
    ip netns exec "$1" etcd --name lab --data-dir "$3" \
        --listen-client-urls "$2" --advertise-client-urls "$2" \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster lab=http://127.0.0.1:2380 > "$4" 2>&1 < /dev/null &
    CLUSTER_LAB_ETCD_PID=$!
    disown "$CLUSTER_LAB_ETCD_PID" # killed with its namespace: no "Killed" line from bash
    for ((i = 0; i < 600; i++)); do
        grep -q "ready to serve client requests" "$4" 2> /dev/null && return 0
        kill -0 "$CLUSTER_LAB_ETCD_PID" 2> /dev/null || { echo "etcd exited:" >&2; tail -5 "$4" >&2; return 1; }
        sleep 0.1
    done
    echo "etcd did not come up within 60 s:" >&2
    tail -5 "$4" >&2
    return 1
}

# cluster_lab_pids NAMESPACE: every process in it (a member's oxvirtd and the QEMUs it started).
cluster_lab_pids() { ip netns pids "$1" 2> /dev/null || true; }

# cluster_lab_remove: SIGKILLs every process of the namespaces made, waits until they are gone, deletes
# the namespaces.
cluster_lab_remove() {
    local ns pid
    for ns in "${CLUSTER_LAB_NAMESPACES[@]}"; do
        for pid in $(cluster_lab_pids "$ns"); do kill -KILL "$pid" 2> /dev/null || true; done
    done
    for ns in "${CLUSTER_LAB_NAMESPACES[@]}"; do
        for pid in $(cluster_lab_pids "$ns"); do
            while kill -0 "$pid" 2> /dev/null; do sleep 0.05; done
        done
        ip netns del "$ns" 2> /dev/null || true
    done
    CLUSTER_LAB_NAMESPACES=()
}
