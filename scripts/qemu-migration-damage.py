#!/usr/bin/env python3
"""Plain QEMU, no oxvirt: how often does a TCG guest arrive damaged after a live migration?

docs/migration.md ("Known problem") names this script. Live migrations of TCG guests whose memory changes
while it is sent sometimes arrive damaged in QEMU 7.2 (Debian 12's): the destination's kernel oopses or
finds its lists corrupted, as if pages written during the migration were never sent again. It happened
under oxvirt and under libvirt (benches/migration.sh counts it), and in oxvirt's remote migration test to a
guest migrated after a migration of it had failed mid-stream. This script takes oxvirt and libvirt out of
the question: it runs qemu-system-x86_64 itself over QMP, with the test guest kit (scripts/guest-kit.sh)
and a workload that copies a 64 MiB file in a tmpfs and checks its MD5 sum, pass after pass, printing
`REPRO ok N` (or `REPRO BAD N`) on the serial console.

Each trial: the source boots the guest; with `failed-first`, a first migration (1 MiB/s, through a relay
that stops forwarding after 8 MiB for 20 s and then closes both ends, as a cut network would) fails and the
guest goes on at the source; then a migration over a Unix socket to a new destination QEMU completes, and
the destination's console is watched until the workload made 5 more passes. A trial is `damaged` when the
destination printed a kernel error or a bad checksum, or stalled for 90 s.

    scripts/qemu-migration-damage.py [--trials N] [--kinds control,failed-first] [--tcg-thread single|multi]

(`--tcg-thread` is `-accel tcg,thread=`: QEMU's default for x86 is multi, a host thread per vCPU.)

Needs root only where QEMU does; uses the guest kit in $OXVIRT_GUEST_KIT_DIR or target/guest-kit and a
temporary directory it removes. TCG only (the machine's /dev/kvm is never used).
"""
import argparse
import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KIT = os.environ.get("OXVIRT_GUEST_KIT_DIR", os.path.join(REPO, "target", "guest-kit"))
# The kit's init runs /lab/run.sh after boot (an extra cpio appended to its initramfs).
WORKLOAD = """#!/bin/sh
export PATH=/bin:/sbin:/usr/bin
mkdir -p /mnt/d
mount -t tmpfs -o size=200m tmpfs /mnt/d
dd if=/dev/urandom of=/mnt/d/a bs=1M count=64 2>/dev/null
sum=$(md5sum /mnt/d/a | cut -d' ' -f1)
n=0
while :; do
    cp /mnt/d/a /mnt/d/b
    s=$(md5sum /mnt/d/b | cut -d' ' -f1)
    n=$((n + 1))
    if [ "$s" = "$sum" ]; then echo "REPRO ok $n"; else echo "REPRO BAD $n"; fi
done
"""
DAMAGE = re.compile(rb"REPRO BAD|BUG:|Oops|general protection|Kernel panic|list_del corruption|list_add corruption")
STALL = 90


