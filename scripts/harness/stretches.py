"""Features of equally long stretches of corpus pieces, for the scripts that place samples
relative to the corpus (bench_temperature.py) or between the corpus and a taste (bench_like.py).

A sample is compared with corpus stretches as many bars long as itself, since counts and ranges
grow with length (a 4-bar sample has fewer pitches than an 8-bar stretch of any chorale), and
from the bar after the opening on (past the pick-up, and the bars a prompt copies). Distances
are in z units of the corpus's spread, over every scalar feature of `midillm.eval.features`.
"""

from __future__ import annotations

import numpy as np


def feature_matrix(scores) -> np.ndarray:
    """One row per score: its scalar features (`SCALAR_FEATURES`, in that order)."""
    from midillm.eval.features import SCALAR_FEATURES, piece_features

    return np.array([[piece_features(score)[name] for name in SCALAR_FEATURES] for score in scores], dtype=float)


def bar_ticks(ticks) -> int:
    """Ticks per bar of a tick-time score, from its first time signature (4/4 without one)."""
    from midillm.tokenization.metre import bar_length

    signature = ticks.time_signatures[0] if len(ticks.time_signatures) else None
    return int(bar_length(signature.numerator, signature.denominator, ticks.tpq)) if signature else ticks.tpq * 4


def excerpt(score, first_bar: int, bars: int):
    """Bars `first_bar` ... `first_bar + bars - 1` (from 0) of a score, moved to start at 0."""
    ticks = score.to("tick")
    bar = bar_ticks(ticks)
    return ticks.clip(first_bar * bar, (first_bar + bars) * bar, clip_end=True).shift_time(-first_bar * bar)


def bars_spanned(score) -> int:
    """How many bars a score spans, at least one."""
    ticks = score.to("tick")
    return max(1, -(-ticks.end() // bar_ticks(ticks)))


def distances(rows, center, spread) -> np.ndarray:
    """Euclidean distance in z-scored features, over the features each row defines (NaN: not
    defined for that piece, e.g. a voice-leading feature of a one-note part)."""
    z = (rows - center) / spread
    return np.sqrt(np.nanmean(z ** 2, axis=1))


def center_and_spread(rows) -> tuple[np.ndarray, np.ndarray]:
    """The corpus mean and spread per feature; a feature with no spread counts 1, not infinity."""
    spread = np.nanstd(rows, axis=0)
    return np.nanmean(rows, axis=0), np.where(spread > 0, spread, 1.0)


def add_corpus_arguments(parser) -> None:
    """--corpus and --corpus-pieces: what `sane_corpus` reads, the same in every script that uses it."""
    parser.add_argument("--corpus", default="music21:bach", help="The corpus the model was trained on.")
    parser.add_argument("--corpus-pieces", type=int, default=200)


def sane_corpus(corpus: str, pieces: int, profile) -> tuple[list, list]:
    """(files, scores) of the first `pieces` of a source that are sane for the model's corpus
    `profile`: an instrumental chorale with doubled parts (more notes at an onset than the
    training split ever has) would make every sample that opens with it "not sane" before the
    model writes a note, and would pull the corpus mean towards what the model never learned."""
    from symusic import Score

    from midillm.eval.sanity import sample_sanity
    from midillm.tokenization.sources import list_source

    listed, _ = list_source(corpus, limit=pieces)
    files, scores = [], []
    for file in listed:
        score = Score(str(file.path))
        if sample_sanity(score, profile)["sane"]:
            files.append(file)
            scores.append(score)
    return files, scores


class Stretches:
    """The corpus's features on stretches of a given number of bars after `opening_bars`, and
    their mean and spread, computed once per length."""

    def __init__(self, scores, opening_bars: int):
        self.scores, self.opening_bars = scores, opening_bars
        self._by_bars: dict[int, tuple] = {}

    def of(self, bars: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(one row of features per corpus piece, their mean, their spread) for `bars` bars."""
        if bars not in self._by_bars:
            rows = feature_matrix([excerpt(score, self.opening_bars, bars) for score in self.scores])
            self._by_bars[bars] = (rows, *center_and_spread(rows))
        return self._by_bars[bars]
