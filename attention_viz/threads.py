"""How many CPU threads one forward pass runs on.

torch splits each matrix product across every core. For a short text that costs more than it
saves: the threads hand each small product to one another, and in a thread that has not run torch
before (Streamlit starts a new one for every script run) torch also starts its OpenMP team anew.
Measured on 2 cores, SmolLM2, a new thread per forward, all 30 layers:

====================  =========================  =========================
tokens (rows × len)   2 threads: CPU / wall      1 thread: CPU / wall
====================  =========================  =========================
32                    0.18 / 0.13 s              0.12 / 0.12 s
64                    0.29 / 0.21 s              0.20 / 0.20 s
128                   0.50 / 0.32 s              0.43 / 0.42 s
====================  =========================  =========================

So a forward of at most :data:`ONE_THREAD_MAX_TOKENS` tokens runs on one thread: no slower, and
a third less CPU, which a server shared by a class spends on other students' runs. Longer texts
keep every core. The thread count can change a result only by float rounding, in the order a
product's terms are added (tests/test_threads.py: the weights agree to 1e-6).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

ONE_THREAD_MAX_TOKENS = 64
"""A forward over at most this many tokens (rows × length, padding included) runs on one thread."""

_PROCESS_THREADS = torch.get_num_threads()  # torch's default when this module loads: every core


def threads_for(tokens: int) -> int:
    """The intra-op thread count for a forward over ``tokens`` tokens (rows × length)."""
    return 1 if tokens <= ONE_THREAD_MAX_TOKENS else _PROCESS_THREADS


@contextlib.contextmanager
def forward_threads(tokens: int) -> Iterator[None]:
    """Run the block on :func:`threads_for` ``(tokens)`` threads, then go back to the default.

    torch keeps the count per thread once a thread has used it, but a new thread starts from the
    count set last by any thread. So every forward sets its own explicitly, and each sets the
    default back afterwards (not the count it found: a thread started during another's short
    forward would find 1 and pass it on).
    """
    torch.set_num_threads(threads_for(tokens))
    try:
        yield
    finally:
        torch.set_num_threads(_PROCESS_THREADS)
