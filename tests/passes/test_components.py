"""`graph_tools.components`: what belongs together, in the order it was seen."""

from __future__ import annotations

from passes.graph_tools import components


def test_components_join_chains_and_keep_first_seen_order() -> None:
    # a chain of Adds (s1 = a1 + c1, s2 = a2 + s1), a lone Conv output, another chain
    joined = [["s1", "a1", "c1"], ["x"], ["s2", "a2", "s1"], ["t", "u"], ["u", "v"]]
    assert components(joined) == [["s1", "a1", "c1", "s2", "a2"], ["x"], ["t", "u", "v"]]


def test_components_of_nothing_and_of_repeats() -> None:
    assert components([]) == []
    assert components([[], ["a", "a"], ["a"]]) == [["a"]]
