"""Where a stage's steps run: blocking ones on a thread, CPU work on the event loop's thread.

A node process has one event loop for every connection, so whatever may block on a disk or a
database (files, fsync, the store, a remote TSA) runs on a thread and never stalls it. But a
thread that calls into C while the loop runs Python pays for every release of the interpreter
lock, in CPU and far more in time (measured: hashing 8 KiB 7 → 14 µs of CPU, a SQLite
``SELECT 1`` 2.6 → 16 µs, parsing a delil.xml 0.17 → 0.56 ms; README, Benchmarks), and
verifying and signing are full of such calls (lxml, libxmlsec1, hashing). So a stage written
in steps says which are which, and the node runs a small message's CPU steps (verifying,
signing: a few milliseconds) on the loop's own thread and its blocking steps on threads.

A stage's last step is a blocking one (its commit), taken with ``last``: whoever runs the
stage may follow it with blocking work of its own on the same thread. A node's processing slot
claims its next message there (``FollowedBy``), instead of in one more hand-off of its own:
each hand-off wakes a worker thread, which costs the node more than its few lines suggest.

``IN_PLACE`` runs every step where it is called: tests and tools.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
U = TypeVar("U")


class Steps(Protocol):
    async def blocking(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A step that may wait for a disk, the store or the network."""
        ...

    async def cpu(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A step that only computes, for a few milliseconds at most."""
        ...

    async def last(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """The stage's last step, a blocking one: nothing of the stage comes after it."""
        ...


class OnThreads:
    """Blocking steps on the loop's default executor; CPU steps on the loop's own thread."""

    async def blocking(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(function, *args, **kwargs)

    async def cpu(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return function(*args, **kwargs)

    async def last(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.blocking(function, *args, **kwargs)


class FollowedBy(OnThreads, Generic[U]):
    """On threads, like ``ON_THREADS``, with the last step followed on its own thread by
    ``follow``, which must not raise; what it returned is ``followed`` (None when the last
    step was not reached or raised: then nothing followed it)."""

    def __init__(self, follow: Callable[[], U]) -> None:
        self.follow = follow
        self.followed: U | None = None

    async def last(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        def then_follow() -> T:
            result = function(*args, **kwargs)
            self.followed = self.follow()
            return result

        return await self.blocking(then_follow)


class InPlace:
    """Every step in the calling thread."""

    async def blocking(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return function(*args, **kwargs)

    async def cpu(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return function(*args, **kwargs)

    async def last(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return function(*args, **kwargs)


ON_THREADS = OnThreads()
IN_PLACE = InPlace()
