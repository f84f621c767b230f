"""How many CPU threads a run should use, from the CPUs this process may use and how busy they are now.

A model's matrix products split across threads that meet at a barrier after every operation, so one
thread that the system has put aside for another program holds all the others up. On a machine whose
CPUs are already busy, two threads decode several times slower than one (measured on 2 CPUs with the
load average near 9: SmolLM2 at 0.6-1.2 tok/s and a 5-7 s first token with 2 threads, 2.2-3.9 tok/s and
0.3-0.4 s with 1). So ``threads="auto"`` is:

* 1 for models under `SMALL_MODEL_PARAMETERS` (their products are too small to share out);
* otherwise the CPUs this process may run on (its affinity, capped by a cgroup CPU quota, and by torch's
  own default, which is the physical cores or OMP_NUM_THREADS), less the CPUs other programs keep busy,
  rounded, and at least 1.

"Busy" is measured, not guessed: on Linux `CpuUse` reads the per-CPU counters of ``/proc/stat`` at two
moments (the model loader takes the first when it starts reading files, so the sample costs nothing) and
subtracts this process's own CPU time; elsewhere the 1-minute load average stands in.

`DecodeWatch` checks the same thing while tokens are generated: the share of its threads' time the
process actually got. When several threads got far less than they needed, the CLI says once that the CPUs
are busy and that ``--threads 1`` is faster. Standard library only.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

__all__ = [
    "SMALL_MODEL_PARAMETERS",
    "usable_cpus",
    "quota_cpus",
    "CpuUse",
    "busy_elsewhere",
    "busy_now",
    "auto_thread_count",
    "AutoThreads",
    "DecodeWatch",
]

#: Below this many parameters a token's matrix products are small enough that extra CPU threads only
#: add synchronisation (on 2-vCPU machines 2 threads were measured ~20x slower than 1): use one thread.
SMALL_MODEL_PARAMETERS = 50_000_000
#: The shortest sample of the CPU counters worth reading (they count in 1/100 s on Linux).
MIN_SAMPLE_S = 0.1
#: A run whose threads got less than this share of their time was held up by other programs.
BUSY_SHARE = 0.5
#: Decode tokens (and seconds) to watch before judging: the first steps warm caches and allocators.
WATCH_TOKENS = 16
WATCH_SECONDS = 1.0

_STAT = "/proc/stat"


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity set, capped by a cgroup CPU quota (containers)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = quota_cpus()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def quota_cpus(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs' worth of time the cgroup quota allows (``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us`` in v1),
    or None when there is no quota."""
    try:
        with open(os.path.join(root, "cpu.max"), encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us"), encoding="ascii") as f:
            quota_us = int(f.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us"), encoding="ascii") as f:
            period_us = int(f.read())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


@dataclass(frozen=True)
class CpuUse:
    """One reading of the CPU counters: per CPU (busy, total) clock ticks, this process's CPU seconds and
    the wall clock. Two readings tell how much other programs used the CPUs in between."""

    ticks: dict[int, tuple[int, int]]
    own_s: float
    wall_s: float

    @classmethod
    def now(cls, stat_text: str | None = None) -> "CpuUse | None":
        """Read the counters (None where ``/proc/stat`` cannot be read: not Linux)."""
        if stat_text is None:
            try:
                with open(_STAT, encoding="ascii") as f:
                    stat_text = f.read()
            except OSError:
                return None
        ticks: dict[int, tuple[int, int]] = {}
        for line in stat_text.splitlines():
            name, _, rest = line.partition(" ")
            if not (name.startswith("cpu") and name[3:].isdigit()):
                continue
            fields = [int(x) for x in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
            if len(fields) < 5:
                continue
            idle = fields[3] + fields[4]
            ticks[int(name[3:])] = (sum(fields) - idle, sum(fields))
        return cls(ticks, _own_cpu_s(), time.perf_counter()) if ticks else None


def busy_elsewhere(start: CpuUse, end: CpuUse, cpus: set[int] | None = None) -> float | None:
    """CPUs' worth of work other programs did on ``cpus`` (default: this process's affinity) between two
    readings: their busy time less this process's own, over the time that passed. None if too short."""
    if cpus is None:
        try:
            cpus = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = set(end.ticks)
    busy = total = 0
    for cpu in cpus & set(start.ticks) & set(end.ticks):
        busy += end.ticks[cpu][0] - start.ticks[cpu][0]
        total += end.ticks[cpu][1] - start.ticks[cpu][1]
    n = len(cpus & set(start.ticks) & set(end.ticks))
    if total <= 0 or n == 0:
        return None
    tick_s = 1.0 / _ticks_per_second()
    own_ticks = (end.own_s - start.own_s) / tick_s
    others = max(0.0, busy - own_ticks) / total  # share of these CPUs' time
    return others * n


def _ticks_per_second() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK")) or 100
    except (AttributeError, ValueError, OSError):
        return 100


def busy_now(since: CpuUse | None = None) -> float | None:
    """CPUs' worth of other programs' work right now: measured from ``since`` (or over `MIN_SAMPLE_S`),
    else the 1-minute load average shared out over the machine's CPUs; None if neither is available."""
    start = since if since is not None else CpuUse.now()
    if start is not None:
        wait = MIN_SAMPLE_S - (time.perf_counter() - start.wall_s)
        if wait > 0:
            time.sleep(wait)
        end = CpuUse.now()
        if end is not None:
            return busy_elsewhere(start, end)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    return load * usable_cpus() / (os.cpu_count() or 1)


@dataclass(frozen=True)
class AutoThreads:
    """``threads="auto"`` carrying the CPU reading taken when loading started (see `busy_now`)."""

    since: CpuUse | None


def auto_thread_count(num_parameters: int, *, cpus: int, ceiling: int, busy: float | None) -> int:
    """The policy, with every measurement passed in: 1 thread for a small model; otherwise the ``cpus``
    this process may use (at most ``ceiling``, torch's default) less the ``busy`` CPUs other programs
    keep busy (rounded to the nearest whole CPU), and at least 1."""
    if num_parameters < SMALL_MODEL_PARAMETERS:
        return 1
    n = min(cpus, ceiling)
    if busy is not None:
        n = min(n, math.floor(cpus - busy + 0.5))
    return max(1, n)


class DecodeWatch:
    """Watches decoding for threads that do not get the CPU time they need.

    ``tick()`` after every token; once `WATCH_TOKENS` tokens and `WATCH_SECONDS` have passed (after the
    first token, which includes the prompt), ``share`` is the part of ``threads × wall time`` this
    process spent on a CPU, and ``note()`` says what to do when several threads got less than
    `BUSY_SHARE` of it. One thread held up by other programs has nothing to change, so it gets no note.
    """

    def __init__(self, threads: int, clock=time.perf_counter, cpu_clock=_own_cpu_s) -> None:
        self.threads = threads
        self._clock, self._cpu_clock = clock, cpu_clock
        self._tokens = 0
        self._start: tuple[float, float] | None = None
        self.share: float | None = None
        self.tokens_per_s: float | None = None

    def tick(self) -> None:
        self._tokens += 1
        if self.share is not None:
            return
        if self._start is None:
            self._start = (self._clock(), self._cpu_clock())
            return
        wall = self._clock() - self._start[0]
        if self._tokens - 1 >= WATCH_TOKENS and wall >= WATCH_SECONDS:
            self.share = (self._cpu_clock() - self._start[1]) / (wall * self.threads)
            self.tokens_per_s = (self._tokens - 1) / wall

    def note(self) -> str | None:
        if self.share is None or self.threads < 2 or self.share >= BUSY_SHARE:
            return None
        return (
            f"note: decoding ran at {self.tokens_per_s:.1f} tok/s because other programs keep this machine's "
            f"CPUs busy ({self.threads} threads got {self.share:.0%} of their time); with --threads 1 it is "
            "usually several times faster here"
        )
