"""What separates a model from its corpus, set by set (DESIGN.md, "Judging the music"): harmony
on the beat, voice leading, and whether a classifier can tell the set from the held-out pieces.

Per piece: the counts behind each measure (`piece_listening`). Per set: each measure pooled over
the set's pieces (`listening_summary`: the share of all the set's beats, moves and notes, so a
piece weighs by its length, as `mean_notes_per_onset` pools onsets), and the cross-validated
accuracy of a classifier telling the set's pieces from the held-out ones
(`two_sample.two_sample_classifier_accuracy`) on the listener measures and the scalar features
of `features.py`; the held-out pieces themselves score one half against the other.
"""

from __future__ import annotations

import math

import numpy as np
from symusic import Score

from .features import SCALAR_FEATURES
from .harmony import chord_on_beat
from .two_sample import two_sample_classifier_accuracy
from midillm.tokenization.voice_leading import parallel_motion, rests_inside_voices

__all__ = ["LISTENER_MEASURES", "LISTENER_LINES", "listener_lines", "CLASSIFIER_FEATURES", "piece_listening", "listening_summary",
           "classifier_rows", "split_half_classifier_accuracy"]

# Each measure: (numerator count, denominator count) of `piece_listening`, in report order.
LISTENER_MEASURES = {
    "chord_on_beat": ("chord_beats", "beats"),
    "parallels_per_move": ("parallels", "moves"),
    "rests_inside_voices": ("rests", "notes_with_a_next"),
}
# How reports print them: (summary key, label, digits, as a percentage); the summary holds each
# for the model (no prefix) and, prefixed, the untrained model, the held-out pieces and the shuffled control.
LISTENER_LINES = [("chord_on_beat", "chords on the beat", 0, True),
                  ("parallels_per_move", "parallels per move", 3, False),
                  ("rests_inside_voices", "rests inside voices", 3, False),
                  ("classifier_accuracy", "classifier accuracy", 2, False)]
SET_PREFIXES = ("", "untrained_", "corpus_", "shuffled_")


def _shown(value, digits: int, percent: bool) -> str:
    if not isinstance(value, (int, float)) or value != value:  # None or NaN
        return "n/a"
    return f"{100 * value:.0f}%" if percent else f"{value:.{digits}f}"


def listener_lines(summary: dict, corpus: str = "held-out pieces") -> list[str]:
    """The listener measures of an eval summary as text lines, model / untrained / corpus /
    shuffled control: what `midillm eval` and the demo print first."""
    lines = [f"  {'listener measures:':<26}model / untrained / {corpus} / shuffled control"]
    for name, label, digits, percent in LISTENER_LINES:
        lines.append(f"  {label + ':':<26}" + " / ".join(_shown(summary.get(prefix + name), digits, percent)
                                                    for prefix in SET_PREFIXES)
                     + (" (0.5: cannot tell from the held-out pieces)" if name == "classifier_accuracy" else ""))
    return lines


# What the classifier sees of a piece. Not `n_notes`: it measures how long a piece is, which the
# token budget sets for samples, not how it sounds.
CLASSIFIER_FEATURES = tuple(LISTENER_MEASURES) + SCALAR_FEATURES


def _share(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def piece_listening(score: Score) -> dict:
    """The listener measures of one piece, with the counts behind them."""
    chords = chord_on_beat(score)
    motion = parallel_motion(score)
    rests = rests_inside_voices(score)
    counts = {"beats": chords.beats, "chord_beats": chords.chords, "moves": motion["moves"],
              "parallels": motion["parallels"], "notes_with_a_next": rests.notes, "rests": rests.rests}
    return {**{name: _share(counts[top], counts[bottom]) for name, (top, bottom) in LISTENER_MEASURES.items()},
            **counts}


def listening_summary(per_piece: list[dict]) -> dict:
    """Each measure pooled over a set: all its chord beats over all its beats, and so on (NaN
    when the set has nothing to count: no beats, no moves of two voices, no note with a next)."""
    return {name: _share(sum(piece[top] for piece in per_piece), sum(piece[bottom] for piece in per_piece))
            for name, (top, bottom) in LISTENER_MEASURES.items()}


def classifier_rows(listening: list[dict], features: list[dict]) -> np.ndarray:
    """One row per piece (`piece_listening` and `features.piece_features` of it): its
    `CLASSIFIER_FEATURES`, NaN where undefined."""
    rows = [[{**piece_features, **piece_listening}[name] for name in CLASSIFIER_FEATURES]
            for piece_listening, piece_features in zip(listening, features)]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(CLASSIFIER_FEATURES))


def split_half_classifier_accuracy(reference_rows: np.ndarray, seed: int = 0) -> float:
    """The held-out pieces against themselves: one random half against the other (the split of
    `compare.split_half_ceiling`), what a set drawn from the corpus itself scores (about 0.5)."""
    order = np.random.default_rng(seed).permutation(len(reference_rows))
    half = len(reference_rows) // 2
    return two_sample_classifier_accuracy(reference_rows[order[:half]], reference_rows[order[half:]], seed=seed)
