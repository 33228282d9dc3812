"""Strict voice leading while sampling (`CorpusConstraints(strict_voice_leading=True)`): no
parallel fifths or octaves between any two parts, no voice crossing, upper voices within an
octave of each other.

Parts are voices listed from the top down (a chorale's Soprano, Alto, Tenor, Bass), as the
codec's parts are numbered. A part's voice is its highest note at an onset, as
`midillm.tokenization.voice_leading` judges it. The rules only refuse rows; the grammar's fallback (no
constraint where every row breaks one) keeps a sample from dead-ending.

- Parallels: two parts that both move from one onset to the next may not go from a perfect
  fifth to a perfect fifth, or from a unison or octave to a unison or octave (compound
  intervals included, similar or contrary motion), as music21's `VoiceLeadingQuartet` counts
  them in `midillm.tokenization.voice_leading.parallel_motion`.
- Crossing: a part stays at or below every part above it and at or above every part below it,
  against what those parts sound now (struck at this onset, else held from before).
- Spacing: neighbouring upper parts (all but the lowest) stay within an octave.
- One voice a part: a part strikes one note an onset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

PERFECT_CLASSES = (0, 7)  # unison / octave, fifth: semitones modulo an octave
UPPER_VOICE_SPACING = 12  # semitones between neighbouring upper voices, at most
PITCHES = torch.arange(128)


@dataclass
class Voices:
    """What each part's voice sounds: before the current onset, and struck at it."""

    before: dict = field(default_factory=dict)  # part -> pitch sounding before the current onset
    now: dict = field(default_factory=dict)     # part -> top pitch struck at the current onset

    def new_onset(self) -> None:
        self.before.update(self.now)
        self.now = {}

    def strike(self, part: int, pitch: int) -> None:
        # Notes of one onset come highest first: the first is the part's voice.
        self.now.setdefault(part, pitch)

    def sounding(self, part: int) -> int | None:
        return self.now.get(part, self.before.get(part))

    def copy(self) -> Voices:
        return Voices(dict(self.before), dict(self.now))


def forbidden_pitches(voices: Voices, part: int, lowest_part: int | None, new_onset: bool) -> torch.Tensor:
    """The pitches (a bool vector over 0-127) `part` may not strike now: at the current onset,
    or, with `new_onset`, as the first note of the next one (nothing is struck there yet)."""
    forbidden = torch.zeros(128, dtype=torch.bool)
    now = {} if new_onset else voices.now
    before = {**voices.before, **voices.now} if new_onset else voices.before
    own_before = before.get(part)
    for other, other_now in now.items():
        other_before = before.get(other)
        if other == part or own_before is None or other_before is None or other_now == other_before:
            continue
        interval = abs(other_before - own_before) % 12
        if interval in PERFECT_CLASSES:
            forbidden |= ((PITCHES - other_now).abs() % 12 == interval) & (PITCHES != own_before)
    for other in set(before) | set(now):
        if other == part:
            continue
        sounding = now.get(other, before.get(other))
        if other < part:  # above: no crossing it; a neighbouring upper voice within an octave
            forbidden |= PITCHES > sounding
            if other == part - 1 and lowest_part is not None and part < lowest_part:
                forbidden |= PITCHES < sounding - UPPER_VOICE_SPACING
        else:
            forbidden |= PITCHES < sounding
            if other == part + 1 and lowest_part is not None and other < lowest_part:
                forbidden |= PITCHES > sounding + UPPER_VOICE_SPACING
    return forbidden
