"""Harmony on the beat: does what sounds at each beat form a chord of the corpus's vocabulary?

The vocabulary is that of common-practice harmony (the chorales'): the four triads and five
seventh chords, in any transposition and inversion, and the sevenths without their fifth (the
fifth is the note four-part writing drops). A chord is a set of pitch classes, so doubled notes,
octaves and voicing do not matter.

A beat is judged on the notes sounding at its onset, every part together (drums left out): a
passing note between beats does not count against it, a suspension held into the beat does,
as a listener hears it. The beat is the time signature's denominator note, the dotted one in
compound metres (6/8, 9/8, 12/8, ...). Beats run from the start of the piece to the end of its
last note; a beat where fewer than three pitch classes sound (a rest, a unison, a bare fifth)
is not a chord.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from symusic import Score

__all__ = ["CHORD_SHAPES", "CHORD_MASKS", "ChordCount", "beat_times", "is_chord", "chord_on_beat",
           "chord_on_beat_share"]

# Each chord type as pitch classes above its root.
CHORD_SHAPES = {
    "major": (0, 4, 7), "minor": (0, 3, 7), "diminished": (0, 3, 6), "augmented": (0, 4, 8),
    "dominant seventh": (0, 4, 7, 10), "major seventh": (0, 4, 7, 11), "minor seventh": (0, 3, 7, 10),
    "half-diminished seventh": (0, 3, 6, 10), "diminished seventh": (0, 3, 6, 9),
    "dominant seventh, no fifth": (0, 4, 10), "major seventh, no fifth": (0, 4, 11),
    "minor seventh, no fifth": (0, 3, 10),  # also the half-diminished seventh without its fifth
}
# Every chord of the vocabulary in every transposition, as a 12-bit pitch-class mask (bit k:
# pitch class k sounds). Inversions need nothing more: they are the same pitch classes.
CHORD_MASKS = frozenset(sum(1 << ((root + step) % 12) for step in shape)
                        for shape in CHORD_SHAPES.values() for root in range(12))
# Times are compared in quarter notes; this only absorbs the rounding of ticks to quarters.
_EPSILON = 1e-6


def _beat_length(numerator: int, denominator: int) -> float:
    """A beat of this metre in quarter notes: the denominator note, or three of them in a
    compound metre (6/8 counts two dotted quarters a bar, not six eighths)."""
    note = 4.0 / denominator
    compound = denominator >= 8 and numerator > 3 and numerator % 3 == 0
    return 3 * note if compound else note


def beat_times(score: Score) -> np.ndarray:
    """The beats of a score in quarter notes, from 0 to the end of its last note, following its
    time signatures (4/4 before the first one, and without any)."""
    quarter = score if str(score.ttype).endswith("Quarter") else score.to("quarter")
    end = max((float(track.end()) for track in quarter.tracks if track.note_num()), default=0.0)
    signatures = sorted({(float(sig.time), int(sig.numerator), int(sig.denominator))
                         for sig in quarter.time_signatures if sig.denominator > 0 and sig.numerator > 0})
    if not signatures or signatures[0][0] > _EPSILON:
        signatures.insert(0, (0.0, 4, 4))
    beats = []
    for index, (start, numerator, denominator) in enumerate(signatures):
        stop = min(signatures[index + 1][0], end) if index + 1 < len(signatures) else end
        if stop <= start:
            continue
        length = _beat_length(numerator, denominator)
        count = math.ceil((stop - start) / length - _EPSILON)
        beats.append(start + length * np.arange(count))
    return np.concatenate(beats) if beats else np.zeros(0)


def is_chord(pitch_classes) -> bool:
    """Whether these pitch classes (any iterable of ints 0-11, doublings allowed) form a chord
    of the vocabulary."""
    return sum(1 << (int(pc) % 12) for pc in set(pitch_classes)) in CHORD_MASKS


@dataclass(frozen=True)
class ChordCount:
    """Beats of one piece, and how many of them sound a chord of the vocabulary."""

    beats: int
    chords: int

    @property
    def share(self) -> float:
        return self.chords / self.beats if self.beats else math.nan


def chord_on_beat(score: Score) -> ChordCount:
    """Count the beats whose sounding pitch classes (every pitched part, at the beat's onset)
    form a chord of the vocabulary."""
    quarter = score.to("quarter")
    onsets, ends, pitches = [], [], []
    for track in quarter.tracks:
        if track.is_drum or not track.note_num():
            continue
        notes = track.notes.numpy()
        onsets.append(notes["time"].astype(np.float64))
        ends.append((notes["time"] + notes["duration"]).astype(np.float64))
        pitches.append(notes["pitch"].astype(np.int64))
    beats = beat_times(quarter)
    if not onsets or beats.size == 0:
        return ChordCount(int(beats.size), 0)
    onset, end, pitch_class = np.concatenate(onsets), np.concatenate(ends), np.concatenate(pitches) % 12
    # (beats, notes): the note sounds at the beat's onset. Tolerance on both sides so a note that
    # starts a rounding error after the beat is on it, and one that ends a rounding error after
    # it is not (it was released at the beat).
    sounding = (onset[None, :] <= beats[:, None] + _EPSILON) & (end[None, :] > beats[:, None] + _EPSILON)
    masks = (sounding * (1 << pitch_class)[None, :]).astype(np.int64)
    masks = np.bitwise_or.reduce(masks, axis=1)
    chords = sum(int(mask) in CHORD_MASKS for mask in masks)
    return ChordCount(int(beats.size), chords)


def chord_on_beat_share(score: Score) -> float:
    """The share of a score's beats that sound a chord of the vocabulary (NaN without beats)."""
    return chord_on_beat(score).share
