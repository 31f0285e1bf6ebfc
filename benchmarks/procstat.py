"""CPU time of a process and all its descendants, from /proc, exact across exits.

For every process, /proc/<pid>/stat has ``utime + stime`` (its own CPU, all its threads) and
``cutime + cstime`` (what its children used, added by the kernel when it reaps one; a child's
own ``cutime`` comes along, so a whole reaped subtree is counted). The CPU a tree has used up
to now is therefore the sum, over its live (or zombie) processes, of both: a descendant that
exits and is reaped by its parent in the tree moves from the one term to the other, losing
nothing. Only a descendant orphaned to init (its parent gone first) drops out; ``Snapshot``
lists the processes that vanished or appeared between two snapshots, so that shows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    own: float  # utime + stime, seconds
    reaped: float  # cutime + cstime, seconds
    cmdline: str


def read_proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of proc(5)); utime is field 14, cstime field 17.
    return Proc(
        pid,
        int(fields[1]),
        (int(fields[11]) + int(fields[12])) / TICK,
        (int(fields[13]) + int(fields[14])) / TICK,
        cmdline.strip(),
    )


def tree(root: int) -> dict[int, Proc]:
    """``root`` and every process under it, read in one pass over /proc."""
    procs: dict[int, Proc] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            proc = read_proc(int(entry.name))
            if proc is not None:
                procs[proc.pid] = proc
    found: dict[int, Proc] = {}
    if root not in procs:
        return found
    found[root] = procs[root]
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for proc in procs.values():
            if proc.ppid == parent and proc.pid not in found:
                found[proc.pid] = proc
                frontier.append(proc.pid)
    return found


def tree_cpu_seconds(root: int) -> float:
    return sum(p.own + p.reaped for p in tree(root).values())


def depth(procs: dict[int, Proc], pid: int, root: int) -> int:
    d = 0
    while pid != root:
        pid = procs[pid].ppid
        d += 1
    return d


@dataclass
class Snapshot:
    root: int
    procs: dict[int, Proc]

    @classmethod
    def take(cls, root: int) -> Snapshot:
        return cls(root, tree(root))

    def total(self) -> float:
        return sum(p.own + p.reaped for p in self.procs.values())


def machine_busy_seconds() -> float:
    """CPU time all cores of the machine have spent busy since boot (/proc/stat): user, nice,
    system, irq, softirq and steal; not idle or iowait."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK
