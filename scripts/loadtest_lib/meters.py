"""CPU and memory of processes (psutil), for the load test and the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class CpuMeter:
    """CPU seconds used between two snapshots, as % of one core: by one process (all its
    threads), or by the whole machine. Unknown (None) without a process to watch."""

    def __init__(self, read: Callable[[], float] | None, proc: Any = None) -> None:
        self._read = read
        self.proc = proc
        self._t0 = time.monotonic()
        self._cpu0 = read() if read else 0.0

    @classmethod
    def process(cls, pid: int | None) -> CpuMeter:
        import psutil

        if pid is None:
            return cls(None)
        proc = psutil.Process(pid)

        def read() -> float:
            try:
                times = proc.cpu_times()
            except psutil.Error:  # it ended: the level's numbers say so elsewhere
                return 0.0
            return float(times.user + times.system)

        return cls(read, proc)

    @classmethod
    def machine(cls) -> CpuMeter:
        import psutil

        def read() -> float:
            times = psutil.cpu_times()._asdict()
            # Busy time, hypervisor steal included; guest time is already inside user/nice.
            idle = ("idle", "iowait", "guest", "guest_nice")
            return float(sum(v for k, v in times.items() if k not in idle))

        return cls(read)

    def restart(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = self._read() if self._read else 0.0

    def percent(self) -> float | None:
        wall = time.monotonic() - self._t0
        if self._read is None or wall <= 0:
            return None
        return 100 * (self._read() - self._cpu0) / wall

    def rss_mib(self) -> float | None:
        import psutil

        if self.proc is None:
            return None
        try:
            return float(self.proc.memory_info().rss) / 2**20
        except psutil.Error:
            return None
