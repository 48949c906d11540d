"""The PyTorch peers' memory allocator: glibc's, as Debian ships it, or jemalloc keeping its pages.

PyTorch 1.13 (Debian) takes tensors from malloc. Tensors above glibc's mmap threshold (at most
32 MB) are mapped fresh on every allocation and unmapped when freed, so at k = 60000 every step
faults its activations in again: on the AMD EPYC guest ~190000 minor faults (~750 MB) per step of
784-200-200-10, 1.4 s of system time (BENCHMARKS.md). jemalloc with purging off
(MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1) reuses the pages instead. The benchmarks time
both peers side by side, so a ratio against PyTorch does not rest on its allocator.
"""

import ctypes.util
import os

JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def peer_env(env, malloc):
    """env for a PyTorch peer process with malloc 'glibc' (unchanged) or 'jemalloc' (preloaded)."""
    env = dict(env)
    env["TDYN_PEER_MALLOC"] = malloc
    if malloc == "jemalloc":
        if not ctypes.util.find_library("jemalloc"):
            raise SystemExit("--torch-malloc jemalloc: libjemalloc.so.2 not found (scripts/setup.sh installs libjemalloc2)")
        env["LD_PRELOAD"] = "libjemalloc.so.2"
        env["MALLOC_CONF"] = JEMALLOC_CONF
    return env


def check_peer_malloc():
    """In a peer process: stop if jemalloc was asked for and is not the process's malloc."""
    if os.environ.get("TDYN_PEER_MALLOC") == "jemalloc":
        with open("/proc/self/maps") as maps:
            if "libjemalloc" not in maps.read():
                raise SystemExit("peer: jemalloc was asked for but is not loaded (LD_PRELOAD ignored?)")


def peer_name(malloc):
    return "torch" if malloc == "glibc" else f"torch-{malloc}"


def add_torch_malloc_argument(parser):
    parser.add_argument("--torch-malloc", nargs="+", default=["glibc"], choices=["glibc", "jemalloc"],
                        help="the PyTorch peers' malloc: glibc (Debian's), jemalloc (keeps its pages; "
                             "bench/peer_env.py); both: two peers side by side")


def peer_envs(env, mallocs):
    """{peer name: its environment}, one peer per distinct malloc, in the order given."""
    return {peer_name(m): peer_env(env, m) for m in dict.fromkeys(mallocs)}
