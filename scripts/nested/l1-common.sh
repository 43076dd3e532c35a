# Sourced (as /lab/common.sh, scripts/nested/lab.sh puts it there) by the L1 scripts of the nested lab
# (benches/native-vmm/l1.sh, benches/native-restore/l1.sh, and scripts/nested/bench-l1.sh for `oxvirt bench`'s
# nested target), in L1's busybox sh: the L2 machine they all run, kvm-amd loaded, and L1's description on the
# console.
export PATH=/lab/bin:$PATH
RUNS=$(sed -n 's/.*oxbench_runs=\([0-9]*\).*/\1/p' /proc/cmdline)
RUNS=${RUNS:-5}
K=/lab/l2/vmlinuz
I=/lab/l2/initramfs.img
MEM=256
# Every console byte costs VM exits handled by an emulated L1: keep the boot log short (as the lab does).
CMD="console=ttyS0 panic=-1 quiet"
MARKER=OXVIRT-GUEST-BOOTED
PROMPT="oxvirt-guest# "

# result WHAT KIND RUN: prefixes the KEY=value lines of a measurement ("RESULT WHAT KIND RUN KEY=value").
result() {
    sed "s/^/RESULT $1 $2 $3 /"
}

modprobe kvm-amd 2>/dev/null
if [ ! -c /dev/kvm ]; then
    echo "BENCH-FATAL /dev/kvm missing after loading kvm-amd"
    exit 1
fi
echo "BENCH-L1-KERNEL=$(uname -r)"
echo "BENCH-L1-CPU=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "BENCH-L1-NPROC=$(nproc)"
echo "BENCH-L1-MEMTOTAL=$(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2-)"
