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


# ----------------------------------------------------------------------------- part numbers by role

# A role-numbered codec (`MusicCodec.part_numbering` "role") writes each part as `<Part_k>` with k
# its role's place here, so `<Part_13>` is a bass line in every piece: numbered in file order,
# `<Part_3>` was a bass in one tune and a drum kit in the next. On the 41 band tunes, 8 minutes of
# the demo recipe each way, validation fell from 26.73 to 20.26 bits per note, the part tokens
# from 10.64 to 7.10 bits (docs/bands.md, "Parts numbered by role"). Roughly from the top of a
# band down, so that an onset's parts come lead first and bass and drums last.
ROLE_ORDER = (LEAD_ROLE, "Winds", "Brass", "Strings", "Choir", "Organ", "Piano", "Mallets", "Guitar", "Pad", "FX",
              "Ethnic", "Percussion", BASS_ROLE, DRUMS_ROLE)
# A part whose name is no role and whose instrument is unknown plays program 0, as General MIDI has it.
_DEFAULT_ROLE = "Piano"


def caption_role(name: str, program: int | None) -> str:
    """The role a caption's part plays, from what a caption says of it: its name where the name
    is a role ("Bass", "drums"), else its instrument's family (`program_role`; None: unknown,
    General MIDI's program 0). The same rule numbers parts when a piece is written for training
    (from its own parts' names and programs) and when a request asks for parts, so a part asked
    as "Bass" or as an Electric Bass is the part the model learned basses as."""
    spoken = " ".join(name.split()).lower()
    named = next((role for role in ROLE_ORDER if role.lower() == spoken), None)
    if named is not None:
        return named
    return program_role(program) if program is not None else _DEFAULT_ROLE


def role_part_numbers(roles: list[str], most: int) -> list[int]:
    """Each part's `<Part_k>` number, in the order given, for parts playing these roles: its
    role's place in `ROLE_ORDER`, or where an earlier part took it (two guitars), the next free
    one; numbers stay below `most` and rise in the parts' role order (a part listed earlier
    among parts of one role gets the lower number)."""
    order = sorted(range(len(roles)), key=lambda index: ROLE_ORDER.index(roles[index]))
    numbers = [0] * len(roles)
    previous = -1
    for index in order:
        previous = max(ROLE_ORDER.index(roles[index]), previous + 1)
        numbers[index] = previous
    ceiling = most  # past the last number: move the highest parts down, keeping their order
    for index in reversed(order):
        numbers[index] = min(numbers[index], ceiling - 1)
        ceiling = numbers[index]
    if roles and min(numbers) < 0:
        raise ValueError(f"{len(roles)} parts do not fit {most} part numbers")
    return numbers
