"""Where a stage's steps run: blocking ones on a thread, CPU work on the event loop's thread.

A node process has one event loop for every connection, so whatever may block on a disk or a
database (files, fsync, the store, a remote TSA) runs on a thread and never stalls it. But a
thread that calls into C while the loop runs Python pays for every release of the interpreter
lock, in CPU and far more in time (measured: hashing 8 KiB 7 → 14 µs of CPU, a SQLite
``SELECT 1`` 2.6 → 16 µs, parsing a delil.xml 0.17 → 0.56 ms; README, Benchmarks), and
verifying and signing are full of such calls (lxml, libxmlsec1, hashing). So a stage written
in steps says which are which, and the node runs a small message's CPU steps (verifying,
signing: a few milliseconds) on the loop's own thread and its blocking steps on threads.

``IN_PLACE`` runs every step where it is called: tests and tools.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Steps(Protocol):
    async def blocking(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A step that may wait for a disk, the store or the network."""
        ...

    async def cpu(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A step that only computes, for a few milliseconds at most."""
        ...


class OnThreads:
    """Blocking steps on the loop's default executor; CPU steps on the loop's own thread."""

    async def blocking(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(function, *args, **kwargs)

    async def cpu(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return function(*args, **kwargs)


class InPlace:
    """Every step in the calling thread."""

    async def blocking(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return function(*args, **kwargs)

    async def cpu(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return function(*args, **kwargs)


ON_THREADS = OnThreads()
IN_PLACE = InPlace()
