"""Keys: a piece's key, estimated from its notes, and moving a piece from one key to another.

One home for what `prepare` (pieces moved to the common key), generation (music moved back to
the asked key) and retrieval (pieces compared in one key) need.

The common key. A chorale in G major and one in E-flat major share their harmony (tonic,
dominant, the cadences) but no pitch token: a model trained on both has to learn each
progression once per key, from a twelfth of the examples. Moved to C major or A minor first
(BachBot did the same for the chorales), every piece teaches the same rows, and the key a
user asks for is written by moving the finished music back: exact by construction, like the
metre. A shift is at most six semitones either way, so each part stays near its own register.

Why A minor and not C minor: the two modes then share their notes (A minor is C major's
relative minor), as they share them in the music itself, where a major piece cadences in its
relative minor and back. With C major and C minor, a model that had not settled the mode wrote
E and E-flat a beat apart, and the pieces' scale consistency was what most told them from
Bach's (benchmarks.md, "The relative minor").
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from symusic import Score

from midillm.tokenization.caption import key_name, key_tonic, known_key

# Krumhansl & Kessler (1982) probe-tone profiles, C major and C minor.
_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

# The key every piece is moved to, by mode.
COMMON_KEYS = {False: "C major", True: "A minor"}
# Those of codecs prepared before the relative minor (2026-12-05, midday): minor pieces in C minor.
FIRST_COMMON_KEYS = {False: "C major", True: "C minor"}
# A key's signature (sharps, negative for flats) by tonic pitch class, as the caption spells
# keys (`caption.key_name`): Eb major, not D# major.
_MAJOR_SHARPS = {0: 0, 7: 1, 2: 2, 9: 3, 4: 4, 11: 5, 6: 6, 1: -5, 8: -4, 3: -3, 10: -2, 5: -1}
# A minor key has its relative major's signature (A minor: C major's).
_MINOR_SHARPS = {tonic: _MAJOR_SHARPS[(tonic + 3) % 12] for tonic in range(12)}


def pitch_weights(score: Score) -> tuple[np.ndarray, np.ndarray] | None:
    """The pitched notes' pitches and durations (at least one tick each); None without any."""
    pitches, weights = [], []
    for track in score.tracks:
        if track.is_drum or not len(track.notes):
            continue
        notes = track.notes.numpy()
        pitches.append(notes["pitch"].astype(np.int64))
        weights.append(np.maximum(notes["duration"], 1).astype(np.float64))
    if not pitches:
        return None
    return np.concatenate(pitches), np.concatenate(weights)


def estimate_key(score: Score) -> tuple[int, bool] | None:
    """(tonic pitch class, minor) by the Krumhansl-Schmuckler estimate on the duration-weighted
    pitch-class histogram of the pitched tracks; None for a piece without pitched notes. The
    profiles rotate with the piece, so a copy moved by k semitones gets the tonic moved by k."""
    notes = pitch_weights(score)
    if notes is None:
        return None
    pitch, weight = notes
    histogram = np.bincount(pitch % 12, weights=weight, minlength=12)
    correlations = [np.corrcoef(histogram, np.roll(profile, tonic))[0, 1]
                    for profile in (_MAJOR_PROFILE, _MINOR_PROFILE) for tonic in range(12)]
    best = int(np.nanargmax(np.nan_to_num(correlations, nan=-2.0)))
    return best % 12, best >= 12


def named_key(tonic: int, minor: bool) -> str:
    """A key as a caption names it: (2, True) -> "D minor"; (3, False) -> "Eb major"."""
    sharps = (_MINOR_SHARPS if minor else _MAJOR_SHARPS)[tonic % 12]
    return key_name(sharps, minor)


def piece_key(score: Score, metadata: Mapping[str, str] | None = None) -> tuple[int, bool] | None:
    """The piece's key: its metadata's where it names one a caption can name (music21 analyses
    each corpus piece), else estimated from the notes."""
    named = known_key((metadata or {}).get("key") or "")
    return key_tonic(named) if named else estimate_key(score)


def shift_to(from_tonic: int, to_tonic: int) -> int:
    """The nearest move from one tonic to another, in semitones: -6..5."""
    return (to_tonic - from_tonic + 6) % 12 - 6


