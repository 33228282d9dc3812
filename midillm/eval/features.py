"""Musical features of one piece, on a `symusic.Score`, with MusPy's definitions.

MusPy (Dong et al. 2020) is not a dependency; its metrics are re-implemented here on symusic
scores. Times are measured in beats (quarter notes) and, where MusPy works on a piano roll or a
groove grid, on MusPy's default grid of 24 steps per beat.

Conventions, the same for every feature:

- Pitch features (pitch range, pitches used, pitch-class entropy, scale consistency,
  polyphony, polyphony rate, note lengths) ignore drum tracks: a drum "pitch" is an instrument.
  Rhythm features (empty-beat rate, groove consistency, note density, inter-onset interval)
  count every note, drums included.
- Counts are 0 when there is nothing to count (`n_pitches_used`, `n_pitch_classes_used`,
  `n_notes`). Every other feature is NaN when it is undefined: no (pitched) notes, fewer than
  two onsets for an inter-onset interval, fewer than two bars for groove consistency.
  NaN values are left out of set statistics and set-to-set comparisons, and counted there
  (`compare.nan_counts`): the report shows how many pieces each figure leaves out.
"""

from __future__ import annotations

import math

import numpy as np
from symusic import Score

from midillm.tokenization.metre import bar_length

__all__ = ["RESOLUTION", "POLYPHONY_THRESHOLD", "NOTE_LENGTH_CLASSES", "SCALAR_FEATURES",
           "piece_features", "PieceNotes", "piece_notes", "pitch_range", "n_pitches_used",
           "n_pitch_classes_used", "pitch_class_entropy", "scale_consistency", "polyphony",
           "polyphony_rate", "empty_beat_rate", "groove_consistency", "note_density",
           "mean_inter_onset_interval", "note_length_histogram"]

# MusPy's default resolution: time steps per beat (quarter note) of its piano roll.
RESOLUTION = 24
# Polyphony rate counts the time steps where more than this many pitches sound. MusPy's
# default is 2; the issue asks for 1, i.e. "any two notes at once".
POLYPHONY_THRESHOLD = 1
# MGEval's 12 note-length classes, in beats: whole, half, quarter, 8th, 16th, the dotted
# versions of half to 16th, and half / quarter / 8th triplets. A note counts in its nearest class.
NOTE_LENGTH_CLASSES = (
    ("whole", 4.0), ("half", 2.0), ("quarter", 1.0), ("8th", 0.5), ("16th", 0.25),
    ("dotted half", 3.0), ("dotted quarter", 1.5), ("dotted 8th", 0.75), ("dotted 16th", 0.375),
    ("half triplet", 4 / 3), ("quarter triplet", 2 / 3), ("8th triplet", 1 / 3),
)
# Scalar features, in report order.
SCALAR_FEATURES = ("pitch_range", "n_pitches_used", "n_pitch_classes_used", "pitch_class_entropy",
                   "scale_consistency", "polyphony", "polyphony_rate", "empty_beat_rate",
                   "groove_consistency", "note_density", "mean_ioi")

_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])
# 24 scales (12 roots, major and natural minor) as a (24, 12) mask over pitch classes.
_SCALES = np.zeros((24, 12), dtype=bool)
for _root in range(12):
    _SCALES[_root, (_MAJOR + _root) % 12] = True
    _SCALES[12 + _root, (_MINOR + _root) % 12] = True


class PieceNotes:
    """A score's notes as arrays in beats: all tracks, and pitched (non-drum) tracks only."""

    def __init__(self, onset, duration, pitch, drum, bar_beats: float):
        order = np.lexsort((pitch, onset))
        self.onset = np.asarray(onset, dtype=np.float64)[order]
        self.duration = np.asarray(duration, dtype=np.float64)[order]
        self.pitch = np.asarray(pitch, dtype=np.int64)[order]
        self.drum = np.asarray(drum, dtype=bool)[order]
        self.bar_beats = float(bar_beats)

    @property
    def pitched(self) -> np.ndarray:
        return ~self.drum

    def end(self) -> float:
        return float((self.onset + self.duration).max()) if self.onset.size else 0.0


