"""What the test machine's CPU can do, for tests whose numbers depend on it.

onnxruntime's x86 int8 kernels multiply uint8 activations by int8 weights with
AVX2's `vpmaddubsw`, which adds pairs of products into int16 and saturates when
both are large (measured on an AVX2-only AMD EPYC: a two-block residual test
model gave 10.4 dB where the exact Q/DQ arithmetic gives 40 dB). CPUs with VNNI
(`avx512_vnni`, `avx_vnni`) accumulate in int32 and are exact. PTQ's overflow
guard (`passes/quantize/overflow.py`) measures which layers overflow and gives them
7-bit or uint8 weights; tests of the optimized kernels apply it and check that
the overflow is found exactly where this CPU has it.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.cache
def x86_without_vnni() -> bool:
    """True on an x86 CPU whose flags list neither avx512_vnni nor avx_vnni."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])  # fmt: skip
    return not {"avx512_vnni", "avx_vnni"} & set(flags)
