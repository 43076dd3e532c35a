/*
 * Experiment for benches/native-vmm.sh, not part of oxvirt: an LD_PRELOAD shim that makes oxvirt-vmm ask for
 * transparent huge pages on its guest RAM, as QEMU does (madvise MADV_HUGEPAGE), without changing crates/vmm.
 * oxvirt-vmm marks guest RAM MADV_MERGEABLE right after mapping it; this wrapper adds MADV_HUGEPAGE to that
 * call for mappings of 64 MiB or more.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <sys/mman.h>

int madvise(void *addr, size_t len, int advice)
{
    static int (*real_madvise)(void *, size_t, int);
    if (!real_madvise)
        real_madvise = (int (*)(void *, size_t, int))dlsym(RTLD_NEXT, "madvise");
    if (advice == MADV_MERGEABLE && len >= ((size_t)64 << 20))
        real_madvise(addr, len, MADV_HUGEPAGE);
    return real_madvise(addr, len, advice);
}
