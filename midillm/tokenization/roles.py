"""What a part does in a band, from its instrument and register: the name of a part whose track
name says nothing.

Multi-track General MIDI files name their tracks "Track7", "Staff-1" or nothing at all; a caption
that lists such names tells a model (and a user picking parts) nothing about what each part
plays. MIDI-GPT and MMM write a track per instrument; here a part keeps its own name when it has
one that says something (a chorale's "Soprano", a band's "Lead Guitar"), and is otherwise named
by its role: the General MIDI family of its program (Piano, Guitar, Strings, Brass, Lead, Pad...),
with drums as Drums and the register deciding two roles a family cannot: a low single line is
the Bass whatever plays it (a piano's left hand, a tuba), and a high single line of an
instrument that can carry a tune is the Lead.

`part_role` is the one home of the rule; `caption.part_names` names parts with it, so captions,
the corpus profile (part ranges, rests and densities per role), the decoder's track names and
the sanity checks all speak of the same roles.
"""

from __future__ import annotations

import re

import numpy as np

DRUMS_ROLE = "Drums"
BASS_ROLE = "Bass"
LEAD_ROLE = "Lead"
# The General MIDI families (first program of each) as the role a part of that family plays.
_FAMILY_ROLES = ((0, "Piano"), (8, "Mallets"), (16, "Organ"), (24, "Guitar"), (32, BASS_ROLE), (40, "Strings"),
                 (52, "Choir"), (55, "Strings"), (56, "Brass"), (64, "Winds"), (80, LEAD_ROLE), (88, "Pad"),
                 (96, "FX"), (104, "Ethnic"), (112, "Percussion"), (120, "FX"))
# Families whose single high line is a tune (the Lead); a single line of strummed, struck or
# held families (guitar, mallets, pads) keeps the family's name.
_TUNE_FAMILIES = frozenset({"Piano", "Organ", "Strings", "Brass", "Winds", "Ethnic"})
# Below C3 (MIDI 48) a single line is a bass line; above C5 (72) a tune: the median of the
# part's pitches, so a few low or high notes do not move it.
BASS_BELOW = 48
LEAD_FROM = 72
# A single line: at least this share of the part's onsets strike one note.
SINGLE_LINE_SHARE = 0.9
# Track names that only number a track: "Track7", "Staff-1", "Part 3", "Instrument 2", "MIDI Ch. 10",
# "MIDI 01", "program 33", "untitled", "7", the empty name, and "Track" in a few languages (the
# Swedish "Spår 1" of OpenMSX, often read with its "å" lost). Any other word says something.
_NUMBERING_WORD = (r"track|staff|part|instrument|inst|channel|ch|program|prog|midi|seq|sequence|layer|pattern|"
                   r"untitled|unnamed|noname|no name|new|tr|sp.r|spur|piste|pista|traccia")
_NUMBERING_NAME = re.compile(rf"(?:(?:{_NUMBERING_WORD})(?![a-z])[\s_\-#:.()]*)*\d*[\s_\-#:.()]*", re.IGNORECASE)


def family_role(program: int) -> str:
    """The role of a General MIDI program's family: 33 (Electric Bass) -> "Bass"."""
    return next(role for first, role in reversed(_FAMILY_ROLES) if program >= first)


def name_says_nothing(name: str) -> bool:
    """Whether a track name only numbers the track ("Track7", "Staff-1", "", "program 33")."""
    return _NUMBERING_NAME.fullmatch(" ".join(name.split())) is not None


def part_role(program: int, is_drum: bool, pitches, onsets) -> str:
    """What a part plays: Drums, Bass, Lead, or its family's role (Piano, Guitar, Strings...).

    `pitches` and `onsets` are its notes' pitches and onset times (any unit, one entry per note)."""
    if is_drum:
        return DRUMS_ROLE
    role = family_role(program)
    pitches = np.asarray(pitches)
    if not pitches.size or role in ("FX", "Percussion", DRUMS_ROLE):
        return role
    _, per_onset = np.unique(np.asarray(onsets), return_counts=True)
    single_line = float(np.mean(per_onset == 1)) >= SINGLE_LINE_SHARE
    median = float(np.median(pitches))
    if single_line and median < BASS_BELOW:
        return BASS_ROLE
    if single_line and median >= LEAD_FROM and role in _TUNE_FAMILIES:
        return LEAD_ROLE
    return role


def track_role(track) -> str:
    """`part_role` of a symusic track."""
    notes = track.notes.numpy()
    return part_role(int(track.program), bool(track.is_drum), notes["pitch"], notes["time"])


def program_role(program: int) -> str:
    """The role a part of this program (-1: drums) plays, knowing no notes: its family's."""
    return DRUMS_ROLE if program < 0 else family_role(program)


def possible_roles(program: int) -> frozenset[str]:
    """Every role `part_role` may give a part of this program (-1: drums), whatever its notes:
    its family's, Bass (any pitched part may be a low single line), and Lead for a family that
    carries tunes. What a sampler must allow for before the part's notes are written."""
    role = program_role(program)
    if role in ("FX", "Percussion", DRUMS_ROLE):
        return frozenset({role})
    return frozenset({role, BASS_ROLE} | ({LEAD_ROLE} if role in _TUNE_FAMILIES else set()))
