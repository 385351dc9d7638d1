"""glibc's allocator, told what suits a long-running exporter (best effort: elsewhere, and
without ctypes, these do nothing).

- Arenas: glibc gives each thread that allocates its own arena (up to 8 per core), and
  each keeps the pages it touched. The collector threads take turns holding the GIL, so
  they gain nothing from separate arenas; capped, they share.
- Start-up: importing the modules reads and unmarshals every .pyc, and that memory, freed,
  stays in the process's heap (RSS) until given back: malloc_trim once the daemon runs.
  No library does either (they are two libc calls), hence ctypes.
"""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h
ARENAS = 2


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc has both; musl has neither
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> None:
    """Cap malloc arenas; call before starting threads (later ones share the cap)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, arenas)  # 0 (refused) changes nothing: best effort


def give_back_freed_memory() -> None:
    """Return the heap's free pages to the kernel (malloc_trim(0))."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
