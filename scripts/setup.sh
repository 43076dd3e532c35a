#!/usr/bin/env bash
# Installs what oxvirt needs on a fresh Debian 12 machine (as root), builds the workspace and the test guest kit.
# Idempotent: what is already there is left alone.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
log() { printf 'setup: %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "run as root (apt-get, /dev/kvm, TAP devices and namespaces need it)"; exit 1; }

# Debian packages. qemu-system-x86 (7.2 in bookworm) and qemu-utils must come from the same release: a
# newer preinstalled qemu-utils (a backport) blocks qemu-system-x86, so both are pinned to bookworm's version.
# man-db: `man oxvirt`; bash-completion: `oxvirt` completes in bash; zsh and fish: the tests of their
# completion scripts; tmux: the shell's tests drive it through tmux's pseudo-terminal; vncsnapshot and
# xorriso: the graphical console's tests connect a real VNC client and make CD-ROM media; xorriso also makes
# `oxvirt install`'s cloud-init seed ISO and reads --location ISOs. grub-common, grub-pc-bin,
# grub-efi-amd64-bin, mtools: the bootable media the install tests use (grub-mkrescue). `oxvirt builder`
# (docs/builder.md): mmdebstrap, fdisk, e2fsprogs, dosfstools, mtools, grub-pc-bin (grub-bios-setup), mount.
packages=(busybox-static cpio dnsmasq-base nftables iproute2 ovmf procps python3 man-db bash-completion zsh fish tmux
          vncsnapshot xorriso grub-common grub-pc-bin grub-efi-amd64-bin mtools mmdebstrap fdisk e2fsprogs
          dosfstools mount)
# fio and sysbench: `oxvirt bench`'s workloads, on the host and (scripts/bench-kit.sh) in its guests.
packages+=(fio sysbench)
# The Prometheus project's own OpenMetrics parser, which crates/cli/tests/metrics.rs reads GET /metrics with.
packages+=(python3-prometheus-client)
# chromium: the web UI's browser tests (crates/cli/tests/web_ui.rs) drive Debian's headless Chromium.
packages+=(chromium)
# The cluster (docs/cluster.md): etcd-server, the etcd its tests and demo run; protobuf-compiler and
# libprotobuf-dev: the etcd-client crate's build compiles etcd's gRPC .proto files with protoc, and they import
# protobuf's well-known types (google/protobuf/*.proto), which libprotobuf-dev ships.
packages+=(etcd-server protobuf-compiler libprotobuf-dev)
# openssh-server (and its client): migrations to `oxvirt+ssh://` destinations; crates/cli/tests/migration_ssh.rs
# starts an sshd of its own in a network namespace (no sshd of the machine is started or used).
packages+=(openssh-server openssh-client)
# python3-venv: the virtualenv of schemathesis (scripts/schemathesis-venv.sh).
packages+=(python3-venv)
# Debian's libvirt, the real peer some tests compare with (virsh's snapshot tree through the embedded
# driver, qemu:///embed, in a temporary root): client, daemon library and QEMU driver only, without
# recommends and without libvirt-daemon-system, so no libvirtd runs and no default network (virbr0) appears.
libvirt_packages=(libvirt-clients libvirt-daemon libvirt-daemon-driver-qemu)
missing=()
for p in "${packages[@]}" qemu-system-x86 qemu-utils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
qemu_system=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
qemu_utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
if [ ${#missing[@]} -gt 0 ] || [ "$qemu_system" != "$qemu_utils" ]; then
    log "installing Debian packages"
    apt-get update -qq
    qemu_version=$(apt-cache madison qemu-system-x86 | awk -F'|' '$3 ~ /bookworm\/main/ { gsub(/ /, "", $2); print $2; exit }')
    [ -n "$qemu_version" ] || { log "no qemu-system-x86 in the apt sources"; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades \
        "${packages[@]}" "qemu-system-x86=$qemu_version" "qemu-utils=$qemu_version" \
        "qemu-block-extra=$qemu_version" >/dev/null
fi
missing=()
for p in "${libvirt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian's libvirt (client and QEMU driver, no daemon service)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# libvirt's QEMU driver runs guests as libvirt-qemu:kvm; libvirt-daemon-system would create them.
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent passwd libvirt-qemu >/dev/null || useradd -r -g kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu

# The web UI (web/, docs/web-ui.md): built before oxvirtd, which embeds web/dist at build time. Node.js and npm
# from Debian when the machine has no Node.js (18 in bookworm: enough for Vite 6 and playwright-core); npm's
# cache lives outside the clone, as the guest kit's downloads do, so a new clone installs from it.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    log "installing Node.js and npm (Debian's)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 18 ] || { log "Node.js $(node --version) is too old for web/: 18 or later is needed"; exit 1; }
npm_cache=${OXVIRT_CACHE:-/var/cache/oxvirt}/npm
mkdir -p "$npm_cache"
log "building the web UI (web/dist)"
(cd "$repo/web" && npm ci --cache "$npm_cache" --prefer-offline --no-audit --no-fund --loglevel=error >/dev/null &&
    npm run build --silent >/dev/null)

command -v cargo >/dev/null || { log "cargo is missing: install the Rust toolchain (rustup) first"; exit 1; }
log "building the workspace"
(cd "$repo" && cargo build --workspace --bins --quiet)
# Man pages and bash completion, generated from oxvirt's and oxvirtd's definitions.
oxvirt="${CARGO_TARGET_DIR:-$repo/target}/debug/oxvirt"
oxvirtd="${CARGO_TARGET_DIR:-$repo/target}/debug/oxvirtd"
log "installing man pages (man oxvirt, man oxvirt-VERB, man oxvirtd, man oxvirtd.conf) and bash completion"
"$oxvirt" __man-pages /usr/local/share/man/man1
pages=$(mktemp -d)
"$oxvirtd" __man-pages "$pages"
install -D -m 0644 "$pages/oxvirtd.8" /usr/local/share/man/man8/oxvirtd.8
install -D -m 0644 "$pages/oxvirtd.conf.5" /usr/local/share/man/man5/oxvirtd.conf.5
rm -rf "$pages"
mkdir -p /usr/local/share/bash-completion/completions
"$oxvirt" completion bash > /usr/local/share/bash-completion/completions/oxvirt
# The documented example configuration (every key commented out at its default, see
# docs/configuration.md). oxvirtd reads /etc/oxvirt/oxvirtd.conf; without it, the defaults.
install -D -m 0644 "$repo/etc/oxvirtd.conf" /etc/oxvirt/oxvirtd.conf.example
bash "$repo/scripts/guest-kit.sh"
# schemathesis (PyPI), which crates/cli/tests/openapi.rs runs against a live oxvirtd: a venv cached outside
# the clone, in ${OXVIRT_CACHE:-/var/cache/oxvirt}/venv-schemathesis-VERSION.
bash "$repo/scripts/schemathesis-venv.sh" >/dev/null
# Every QEMU runs as a user of its own (docs/security.md), which reads the guest kit's kernel and initramfs by
# name: as with libvirt's qemu user, every directory above them must be searchable by others (o+x: traversal
# only, not listing). A clone below a root-only directory (/root, say) gets that bit, said here.
dir=$repo/target/guest-kit
while [ "$dir" != / ]; do
    if [ $((0$(stat -c %a "$dir") & 01)) = 0 ]; then
        chmod o+x "$dir"
        log "$dir was not searchable by other users: made it so (chmod o+x) for the guests' users"
    fi
    dir=$(dirname "$dir")
done
log "ready"
