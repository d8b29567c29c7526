"""The host's load as GSE's ``list_agent_info`` reports it: CPU and memory in use and
when the agent started, read from ``/proc`` (a few small files, no child process).

CPU is the share of non-idle time since the previous reading (since boot for the
first); memory is what is not available (``MemAvailable``) of ``MemTotal``. A host
without ``/proc`` reports no load.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from jobfleet.domain import protocol

log = logging.getLogger(__name__)

# /proc/stat's cpu line: user nice system idle iowait irq softirq steal (guest time is
# counted in user and nice already)
_IDLE_FIELDS = (3, 4)
_COUNTED_FIELDS = 8


def _percent(part: float, whole: float) -> float:
    if whole <= 0:
        return 0.0
    return round(min(100.0, max(0.0, 100.0 * part / whole)), 2)


class LoadGauge:
    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc
        self._last: tuple[int, int] | None = None
        self.started = self._started()

    def read(self) -> protocol.HostLoad | None:
        """The load now, or None where ``/proc`` cannot tell."""
        try:
            return protocol.host_load(self._cpu(), self._mem(), self.started)
        except (OSError, ValueError, IndexError, ZeroDivisionError) as exc:
            log.debug("host_load_unreadable error=%s", exc)
            return None

    def _cpu(self) -> float:
        fields = (self.proc / "stat").read_text().splitlines()[0].split()[1:]
        ticks = [int(f) for f in fields[:_COUNTED_FIELDS]]
        total = sum(ticks)
        idle = sum(ticks[i] for i in _IDLE_FIELDS)
        last, self._last = self._last, (total, idle)
        if last is not None and total > last[0]:
            total, idle = total - last[0], idle - last[1]
        return _percent(total - idle, total)

    def _mem(self) -> float:
        info: dict[str, int] = {}
        for line in (self.proc / "meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("MemTotal", "MemAvailable", "MemFree"):
                info[name] = int(rest.split()[0])
        total = info["MemTotal"]
        available = info.get("MemAvailable", info.get("MemFree", 0))
        return _percent(total - available, total)

    def _started(self) -> int:
        """When this process started (epoch ms): its start in clock ticks after boot
        (``/proc/self/stat``) plus the boot time; now where that cannot be read."""
        try:
            stat = (self.proc / "self" / "stat").read_text()
            # the fields after the command name (which may hold spaces) in parentheses
            after = stat.rpartition(")")[2].split()
            ticks = int(after[19])
            boot = next(
                int(line.split()[1])
                for line in (self.proc / "stat").read_text().splitlines()
                if line.startswith("btime ")
            )
            return int((boot + ticks / os.sysconf("SC_CLK_TCK")) * 1000)
        except (OSError, ValueError, IndexError, StopIteration):
            return int(time.time() * 1000)
