#!/bin/sh
# Guest side of benches/network.sh. Appended to the test guest kit's initramfs as /lab/run.sh, which the
# kit's init runs after boot (then it prints OXVIRT-LAB-EXIT=<status> and powers off).
#
# Configures eth0 by DHCP (busybox udhcpc), then plays the role named on the kernel command line:
#   oxbench.role=server   iperf3 server on eth0's address, forever (the host destroys the guest)
#   oxbench.role=client   for run in 1..oxbench.runs, for each target in oxbench.targets (comma separated
#                         IPv4 addresses): iperf3 -c target -t oxbench.time -P oxbench.streams, and prints
#                         "OXBENCH-RESULT target=T run=R mbps=X" (X: the receiver's total in Mbit/s) or
#                         "OXBENCH-FAILED target=T run=R status=S".
export PATH=/bin:/sbin:/usr/bin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu

role='' targets='' runs=3 seconds=10 streams=1 omit=1
# shellcheck disable=SC2013 # the kernel command line is one line of words
for word in $(cat /proc/cmdline); do
    case $word in
        oxbench.role=*) role=${word#*=} ;;
        oxbench.targets=*) targets=$(echo "${word#*=}" | tr ',' ' ') ;;
        oxbench.runs=*) runs=${word#*=} ;;
        oxbench.time=*) seconds=${word#*=} ;;
        oxbench.streams=*) streams=${word#*=} ;;
        oxbench.omit=*) omit=${word#*=} ;;
    esac
done
echo "OXBENCH-ROLE=$role vcpus=$(grep -c ^processor /proc/cpuinfo) queues=$(find /sys/class/net/eth0/queues/ -maxdepth 1 -name 'rx-*' 2>/dev/null | wc -l)"

ip link set eth0 up || exit 10
udhcpc -i eth0 -q -f -n -t 20 -T 2 -s /lab/udhcpc.script > /tmp/udhcpc.log 2>&1 || {
    cat /tmp/udhcpc.log
    echo "OXBENCH-NO-LEASE"
    exit 11
}
address=$(ip -4 -o addr show dev eth0 | awk '{ print $4 }')
echo "OXBENCH-ADDRESS=$address"

case $role in
    server)
        echo "OXBENCH-SERVER-READY"
        while true; do iperf3 -s -B "${address%/*}" > /tmp/iperf3-server.log 2>&1; sleep 1; done
        ;;
    client)
        run=1
        while [ "$run" -le "$runs" ]; do
            for target in $targets; do
                iperf3 -c "$target" -t "$seconds" -O "$omit" -P "$streams" -f m > /tmp/iperf3.log 2>&1
                status=$?
                mbps=$(awk '/receiver/ { for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") v = $(i - 1) } END { print v }' /tmp/iperf3.log)
                if [ "$status" = 0 ] && [ -n "$mbps" ]; then
                    echo "OXBENCH-RESULT target=$target run=$run mbps=$mbps"
                else
                    cat /tmp/iperf3.log
                    echo "OXBENCH-FAILED target=$target run=$run status=$status"
                fi
            done
            run=$((run + 1))
        done
        ;;
    *)
        echo "OXBENCH-BAD-ROLE=$role"
        exit 12
        ;;
esac
