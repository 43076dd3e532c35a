#!/usr/bin/env python3
"""Runs the workspace's tests as `cargo test --workspace` does, in two lanes side by side.

Why: on 2 cores, `cargo test` runs one test binary at a time. A few binaries run a single long guest each (the
nested lab's, the image builder's): while one of them runs, one core waits. Here those run
one after the other in the "long" lane while every other binary runs, one at a time, in the "main" lane; the
doc tests run last in the main lane. Each binary runs as cargo runs it (working directory = its package's
directory, CARGO_MANIFEST_DIR and CARGO_PKG_NAME set) with the given test arguments; its output is printed in
one piece once it ends, so the lanes' outputs do not interleave. The exit status is 1 if any binary failed (all
run, as with --no-fail-fast), and a table of every binary's time ends the output.

Usage: scripts/test-lanes.py [-- TEST ARGS...]   (e.g. -- --test-threads=4)
OXVIRT_TEST_LANES=1 runs everything in one lane, one binary after the other, as `cargo test` does.
"""

import json
import os
import subprocess
import sys
import threading
import time

# (package, test target): the binaries of the long lane, longest first.
LONG = [
    ("oxvirt-cli", "builder"),
    ("oxvirt-vmm", "lab"),
    ("oxvirt-daemon", "native_lab"),
]

# Test arguments a binary gets after the common ones. The builder's two Debian guests (BIOS, and UEFI with
# Secure Boot) boot one after the other: side by side with the main lane's guests, four TCG guests on 2 cores
# starved the UEFI one (cloud-init was done 378 s after its kernel started, and a 30 s command missed).
EXTRA_ARGS = {
    ("oxvirt-cli", "builder"): ["--test-threads=1"],
}


def build(repo):
    """Builds every test binary (`cargo test --workspace --no-run`) and returns them in cargo's order."""
    command = ["cargo", "test", "--workspace", "--no-run", "--message-format=json-render-diagnostics"]
    process = subprocess.run(command, cwd=repo, stdout=subprocess.PIPE, text=True)
    if process.returncode != 0:
        sys.exit(f"test-lanes: {' '.join(command)} failed ({process.returncode})")
    binaries = []
    for line in process.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") != "compiler-artifact" or not message.get("profile", {}).get("test"):
            continue
        executable = message.get("executable")
        if not executable:
            continue
        package = message["package_id"]
        manifest = message["manifest_path"]
        target = message["target"]
        binaries.append(
            {
                "package": package_name(package, manifest),
                "target": target["name"],
                "kind": target["kind"][0],
                "executable": executable,
                "dir": os.path.dirname(manifest),
            }
        )
    return binaries


def package_name(package_id, manifest):
    """The package's name from cargo's package id ("path+file:///...#name@1.0" or "name 1.0 (...)")."""
    if "#" in package_id:
        tail = package_id.rsplit("#", 1)[1]
        return tail.split("@", 1)[0] if "@" in tail else os.path.basename(os.path.dirname(manifest))
    return package_id.split(" ", 1)[0]


def arguments_of(binary, test_args):
    """The common test arguments with the binary's own; its own replace a common one of the same name (libtest
    refuses an option given twice)."""
    extra = EXTRA_ARGS.get((binary["package"], binary["target"]), [])
    overridden = {arg.split("=", 1)[0] for arg in extra}
    return [arg for arg in test_args if arg.split("=", 1)[0] not in overridden] + extra


class Lanes:
    def __init__(self):
        self.lock = threading.Lock()
        self.results = []

    def run(self, lane, label, command, cwd, env):
        start = time.monotonic()
        process = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        seconds = time.monotonic() - start
        with self.lock:
            verdict = "ok" if process.returncode == 0 else f"FAILED (exit {process.returncode})"
            sys.stdout.write(f"\n==== [{lane}] {label}: {verdict} in {seconds:.0f} s\n")
            sys.stdout.write(process.stdout.decode(errors="replace"))
            sys.stdout.flush()
            self.results.append((label, lane, seconds, process.returncode == 0))


def main():
    args = sys.argv[1:]
    test_args = args[args.index("--") + 1 :] if "--" in args else []
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binaries = build(repo)
    known = {(b["package"], b["target"]) for b in binaries if b["kind"] == "test"}
    missing = [f"{p}/{t}" for p, t in LONG if (p, t) not in known]
    if missing:
        sys.exit(f"test-lanes: the long lane's {', '.join(missing)} is not a test binary of the workspace")
    rank = {key: i for i, key in enumerate(LONG)}
    long_lane = sorted(
        (b for b in binaries if b["kind"] == "test" and (b["package"], b["target"]) in rank),
        key=lambda b: rank[(b["package"], b["target"])],
    )
    main_lane = [b for b in binaries if b not in long_lane]
    if os.environ.get("OXVIRT_TEST_LANES") == "1":
        main_lane, long_lane = long_lane + main_lane, []
    lanes = Lanes()

    def run_binaries(lane, queue):
        for binary in queue:
            env = dict(os.environ, CARGO_MANIFEST_DIR=binary["dir"], CARGO_PKG_NAME=binary["package"])
            label = f"{binary['package']} {binary['kind']} {binary['target']}"
            lanes.run(lane, label, [binary["executable"], *arguments_of(binary, test_args)], binary["dir"], env)

    def main_then_doc():
        run_binaries("main", main_lane)
        # Doc tests compile as they run: cargo does that (it holds the target directory's lock, which nothing
        # else here needs any more).
        lanes.run("main", "doc tests", ["cargo", "test", "--workspace", "--doc", "--", *test_args], repo, None)

    threads = [threading.Thread(target=run_binaries, args=("long", long_lane)), threading.Thread(target=main_then_doc)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    print("\n==== test binaries by time")
    for label, lane, seconds, ok in sorted(lanes.results, key=lambda r: -r[2]):
        print(f"  {seconds:6.0f} s  {lane:<4}  {'ok    ' if ok else 'FAILED'}  {label}")
    failed = [label for label, _, _, ok in lanes.results if not ok]
    if failed:
        print(f"\n{len(failed)} test binaries failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
