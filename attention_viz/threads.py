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
keep every core. Threads change no result: each thread count computes the same products.
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
    """Run the block on :func:`threads_for` ``(tokens)`` threads, then restore this thread's count.

    torch keeps the count per thread once a thread has used it, so concurrent script runs each set
    their own; every forward sets it explicitly rather than trusting what a thread inherited.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads_for(tokens))
    try:
        yield
    finally:
        torch.set_num_threads(before)
