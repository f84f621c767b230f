"""``--threads auto`` on idle and busy machines, and the note when busy CPUs hold decoding up: the policy
with the CPUs, the quota and the other programs' load passed in, so every case is exact."""

from __future__ import annotations

import pytest

from llmbuilder_cli import cpu_load
from llmbuilder_cli.cpu_load import (
    SMALL_MODEL_PARAMETERS,
    CpuUse,
    DecodeWatch,
    auto_thread_count,
    busy_elsewhere,
    quota_cpus,
)

BIG = 135_000_000  # SmolLM2-135M


@pytest.mark.parametrize(
    "cpus, ceiling, busy, expected",
    [
        (2, 2, 0.0, 2),  # an idle 2-CPU machine: both
        (2, 2, None, 2),  # nothing measured: all the CPUs
        (2, 2, 0.4, 2),  # a little other work: still both
        (2, 2, 0.6, 1),  # more than half a CPU taken: the other one
        (2, 2, 1.0, 1),  # one busy loop
        (2, 2, 2.0, 1),  # two busy loops: never fewer than one
        (2, 2, 8.0, 1),  # load average near 10 on 2 CPUs (the slow case reported: 1 thread is 7-10x faster)
        (16, 8, 0.0, 8),  # 16 logical CPUs, 8 physical cores (torch's default): the cores
        (16, 8, 10.3, 6),  # 10 of 16 busy: the 6 left
        (64, 64, 61.5, 3),
    ],
)
def test_auto_takes_the_cpus_others_leave_free(cpus, ceiling, busy, expected):
    assert auto_thread_count(BIG, cpus=cpus, ceiling=ceiling, busy=busy) == expected


def test_small_models_always_get_one_thread():
    assert auto_thread_count(SMALL_MODEL_PARAMETERS - 1, cpus=16, ceiling=16, busy=0.0) == 1
    assert auto_thread_count(SMALL_MODEL_PARAMETERS, cpus=16, ceiling=16, busy=0.0) == 16


def _stat(*cpus: tuple[int, int]) -> str:
    """/proc/stat text with per-CPU (busy, idle) ticks spread over the fields the kernel writes."""
    lines = ["cpu  1 2 3 4 5 6 7 8 0 0"]
    for i, (busy, idle) in enumerate(cpus):
        lines.append(f"cpu{i} {busy - 3} 1 2 {idle - 7} 7 0 0 0 0 0")
    return "\n".join(lines + ["intr 1 2 3", "ctxt 9"]) + "\n"


def _use(text: str, own_s: float) -> CpuUse:
    use = CpuUse.now(text)
    assert use is not None
    return CpuUse(use.ticks, own_s, 0.0)


def test_busy_elsewhere_is_the_others_share_of_our_cpus(monkeypatch):
    monkeypatch.setattr(cpu_load, "_ticks_per_second", lambda: 100)
    start = _use(_stat((1000, 5000), (2000, 5000), (0, 0)), own_s=10.0)
    # 1 s later on 2 CPUs (200 ticks): 150 ticks busy, 50 of them ours → 100 ticks = one CPU of other work.
    end = _use(_stat((1080, 5020), (2070, 5030), (100, 0)), own_s=10.5)
    assert busy_elsewhere(start, end, cpus={0, 1}) == pytest.approx(1.0)
    # Our own work alone (both CPUs busy with this process's threads) is not "busy elsewhere".
    end = _use(_stat((1100, 5000), (2100, 5000)), own_s=12.0)
    assert busy_elsewhere(start, end, cpus={0, 1}) == pytest.approx(0.0)
    # Only the CPUs this process may use count: CPU 2's load is another process's own business.
    assert busy_elsewhere(start, _use(_stat((1000, 5100), (2000, 5100), (100, 0)), 10.0), cpus={0, 1}) == 0.0
    assert busy_elsewhere(start, start, cpus={0, 1}) is None  # no time passed


def test_cpu_use_reads_the_kernels_format():
    use = CpuUse.now("cpu  9 9 9 9\ncpu0 10 1 2 100 5 3 4 6 2 0\ncpu1 1 1 1 1 1\nintr 5\n")
    assert use is not None and use.ticks == {0: (10 + 1 + 2 + 3 + 4 + 6, 131), 1: (3, 5)}
    assert CpuUse.now("intr 5\n") is None


def test_a_cgroup_quota_caps_the_cpus(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert quota_cpus(str(tmp_path)) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert quota_cpus(str(tmp_path)) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert quota_cpus(str(tmp_path)) == 2.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert quota_cpus(str(tmp_path)) is None


def test_usable_cpus_is_affinity_capped_by_the_quota(monkeypatch):
    monkeypatch.setattr(cpu_load.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(cpu_load, "quota_cpus", lambda: None)
    assert cpu_load.usable_cpus() == 4
    monkeypatch.setattr(cpu_load, "quota_cpus", lambda: 1.5)
    assert cpu_load.usable_cpus() == 2


def test_choose_threads_auto_uses_the_measured_load(monkeypatch):
    from llmbuilder_cli.engine import runtime

    monkeypatch.setattr(cpu_load, "usable_cpus", lambda: 2)
    monkeypatch.setattr(runtime, "_TORCH_THREADS", 2)
    monkeypatch.setattr(cpu_load, "busy_now", lambda since=None: 1.0)
    assert runtime.choose_threads("auto", BIG) == 1
    monkeypatch.setattr(cpu_load, "busy_now", lambda since=None: 0.0)
    assert runtime.choose_threads("auto", BIG) == 2
    assert runtime.choose_threads(cpu_load.AutoThreads(None), BIG) == 2
    assert runtime.choose_threads("auto", 1_000_000) == 1


class Clocks:
    """A wall clock and this process's CPU clock that a test advances by hand."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def step(self, wall: float, cpu: float) -> None:
        self.wall += wall
        self.cpu += cpu


def _decode(threads: int, tokens: int, wall_per_token: float, cpu_per_token: float) -> DecodeWatch:
    c = Clocks()
    watch = DecodeWatch(threads, clock=lambda: c.wall, cpu_clock=lambda: c.cpu)
    for _ in range(tokens):
        c.step(wall_per_token, cpu_per_token)
        watch.tick()
    return watch


def test_two_starved_threads_get_one_note_with_the_fix():
    watch = _decode(2, 40, wall_per_token=1.0, cpu_per_token=0.3)  # 0.3 CPU-s of the 2 threads' 2 s
    assert watch.share == pytest.approx(0.15)
    assert watch.note() == (
        "note: decoding ran at 1.0 tok/s because other programs keep this machine's CPUs busy "
        "(2 threads got 15% of their time); with --threads 1 it is usually several times faster here"
    )


@pytest.mark.parametrize(
    "threads, tokens, wall, cpu",
    [
        (2, 40, 0.03, 0.058),  # an idle machine: both threads run all the time
        (1, 40, 1.0, 0.3),  # one thread held up: nothing to change, so nothing to say
        (2, 10, 1.0, 0.3),  # too few tokens to judge
        (2, 40, 0.01, 0.003),  # too short to judge (0.4 s)
    ],
)
def test_no_note_when_there_is_nothing_to_fix_or_judge(threads, tokens, wall, cpu):
    assert _decode(threads, tokens, wall, cpu).note() is None