def piece_notes(score: Score) -> PieceNotes:
    """Collect a score's notes (any time unit) into beat-based arrays."""
    quarter = score.to("quarter")
    onsets, durations, pitches, drums = [], [], [], []
    for track in quarter.tracks:
        if not len(track.notes):
            continue
        notes = track.notes.numpy()
        onsets.append(notes["time"].astype(np.float64))
        durations.append(notes["duration"].astype(np.float64))
        pitches.append(notes["pitch"].astype(np.int64))
        drums.append(np.full(len(notes["time"]), bool(track.is_drum)))
    bar_beats = 4.0
    signatures = sorted((float(ts.time), ts.numerator, ts.denominator) for ts in quarter.time_signatures)
    if signatures and signatures[0][2] > 0:
        bar_beats = bar_length(signatures[0][1], signatures[0][2])
    if not onsets:
        empty = np.zeros(0)
        return PieceNotes(empty, empty, empty.astype(np.int64), empty.astype(bool), bar_beats)
    return PieceNotes(np.concatenate(onsets), np.concatenate(durations), np.concatenate(pitches),
                      np.concatenate(drums), bar_beats)


def _notes(piece) -> PieceNotes:
    return piece if isinstance(piece, PieceNotes) else piece_notes(piece)


# ----------------------------------------------------------------------------- pitch


def pitch_range(piece) -> float:
    """Highest minus lowest pitch, in semitones (drums ignored; NaN without pitched notes)."""
    notes = _notes(piece)
    pitches = notes.pitch[notes.pitched]
    return float(pitches.max() - pitches.min()) if pitches.size else math.nan


def n_pitches_used(piece) -> int:
    """How many distinct pitches are played (drums ignored)."""
    notes = _notes(piece)
    return int(np.unique(notes.pitch[notes.pitched]).size)


def n_pitch_classes_used(piece) -> int:
    """How many of the 12 pitch classes are played (drums ignored)."""
    notes = _notes(piece)
    return int(np.unique(notes.pitch[notes.pitched] % 12).size)


def pitch_class_entropy(piece) -> float:
    """Shannon entropy (bits) of the pitch-class histogram of all notes; 0 to log2(12)."""
    notes = _notes(piece)
    counts = np.bincount(notes.pitch[notes.pitched] % 12, minlength=12).astype(np.float64)
    if counts.sum() < 1:
        return math.nan
    share = counts[counts > 0] / counts.sum()
    return float(-(share * np.log2(share)).sum()) + 0.0  # + 0.0: no -0.0 for one pitch class


def scale_consistency(piece) -> float:
    """The largest share of notes that fall in one major or natural-minor scale (MusPy)."""
    notes = _notes(piece)
    counts = np.bincount(notes.pitch[notes.pitched] % 12, minlength=12)
    if counts.sum() < 1:
        return math.nan
    return float((_SCALES @ counts).max() / counts.sum())


def _pianoroll_counts(notes: PieceNotes) -> np.ndarray:
    """Notes sounding at each step of the 24-per-beat grid (drums ignored). Notes, not pitches:
    MusPy's piano roll counts a pitch struck twice at once (by two tracks, or a duplicated note)
    once, which hides exactly the duplicate notes a broken sample is full of."""
    mask = notes.pitched
    if not mask.any():
        return np.zeros(0, dtype=np.int64)
    start = np.round(notes.onset[mask] * RESOLUTION).astype(np.int64)
    end = np.maximum(np.round((notes.onset[mask] + notes.duration[mask]) * RESOLUTION).astype(np.int64), start + 1)
    delta = np.zeros(int(end.max()) + 1, dtype=np.int64)
    np.add.at(delta, start, 1)
    np.add.at(delta, end, -1)
    return np.cumsum(delta[:-1])


def polyphony(piece) -> float:
    """Mean number of notes sounding at once, over the time steps where any note sounds."""
    counts = _pianoroll_counts(_notes(piece))
    active = counts[counts > 0]
    return float(active.mean()) if active.size else math.nan


def polyphony_rate(piece, threshold: int = POLYPHONY_THRESHOLD) -> float:
    """Share of time steps (from 0 to the last pitched note's end) with more than `threshold`
    notes sounding (MusPy counts pitches; threshold 1 here, MusPy's default is 2)."""
    counts = _pianoroll_counts(_notes(piece))
    return float((counts > threshold).mean()) if counts.size else math.nan


