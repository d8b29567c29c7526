"""The host's load, read from /proc: CPU since the last reading, memory not available,
and the agent's start."""

from __future__ import annotations

import os
from pathlib import Path

from jobfleet.agent.host_load import LoadGauge

BOOT = 1_700_000_000


def fake_proc(root: Path, user: int, idle: int, available_kb: int) -> Path:
    (root / "self").mkdir(parents=True, exist_ok=True)
    # user nice system idle iowait irq softirq steal guest guest_nice
    (root / "stat").write_text(
        f"cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\nbtime {BOOT}\n")
    (root / "meminfo").write_text(
        f"MemTotal:  1000000 kB\nMemFree:   100 kB\nMemAvailable: {available_kb} kB\n")
    ticks = 5 * os.sysconf("SC_CLK_TCK")
    fields = ["S"] + ["0"] * 18 + [str(ticks)] + ["0"] * 10
    (root / "self" / "stat").write_text(f"42 (python3 odd name) {' '.join(fields)}\n")
    return root


def test_cpu_between_readings_memory_and_start(tmp_path: Path) -> None:
    gauge = LoadGauge(fake_proc(tmp_path, user=100, idle=300, available_kb=750_000))
    first = gauge.read()
    # since boot, at first; what is not available of the memory; boot + 5 s
    assert first == {"cpu": 25.0, "mem": 25.0, "started": (BOOT + 5) * 1000}
    fake_proc(tmp_path, user=190, idle=310, available_kb=400_000)
    assert gauge.read() == {"cpu": 90.0, "mem": 60.0, "started": (BOOT + 5) * 1000}


def test_no_proc_no_load(tmp_path: Path) -> None:
    gauge = LoadGauge(tmp_path / "absent")
    assert gauge.read() is None
    assert gauge.started > 0