def transposed(score: Score, shift: int) -> Score:
    """A copy of the score with its pitched tracks moved by `shift` semitones (drums stay)."""
    if not shift:
        return score
    moved = score.copy()
    for track in moved.tracks:
        if track.is_drum:
            continue
        pitches = track.notes.numpy()["pitch"].astype(int) + shift if track.note_num() else None
        if pitches is not None and (pitches.min() < 0 or pitches.max() > 127):
            # A note moved off the MIDI range (a sample's extreme, moved back to its key) goes an
            # octave the other way: its pitch class, what the move is for, is kept.
            for note in track.notes:
                pitch = note.pitch + shift
                note.pitch = pitch - 12 * ((pitch - 116) // 12) if pitch > 127 else \
                    pitch + 12 * ((11 - pitch) // 12) if pitch < 0 else pitch
        else:
            track.shift_pitch(shift, inplace=True)
    moved.key_signatures = []  # a signature written for the old key would mislead
    return moved


def register_shift(score: Score, shift: int, ranges: list[tuple[int, int] | None]) -> int:
    """The move to a new key that keeps the piece in its parts' registers: `shift` (the nearer
    way, `shift_to`), or the same move an octave the other way (up 5 or down 7 semitones) where
    that leaves no more notes outside `ranges` (each track's range in the corpus; None where none
    is known) and brings the pitched tracks' median pitches nearer the middles of those ranges.
    The nearer way keeps the corpus's register on average; a piece written high or low in the
    common key is moved back the way that does not take it further out (a D minor request
    written high in A minor goes down 7, not up 5 to a soprano at E6)."""
    if not shift:
        return shift
    other = shift - 12 if shift > 0 else shift + 12
    cost = {shift: [0, 0.0], other: [0, 0.0]}  # (notes outside their range, distance from the middles)
    for track, bounds in zip(score.tracks, ranges):
        if bounds is None or track.is_drum or not track.note_num():
            continue
        pitches = track.notes.numpy()["pitch"].astype(int)
        low, high = bounds
        for move in cost:
            cost[move][0] += int(np.sum((pitches + move < low) | (pitches + move > high)))
            cost[move][1] += abs(float(np.median(pitches)) + move - (low + high) / 2)
    return other if cost[other] < cost[shift] else shift


def in_key(score: Score, shift: int, tonic: int, minor: bool) -> Score:
    """A copy of the score moved by `shift` semitones, its key signature saying it is now in
    (tonic, minor): what sheet music and a caption read the key from."""
    from symusic import KeySignature

    moved = transposed(score, shift) if shift else score.copy()
    sharps = (_MINOR_SHARPS if minor else _MAJOR_SHARPS)[tonic % 12]
    moved.key_signatures = [KeySignature(0, sharps, int(minor))]
    return moved


def drawn_key(keys: Mapping[str, int], minor: bool | None, seed: int | None) -> tuple[int, bool]:
    """A key drawn by `seed` as often as the corpus's pieces were in it (`CorpusProfile.keys`),
    among those of the mode asked (None: either); C major or C minor when none is known."""
    import random

    named = {known_key(name): count for name, count in keys.items() if known_key(name)}
    choices = {name: count for name, count in named.items() if minor is None or key_tonic(name)[1] == minor}
    if not choices:
        return 0, bool(minor)
    return key_tonic(random.Random(seed).choices(list(choices), weights=list(choices.values()))[0])


def common_tonic(minor: bool, keys: Mapping[bool, str] = COMMON_KEYS) -> int:
    """The tonic pitch class of the common key of a mode (C major: 0, A minor: 9)."""
    return key_tonic(keys[minor])[0]


def key_before_move(common: str, shift: int) -> str:
    """The key a piece was in before `shift` semitones moved it to the key named `common`."""
    tonic, minor = key_tonic(common)
    return named_key((tonic - shift) % 12, minor)


def in_common_key(score: Score, metadata: Mapping[str, str] | None = None,
                  keys: Mapping[bool, str] = COMMON_KEYS) -> tuple[Score, dict[str, str], int]:
    """The piece moved to the common key of its mode (`keys`: C major or A minor), its metadata
    and key signature saying so, and the shift it took; a piece without pitched notes comes back
    as it is."""
    metadata = dict(metadata or {})
    key = piece_key(score, metadata)
    if key is None:
        return score, metadata, 0
    tonic, minor = key
    metadata["key"] = keys[minor]
    target = common_tonic(minor, keys)
    shift = shift_to(tonic, target)
    return in_key(score, shift, target, minor), metadata, shift
