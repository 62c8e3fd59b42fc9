"""minilm_l6's sample sentences: a calibration set and an evaluation set that never meet.

Each set grows from its own hand-written file in `models/data/` (one sentence a
line; the first block holds short 3–5 word sentences, each later block, after a
blank line, one topic). A set is every hand-written sentence, plus pairs and
paragraphs of 6–10 sentences joined from one topic block, so lengths run from a
few tokens to past the 128-token window (those are truncated, as in serving).
The two files share no sentence, so the sets share none either; both are built
deterministically (seeded) and shuffled once, so a prefix mixes all lengths and
`calibration_sentences(n)` is a prefix of `calibration_sentences(m)` for n < m.
"""

from __future__ import annotations

import functools
import random
from importlib import resources

from compiler.ground.errors import UsageError

CALIBRATION_FILE = "minilm_calibration.txt"
EVALUATION_FILE = "minilm_evaluation.txt"
#: (file, seed, pairs, paragraphs) per set: 256 calibration sentences and more to spare,
#: 300 evaluation sentences (the issue's "300 sentences, sequence 128, batch 1")
_RECIPES = {
    "calibration": (CALIBRATION_FILE, 0, 120, 150),
    "evaluation": (EVALUATION_FILE, 1, 80, 90),
}
_PARAGRAPH = (6, 10)


def read_blocks(name: str) -> list[list[str]]:
    """The hand-written file's blocks of sentences (split on blank lines)."""
    text = resources.files("models").joinpath("data", name).read_text(encoding="utf-8")
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip():
            blocks[-1].append(line.strip())
        elif blocks[-1]:
            blocks.append([])
    return [b for b in blocks if b]


def _joined(
    topics: list[list[str]], rng: random.Random, size: tuple[int, int], n: int
) -> list[str]:
    """n distinct texts of `size` sentences (inclusive range) drawn from one topic block each."""
    out: dict[str, None] = {}
    while len(out) < n:
        topic = rng.choice(topics)
        k = rng.randint(*size)
        out[" ".join(rng.sample(topic, min(k, len(topic))))] = None
    return list(out)


@functools.cache
def sentence_set(which: str) -> tuple[str, ...]:
    """The whole calibration or evaluation set, in its fixed shuffled order."""
    name, seed, pairs, paragraphs = _RECIPES[which]
    blocks = read_blocks(name)
    rng = random.Random(seed)
    topics = blocks[1:]
    texts = [s for b in blocks for s in b]
    texts += _joined(topics, rng, (2, 2), pairs)
    texts += _joined(topics, rng, _PARAGRAPH, paragraphs)
    rng.shuffle(texts)
    return tuple(texts)


def _take(which: str, n: int) -> list[str]:
    texts = sentence_set(which)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"number of sentences must be a non-negative integer, got {n!r}")
    if n > len(texts):
        raise UsageError(
            f"minilm_l6 has {len(texts)} {which} sentences; ask for at most {len(texts)} "
            "(or give your own: a .txt file, one sentence a line)"
        )
    return list(texts[:n])


def calibration_sentences(n: int) -> list[str]:
    """The first n calibration sentences."""
    return _take("calibration", n)


def evaluation_sentences(n: int) -> list[str]:
    """The first n evaluation sentences."""
    return _take("evaluation", n)
