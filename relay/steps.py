"""Where a stage's steps run: CPU work on the event loop's thread, blocking work there too for
a small message, on threads for the rest.

A node process has one event loop for every connection. A stage written in steps says which
of its steps compute (``cpu``: verifying, signing) and which may wait for a disk, the store or
another machine (``blocking``, and ``last``, its commit), and whoever runs the stage decides
where each runs. A thread that calls into C while the loop runs Python pays for every release
of the interpreter lock, in CPU and far more in time (measured: hashing 8 KiB 7 → 14 µs of
CPU, a SQLite ``SELECT 1`` 2.6 → 16 µs, parsing a delil.xml 0.17 → 0.56 ms; README,
Benchmarks), and verifying and signing are full of such calls (lxml, libxmlsec1, hashing): so
a node runs a small message's CPU steps (a few milliseconds) on the loop's own thread.

The same holds the other way round: while the loop's thread computes, a worker thread waits
for the interpreter lock after each call into C it made (each write, fsync, SQLite statement),
and the lock passes back and forth between them (measured: some 200 futex calls and 165
context switches per Dispatch, a fifth of the node's CPU). So a node runs a small message's
blocking steps in place as well (``IN_PLACE``), when its signing asks no remote TSA and
``[node] small_work`` is ``loop`` (the default): the disk and store work of one message is a
few milliseconds, taken in turn with the connections. A large message's blocking steps, and
signing that asks another machine, run on threads (``ON_THREADS``), as every blocking step
does with ``small_work = "threads"``: then a slow disk or store never holds the loop.

A stage's last step is a blocking one (its commit), taken with ``last``: whoever runs the
stage may follow it with blocking work of its own, where it ran. A node's processing slot
claims its next message there (``FollowedBy``): on threads, that saves a hand-off of its own,
and each hand-off wakes a worker thread.

A node runs those steps in turn with its connections (``IN_TURN``): each step waits for the
event loop's next turn before it runs, so what else is ready (a reply a peer sent the queue
manager, a block of DATA, a connection's next command) waits for one step, not for a whole
message of each processing slot. Without it, under a load that keeps the slots busy, the
queue manager's Evidence messages, four replies each, waited a whole round of the slots per
reply and left only once the Dispatches stopped (README, Benchmarks).

``IN_PLACE`` runs every step where it is called, at once: tests and tools.
"""

from __future__ import annotations

import asyncio
import contextvars
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


class FollowedBy(Generic[U]):
    """``steps``, with the last step followed where it ran (its thread, or in place) by
    ``follow``, which must not raise; what it returned is ``followed`` (None when the last
    step was not reached or raised: then nothing followed it). ``follow`` runs in a copy of
    the caller's context, as on a thread of ``ON_THREADS``: what it binds for logging stays its
    own in place too."""

    def __init__(self, follow: Callable[[], U], steps: Steps) -> None:
        self.follow = follow
        self.steps = steps
        self.followed: U | None = None

    async def blocking(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.steps.blocking(function, *args, **kwargs)

    async def cpu(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.steps.cpu(function, *args, **kwargs)

    async def last(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        def then_follow() -> T:
            result = function(*args, **kwargs)
            self.followed = contextvars.copy_context().run(self.follow)
            return result

        return await self.steps.last(then_follow)


class InPlace:
    """Every step in the calling thread."""

    async def blocking(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return function(*args, **kwargs)

    async def cpu(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return function(*args, **kwargs)

    async def last(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return function(*args, **kwargs)


class InTurn:
    """Every step in the calling thread, after the event loop's next turn."""

    async def blocking(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        await asyncio.sleep(0)
        return function(*args, **kwargs)

    async def cpu(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        await asyncio.sleep(0)
        return function(*args, **kwargs)

    async def last(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        await asyncio.sleep(0)
        return function(*args, **kwargs)


ON_THREADS = OnThreads()
IN_PLACE = InPlace()
IN_TURN = InTurn()