# ----------------------------------------------------------------------------- rhythm


def empty_beat_rate(piece) -> float:
    """Share of beats (quarter notes, up to the end of the last note) in which no note sounds."""
    notes = _notes(piece)
    length = notes.end()
    if notes.onset.size == 0 or length <= 0:
        return math.nan
    n_beats = math.ceil(length - 1e-9)
    covered = np.zeros(n_beats + 1, dtype=np.int64)
    first = np.floor(notes.onset + 1e-9).astype(np.int64)
    last = np.maximum(np.ceil(notes.onset + notes.duration - 1e-9).astype(np.int64), first + 1)
    np.add.at(covered, np.minimum(first, n_beats), 1)
    np.add.at(covered, np.minimum(last, n_beats), -1)
    empty = np.cumsum(covered[:-1]) == 0
    return float(empty.mean())


def groove_consistency(piece) -> float:
    """1 - mean Hamming distance between the onset patterns of neighbouring bars (MusPy).

    A bar is a binary vector of the 24-per-beat grid, 1 where a note starts; the bar length is
    that of the first time signature (4/4 without one). NaN for pieces shorter than two bars.
    """
    notes = _notes(piece)
    measure = int(round(notes.bar_beats * RESOLUTION))
    length = int(math.ceil(notes.end() * RESOLUTION - 1e-9))
    if measure < 1 or notes.onset.size == 0 or length < 2 * measure:
        return math.nan
    n_measures = math.ceil(length / measure)
    steps = np.round(notes.onset * RESOLUTION).astype(np.int64)
    patterns = np.zeros(n_measures * measure, dtype=bool)
    patterns[np.minimum(steps, patterns.size - 1)] = True
    patterns = patterns.reshape(n_measures, measure)
    hamming = np.count_nonzero(patterns[:-1] != patterns[1:])
    return float(1.0 - hamming / (measure * (n_measures - 1)))


def note_density(piece) -> float:
    """Notes (drums included) per beat, over the piece from 0 to the end of its last note."""
    notes = _notes(piece)
    length = notes.end()
    return float(notes.onset.size / length) if notes.onset.size and length > 0 else math.nan


def mean_inter_onset_interval(piece) -> float:
    """Mean time in beats between successive distinct onsets (chords count once)."""
    notes = _notes(piece)
    onsets = np.unique(np.round(notes.onset * RESOLUTION)) / RESOLUTION
    return float(np.diff(onsets).mean()) if onsets.size >= 2 else math.nan


def note_length_histogram(piece) -> np.ndarray:
    """Share of pitched notes in each of MGEval's 12 length classes (NaN x 12 without notes)."""
    notes = _notes(piece)
    durations = notes.duration[notes.pitched]
    if durations.size == 0:
        return np.full(len(NOTE_LENGTH_CLASSES), np.nan)
    classes = np.array([length for _, length in NOTE_LENGTH_CLASSES])
    nearest = np.abs(durations[:, None] - classes[None, :]).argmin(axis=1)
    return np.bincount(nearest, minlength=len(classes)) / durations.size


# ----------------------------------------------------------------------------- all of them


def piece_features(piece) -> dict:
    """Every feature of one piece: the scalar ones by name, plus `note_length_histogram`
    (a list of 12 shares) and `n_notes`."""
    notes = _notes(piece)
    return {
        "n_notes": int(notes.onset.size),
        "pitch_range": pitch_range(notes),
        "n_pitches_used": n_pitches_used(notes),
        "n_pitch_classes_used": n_pitch_classes_used(notes),
        "pitch_class_entropy": pitch_class_entropy(notes),
        "scale_consistency": scale_consistency(notes),
        "polyphony": polyphony(notes),
        "polyphony_rate": polyphony_rate(notes),
        "empty_beat_rate": empty_beat_rate(notes),
        "groove_consistency": groove_consistency(notes),
        "note_density": note_density(notes),
        "mean_ioi": mean_inter_onset_interval(notes),
        "note_length_histogram": note_length_histogram(notes).tolist(),
    }