class Qmp:
    """The least of QMP: one command at a time, events skipped."""

    def __init__(self, path):
        deadline = time.time() + 30
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")
        self.file.readline()
        self.cmd("qmp_capabilities")

    def cmd(self, name, **arguments):
        self.file.write(json.dumps({"execute": name, "arguments": arguments}).encode() + b"\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(f"{name}: {reply['error']}")
            return reply["return"]


def initramfs_with_workload(work):
    """The kit's initramfs plus a cpio holding /lab/run.sh (newc, as the kernel unpacks concatenated ones)."""
    root = os.path.join(work, "extra")
    os.makedirs(os.path.join(root, "lab"))
    with open(os.path.join(root, "lab", "run.sh"), "w") as script:
        script.write(WORKLOAD)
    os.chmod(os.path.join(root, "lab", "run.sh"), 0o755)
    archive = subprocess.run(
        "find . | cpio -o -H newc --quiet", shell=True, cwd=root, check=True, capture_output=True
    ).stdout
    out = os.path.join(work, "initramfs.img")
    shutil.copyfile(os.path.join(KIT, "initramfs.img"), out)
    with open(out, "ab") as image:
        image.write(gzip.compress(archive))
    return out


class Trial:
    def __init__(self, work, initramfs, accel):
        self.work, self.initramfs, self.accel, self.processes = work, initramfs, accel, []

    def qemu(self, name, incoming=None):
        args = [
            "qemu-system-x86_64", "-accel", self.accel, "-machine", "pc", "-m", "384", "-smp", "1",
            "-kernel", os.path.join(KIT, "vmlinuz"), "-initrd", self.initramfs,
            "-append", "console=ttyS0 panic=-1", "-display", "none", "-no-reboot", "-nodefaults",
            "-serial", f"file:{self.path(name + '.log')}",
            "-qmp", f"unix:{self.path(name + '.qmp')},server=on,wait=off",
        ]
        if incoming:
            args += ["-incoming", incoming]
        self.processes.append(subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return Qmp(self.path(name + ".qmp"))

    def path(self, name):
        return os.path.join(self.work, name)

    def console(self, name):
        try:
            with open(self.path(name + ".log"), "rb") as log:
                return log.read()
        except FileNotFoundError:
            return b""

    def passes(self, name):
        found = re.findall(rb"REPRO ok (\d+)", self.console(name))
        return int(found[-1]) if found else 0

    def end(self):
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.wait()


def wait(condition, seconds, what):
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def cut_relay(listen_path, target_path, after_bytes, stalled_seconds):
    """Forwards the source's stream to the destination, then stops reading (a cut cable) and closes."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(listen_path)
    server.listen(1)

    def relay():
        source, _ = server.accept()
        destination = socket.socket(socket.AF_UNIX)
        destination.connect(target_path)
        moved = 0
        while moved < after_bytes:
            chunk = source.recv(65536)
            if not chunk:
                break
            destination.sendall(chunk)
            moved += len(chunk)
        time.sleep(stalled_seconds)
        source.close()
        destination.close()
        server.close()

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    return thread


def status(qmp):
    return qmp.cmd("query-migrate").get("status")


def run_trial(work, initramfs, accel, failed_first):
    trial = Trial(work, initramfs, accel)
    try:
        source = trial.qemu("source")
        wait(lambda: trial.passes("source") >= 2, 300, "the source's workload")
        if failed_first:
            first = trial.qemu("first", "defer")
            first.cmd("migrate-incoming", uri=f"unix:{trial.path('first-in.sock')}")
            relay = cut_relay(trial.path("relay.sock"), trial.path("first-in.sock"), 8 << 20, 20)
            source.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 20})
            source.cmd("migrate", uri=f"unix:{trial.path('relay.sock')}")
            wait(lambda: status(source) == "failed", 180, "the first migration failing")
            relay.join()
            at = trial.passes("source")
            wait(lambda: trial.passes("source") >= at + 2, 180, "the source going on after the failure")
            if DAMAGE.search(trial.console("source")):
                return "source damaged by the failed migration"
        source.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
        trial.qemu("destination", f"unix:{trial.path('destination-in.sock')}")
        source.cmd("migrate", uri=f"unix:{trial.path('destination-in.sock')}")
        wait(lambda: status(source) in ("completed", "failed"), 600, "the migration")
        if status(source) != "completed":
            return "error: the migration failed"
        at = trial.passes("source")
        try:
            wait(
                lambda: trial.passes("destination") >= at + 5 or DAMAGE.search(trial.console("destination")),
                STALL,
                "the destination's workload",
            )
        except TimeoutError:
            return f"damaged: stalled (pass {trial.passes('destination')}, the source was at {at})"
        found = DAMAGE.search(trial.console("destination"))
        if found:
            text = trial.console("destination")[found.start():found.start() + 100]
            return "damaged: " + text.split(b"\n")[0].decode(errors="replace").strip()
        return "ok"
    except TimeoutError as timeout:
        return f"error: timed out waiting for {timeout}"
    finally:
        trial.end()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--kinds", default="control,failed-first")
    parser.add_argument("--tcg-thread", choices=("single", "multi"))
    options = parser.parse_args()
    accel = f"tcg,thread={options.tcg_thread}" if options.tcg_thread else "tcg"
    kinds = options.kinds.split(",")
    for kind in kinds:
        if kind not in ("control", "failed-first"):
            sys.exit(f"unknown kind '{kind}' (known: control, failed-first)")
    for needed in ("vmlinuz", "initramfs.img"):
        if not os.path.exists(os.path.join(KIT, needed)):
            sys.exit(f"{KIT}/{needed} is missing: run scripts/guest-kit.sh")
    version = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
    print(f"{version.splitlines()[0]}, -accel {accel}")
    results = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="qemu-migration-damage.") as work:
        initramfs = initramfs_with_workload(work)
        for number in range(1, options.trials + 1):
            for kind in kinds:  # interleaved: the machine's load falls on both kinds alike
                trial_dir = os.path.join(work, f"{kind}-{number}")
                os.mkdir(trial_dir)
                result = run_trial(trial_dir, initramfs, accel, kind == "failed-first")
                results[kind].append(result)
                print(f"{kind} {number}: {result}  (load {open('/proc/loadavg').read().split()[0]})", flush=True)
    for kind in kinds:
        damaged = sum(result.startswith("damaged") for result in results[kind])
        errors = sum(result.startswith("error") for result in results[kind])
        print(f"{kind}: {damaged} of {len(results[kind])} migrations damaged the guest ({errors} errors)")


if __name__ == "__main__":
    main()
