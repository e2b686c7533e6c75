"""Which CPU a benchmark ran on, for its report.

The machine kind is fixed (2 cores, shared) but the CPU under it has changed
between sessions (an Intel Xeon with AVX-512 and an AMD EPYC with AVX2 have
both been seen), and speed figures differ by ~2x between them: every report
names the CPU it was measured on.
"""
import os
import platform
import re


def cpu() -> str:
    """E.g. 'AMD EPYC, AVX2, 2 cores' (from /proc/cpuinfo where it exists)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        m = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
        name = re.sub(r"\s+", " ", m.group(1)).strip() if m else name
        m = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
        flags = set(m.group(1).split()) if m else set()
    except OSError:
        pass
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name}, {simd}, {os.cpu_count()} cores"
