"""The alternating timed blocks every latency comparison runs (`compiler.ground.timing`)."""

from __future__ import annotations

from compiler.ground.timing import alternating_blocks


def _recorder() -> tuple[list[str], dict[str, object]]:
    calls: list[str] = []
    return calls, {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}


def test_rounds_rotate_the_order_and_start_each_block_untimed() -> None:
    calls, fns = _recorder()
    blocks = alternating_blocks(fns, block=2, max_rounds=3, warmup=1)  # type: ignore[arg-type]  # recorders
    # warm-up once each, then per round: each candidate one untimed + two timed calls
    assert calls[:3] == ["a", "b", "c"]
    rounds = [calls[3 + 9 * r : 3 + 9 * (r + 1)] for r in range(3)]
    assert [r[::3] for r in rounds] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert all(r[i] == r[i + 1] == r[i + 2] for r in rounds for i in (0, 3, 6))
    assert len(calls) == 3 + 27
    # one list of `block` times (ns) per round and candidate
    assert {k: [len(b) for b in v] for k, v in blocks.items()} == {k: [2, 2, 2] for k in "abc"}
    assert all(t >= 0 for v in blocks.values() for b in v for t in b)


def test_stop_is_asked_after_each_round_and_blocks_are_reported() -> None:
    calls, fns = _recorder()
    asked: list[int] = []
    ticks = []

    def stop(rounds: int, so_far: object) -> bool:
        asked.append(rounds)
        return rounds == 2

    blocks = alternating_blocks(
        fns,  # type: ignore[arg-type]  # recorders
        block=1,
        max_rounds=10,
        stop=stop,
        on_block=lambda: ticks.append(1),
    )
    assert asked == [1, 2]
    assert all(len(v) == 2 for v in blocks.values())
    assert len(ticks) == 3 + 2 * 3  # each warm-up (of no calls here) and each block


def test_no_candidates_time_nothing() -> None:
    assert alternating_blocks({}, block=5, max_rounds=3) == {}
