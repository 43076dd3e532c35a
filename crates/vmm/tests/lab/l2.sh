#!/bin/sh
# Runs inside the L2 guest (under oxvirt-vmm). The check to run comes from the kernel command line (oxl2=MODE).
mode=$(sed -n 's/.*oxl2=\([a-z0-9-]*\).*/\1/p' /proc/cmdline)
echo "L2-MODE=$mode"
case "$mode" in
info)
    echo "NPROC=$(nproc)"
    echo "SOCKETS=$(grep 'physical id' /proc/cpuinfo | sort -u | wc -l)"
    echo "FLAGS=$(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2)"
    ;;
ticker)
    i=0
    while [ $i -lt 3000 ]; do
        echo "TICK $i"
        i=$((i + 1))
        sleep 0.1
    done
    ;;
blk)
    echo "BLK-RO=$(cat /sys/block/vda/ro)"
    echo "BLK-READ=$(dd if=/dev/vda bs=19 count=1 2>/dev/null)"
    printf 'WRITTEN-BY-L2' | dd of=/dev/vda bs=512 seek=8 conv=notrunc 2>/dev/null
    sync
    echo 3 >/proc/sys/vm/drop_caches
    echo "BLK-REREAD=$(dd if=/dev/vda bs=512 skip=8 count=1 2>/dev/null | head -c 13)"
    ;;
blkro)
    echo "BLK-RO=$(cat /sys/block/vda/ro)"
    echo "BLK-READ=$(dd if=/dev/vda bs=19 count=1 2>/dev/null)"
    if printf 'X' | dd of=/dev/vda bs=512 seek=8 conv=notrunc,fsync 2>/dev/null; then
        echo "BLK-WRITE=accepted"
    else
        echo "BLK-WRITE=refused"
    fi
    ;;
net)
    ip link set eth0 up
    ip addr add 10.0.2.2/24 dev eth0
    echo "NET-MAC=$(cat /sys/class/net/eth0/address)"
    n=0
    while [ $n -lt 30 ]; do
        if ping -c 1 -W 1 10.0.2.1 >/dev/null 2>&1; then
            echo "PING-OK"
            break
        fi
        n=$((n + 1))
    done
    [ $n -lt 30 ] || echo "PING-FAIL"
    ;;
counter)
    # The counter's value lives in a tmpfs (guest RAM): after a save and a restore into a new VMM process it
    # must go on from where it was, with the tmpfs marker and the uptime intact.
    mkdir -p /state && mount -t tmpfs tmpfs /state
    cat /proc/sys/kernel/random/uuid >/state/marker
    echo "MARKER=$(cat /state/marker)"
    echo 0 >/state/counter
    i=0
    while [ $i -lt 5000 ]; do
        i=$(($(cat /state/counter) + 1))
        echo $i >/state/counter
        echo "COUNT $i UP $(cut -d' ' -f1 /proc/uptime) MARK $(cat /state/marker)"
        if [ $((i % 10)) -eq 0 ]; then
            # Through the virtio-blk queue, not the page cache.
            echo 3 >/proc/sys/vm/drop_caches
            echo "BLK $(dd if=/dev/vda bs=19 count=1 2>/dev/null)"
        fi
        sleep 0.2
    done
    ;;
reboot)
    reboot -f
    sleep 30
    ;;
esac
