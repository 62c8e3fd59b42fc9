"""Alternating timed blocks: the loop every latency comparison in edgec runs.

Candidates timed one after the other see different machines: this one's speed
changes for minutes at a time (other tenants), and onnxruntime's worker threads
keep spinning for a while after a call, so the first call after switching
candidates competes with the previous one's threads. So every comparison times
all candidates in rounds: in each round every candidate makes one untimed call and
then a block of timed ones, in an order rotated every round (no candidate always
follows the same one). The target's `measure_interleaved` (the report's latency)
and PTQ's latency checks (`passes/quantize/layer_latency.py`) differ only in when
they stop and what they make of the times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

#: after each round: (rounds done, every candidate's blocks so far) -> stop now
Stop = Callable[[int, Mapping[str, list[list[int]]]], bool]


def alternating_blocks(
    fns: Mapping[str, Callable[[], object]],
    *,
    block: int,
    max_rounds: int,
    warmup: int = 0,
    stop: Stop | None = None,
    on_block: Callable[[], None] | None = None,
) -> dict[str, list[list[int]]]:
    """Each candidate's call times in nanoseconds, one list per round: `warmup` untimed
    calls each first (the first calls allocate and pack weights), then up to
    `max_rounds` rounds of one untimed and `block` timed calls per candidate, the order
    rotated every round. `stop` is asked after each round; `on_block` is called after
    each candidate's warm-up and each block, outside the timed calls."""
    names = list(fns)
    blocks: dict[str, list[list[int]]] = {name: [] for name in names}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
        if on_block is not None:
            on_block()
    if not names:
        return blocks
    clock = time.perf_counter_ns
    for rnd in range(max_rounds):
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
            fn()  # untimed: lets the previous candidate's spinning threads go idle
            times = []
            for _ in range(block):
                start = clock()
                fn()
                times.append(clock() - start)
            blocks[name].append(times)
            if on_block is not None:
                on_block()
        if stop is not None and stop(rnd + 1, blocks):
            break
    return blocks
