"""The token language's homes: a bar's length, the caption, the row layouts.

Each is written in one module (`midillm.tokenization.metre`, `.caption`, `.rows`) and every room
asks there; these tests pin what those functions say, on small hand-made scores.
"""

from __future__ import annotations

import random

import pytest
from symusic import Note, Score, TimeSignature, Track

from midillm.tokenization.metre import bar_end_after, bar_length


# ----------------------------------------------------------------------------- bar length


@pytest.mark.parametrize("metre, quarters", [((4, 4), 4.0), ((3, 4), 3.0), ((2, 2), 4.0), ((3, 8), 1.5),
                                             ((6, 8), 3.0), ((12, 8), 6.0), ((5, 16), 1.25), ((3, 2), 6.0)])
def test_a_bar_lasts_its_metre_in_quarter_notes_and_ticks(metre, quarters):
    assert bar_length(*metre) == quarters
    assert int(bar_length(*metre, 480)) == quarters * 480
    # Bars laid from 0: the bar holding tick 0 ends one bar later, the next one two.
    bar = int(quarters * 480)
    assert bar_end_after([(0, *metre)], 480, 0) == bar
    assert bar_end_after([(0, *metre)], 480, bar) == 2 * bar


def _two_parts_in(metre: tuple[int, int], bars: int) -> Score:
    """A melody of quarter notes and a second part striking the last eighth of every bar."""
    score = Score(480)
    score.time_signatures.append(TimeSignature(0, *metre))
    bar = int(bar_length(*metre, 480))
    melody, lower = Track(name="Melody"), Track(name="Lower")
    for index in range(bars * bar // 480):
        melody.notes.append(Note(index * 480, 480, 72 + index % 5, 80))
    for index in range(bars):
        lower.notes.append(Note(index * bar + bar - 240, 240, 48 + index, 80))
    score.tracks.extend([melody, lower])
    return score


@pytest.mark.parametrize("metre", [(3, 8), (6, 8)])
def test_the_shuffled_control_moves_whole_bars_of_compound_and_short_metres(metre):
    """3/8 bars are one and a half quarters long (not one, as `numerator * 4 // denominator`
    rounded them): a note on a bar's last eighth stays on a bar's last eighth."""
    from midillm.eval.tasks import shuffled_control

    score = _two_parts_in(metre, bars=12)
    bar = int(bar_length(*metre, 480))
    control = shuffled_control(score, random.Random(0))
    moved = sorted(note.time for note in control.tracks[1].notes)
    assert [time % bar for time in moved] == [bar - 240] * 12
    assert sorted(time // bar for time in moved) == list(range(12))
    # Whole bars moved: each note to another bar (pitch 48 + its old bar), never within one.
    assert [(note.time, note.pitch) for note in control.tracks[1].notes] != \
        [(note.time, note.pitch) for note in score.tracks[1].notes]
    assert [(note.time, note.pitch) for note in control.tracks[0].notes] == \
        [(note.time, note.pitch) for note in score.tracks[0].notes]
