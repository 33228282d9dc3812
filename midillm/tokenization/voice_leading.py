"""Voice leading between and within the parts (tracks) of a score: parallel perfect fifths and
octaves between every two parts, and rests inside each part.

A part is one pitched track (drum tracks are left out: a drum "pitch" is an instrument, not a
voice). Where a part plays several notes at once, its top note is its voice.
"""

from __future__ import annotations

import functools
import heapq
from dataclasses import dataclass

import numpy as np
from symusic import Score

__all__ = ["REST_TOLERANCE_BEATS", "RestCount", "parallel_motion", "rests_inside_voices"]

# A gap shorter than this (in quarter notes) between a note's end and the part's next note is
# articulation, not a rest: under a 32nd-note rest (0.125), above the rounding of ticks.
REST_TOLERANCE_BEATS = 0.1


def _voices(score: Score) -> list:
    """The parts: pitched tracks with notes."""
    return [track for track in score.tracks if track.note_num() and not track.is_drum]


def _top_voice(track, times: list[int]) -> list[int | None]:
    """The highest pitch of the part sounding at each of `times` (ticks, ascending), or None."""
    notes = sorted((note.time, note.end, note.pitch) for note in track.notes)
    top, sounding, next_note = [], [], 0  # sounding: a max-heap of (-pitch, end)
    for time in times:
        while next_note < len(notes) and notes[next_note][0] <= time:
            _, end, pitch = notes[next_note]
            heapq.heappush(sounding, (-pitch, end))
            next_note += 1
        # Ended notes leave when they reach the top: times only grow, so they never sound again.
        while sounding and sounding[0][1] <= time:
            heapq.heappop(sounding)
        top.append(-sounding[0][0] if sounding else None)
    return top


def parallel_motion(score: Score) -> dict:
    """Parallel fifths and octaves (unisons included) between every pair of parts: moves where
    both voices change pitch, and how many of them are parallel perfect intervals (music21's
    `VoiceLeadingQuartet`, which also counts a fifth moving to a twelfth, in similar or contrary
    motion). Only moves between two intervals of 0 or 7 semitones (an octave aside) can be
    perfect fifths or octaves, so only those are asked of music21: the same counts, at a band
    tune's hundred thousand moves a fraction of the cost."""
    score = score if str(score.ttype).endswith("Tick") else score.to("tick")
    parts = _voices(score)
    moves = parallels = 0
    for upper in range(len(parts)):
        for lower in range(upper + 1, len(parts)):
            # The two voices at each onset of either: a move is one onset to the next.
            times = sorted({note.time for part in (parts[upper], parts[lower]) for note in part.notes})
            voice_a = np.array([-1 if pitch is None else pitch for pitch in _top_voice(parts[upper], times)])
            voice_b = np.array([-1 if pitch is None else pitch for pitch in _top_voice(parts[lower], times)])
            a1, a2, b1, b2 = voice_a[:-1], voice_a[1:], voice_b[:-1], voice_b[1:]
            moving = (a1 >= 0) & (a2 >= 0) & (b1 >= 0) & (b2 >= 0) & (a1 != a2) & (b1 != b2)
            moves += int(moving.sum())
            perfect_before = np.isin(np.abs(a1 - b1) % 12, (0, 7))
            perfect_after = np.isin(np.abs(a2 - b2) % 12, (0, 7))
            for index in np.flatnonzero(moving & perfect_before & perfect_after):
                parallels += _parallel_perfect(int(a1[index]), int(a2[index]), int(b1[index]), int(b2[index]))
    return {"moves": moves, "parallels": parallels}


@functools.lru_cache(maxsize=65536)
def _parallel_perfect(a1: int, a2: int, b1: int, b2: int) -> bool:
    """music21's verdict on one move of two voices (MIDI pitches, spelled as music21 spells them)."""
    from music21 import note
    from music21.voiceLeading import VoiceLeadingQuartet

    quartet = VoiceLeadingQuartet(note.Note(midi=a1), note.Note(midi=a2), note.Note(midi=b1), note.Note(midi=b2))
    return bool(quartet.parallelFifth() or quartet.parallelUnisonOrOctave())


@dataclass(frozen=True)
class RestCount:
    """Notes of one piece that some later note of their part follows, and how many of them are
    followed by a rest in that part first."""

    notes: int
    rests: int

    @property
    def share(self) -> float:
        return self.rests / self.notes if self.notes else float("nan")


def rests_inside_voices(score: Score, tolerance: float = REST_TOLERANCE_BEATS) -> RestCount:
    """Count, in every part, the notes after which the part falls silent for more than
    `tolerance` quarter notes before its next note. Of a chord, each note that lasts to the
    silence counts; a note released while others of its part still sound does not. Notes that
    start at the part's last onset are not counted: the silence after them is the end of the
    part, not a rest inside it."""
    quarter = score.to("quarter")
    notes = rests = 0
    for track in _voices(quarter):
        array = track.notes.numpy()
        order = np.argsort(array["time"], kind="stable")
        onset = array["time"][order].astype(np.float64)
        end = onset + array["duration"][order].astype(np.float64)
        # The part sounds in blocks: a block goes on while each next note starts before the
        # notes so far have all ended (gaps up to the tolerance included).
        sounds_until = np.maximum.accumulate(end)
        block_ends_here = np.append(onset[1:] > sounds_until[:-1] + tolerance, True)
        block = np.concatenate([[0], np.cumsum(block_ends_here[:-1])])
        block_end = sounds_until[block_ends_here][block]
        followed_by_rest = (block < block[-1]) & (end >= block_end - 1e-9)
        notes += int((onset < onset[-1]).sum())
        rests += int(followed_by_rest.sum())
    return RestCount(notes, rests)
