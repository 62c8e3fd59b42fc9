"""What the test machine's CPU can do, for tests whose numbers depend on it.

onnxruntime's x86 int8 kernels multiply uint8 activations by int8 weights with
AVX2's `vpmaddubsw`, which adds pairs of products into int16 and saturates when
both are large: with full 8-bit weights that loses whole layers' accuracy
(measured on an AVX2-only AMD EPYC: 10.9 dB where the exact Q/DQ arithmetic
gives 40.2 dB; 37.3 dB with 7-bit weights, `QuantSpec.reduce_range`). CPUs with
VNNI (`avx512_vnni`, `avx_vnni`) accumulate in int32 and are exact. The CPU
flavour keeps 8-bit weights (it was tuned on VNNI machines), so tests of
onnxruntime's *optimized* integer kernels expect a failure on x86 without VNNI
and say so, with the number they measured.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

U8S8_SATURATION = (
    "x86 without VNNI: onnxruntime's u8s8 int8 kernels (vpmaddubsw) saturate int16 "
    "pair sums with 8-bit weights; the CPU spec's reduce_range would avoid it"
)


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
