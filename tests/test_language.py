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


# ----------------------------------------------------------------------------- the caption


def _chorale_sketch() -> Score:
    from symusic import KeySignature, Tempo

    score = Score(480)
    score.key_signatures.append(KeySignature(0, -2, 1))  # G minor
    score.time_signatures.append(TimeSignature(0, 3, 4))
    score.tempos.append(Tempo(0, 84.0))
    for name, pitch in (("Soprano", 72), ("Alto", 67), ("Tenor", 60), ("Bass", 48)):
        track = Track(name=name, program=52)
        track.notes.append(Note(0, 480, pitch, 80))
        score.tracks.append(track)
    return score


def test_one_writer_and_one_reader_of_the_caption():
    from midillm.tokenization.caption import caption_fields, score_caption, write_caption

    caption = score_caption(_chorale_sketch(), {"composer": "J.S. Bach", "title": "", "genre": None})
    assert caption == ("Composer: J.S. Bach\nParts: Soprano, Alto, Tenor, Bass\nKey: G minor\n"
                       "Time signature: 3/4\nTempo: 84 BPM\nInstruments: 4 x Choir Aahs\n")
    # Read back and written again, a caption is itself; empty fields are not written.
    assert write_caption(caption_fields(caption)) == caption
    assert write_caption({"Key": "", "Tempo": None, "Genre": "Chorale"}) == "Genre: Chorale\n"


def test_the_instruments_syntax_is_read_in_one_place():
    from midillm.tokenization.caption import instruments_listed, programs_named_in

    assert instruments_listed("2 x Violin, Cello, Drums, , 3 x  Flute") == \
        [(2, "Violin"), (1, "Cello"), (1, "Drums"), (3, "Flute")]
    assert programs_named_in("Parts: A\nInstruments: 2 x Violin, Drums, Not An Instrument\n") == [-1, 40]


def test_an_accompaniment_caption_names_the_given_parts_first():
    from midillm.tokenization.caption import accompaniment_caption, caption_fields

    given = _chorale_sketch()
    given.tracks = [given.tracks[0]]
    typical = "Composer: J.S. Bach\nParts: Soprano, Alto, Tenor, Bass\nKey: C major\nTempo: 120 BPM\n"
    text, names = accompaniment_caption(given, None, typical, keep_style=True)
    assert names == ["Soprano", "Alto", "Tenor", "Bass"]
    fields = caption_fields(text)
    # The corpus's composer, the melody's own key and tempo, the parts in order.
    assert fields["Composer"] == "J.S. Bach" and fields["Key"] == "G minor" and fields["Tempo"] == "84 BPM"
    assert fields["Parts"] == "Soprano, Alto, Tenor, Bass"
    # An arrangement's caption counts its new parts from its instruments.
    text, names = accompaniment_caption(given, "Instruments: 2 x Violin, Cello", typical, keep_style=False)
    assert names == ["Soprano", "Violin", "Violin", "Cello"] and "Composer" not in caption_fields(text)


def test_a_caption_is_cut_to_its_budget_of_the_row():
    from midillm.tokenization.caption import as_written, caption_budget, caption_ids

    class Words:  # a stand-in LM tokenizer: one id per word
        def __call__(self, text, add_special_tokens=False):
            return type("Encoding", (), {"input_ids": list(range(len(text.split())))})()

    text = as_written("  " + " ".join(["word"] * 100) + "\n\n")
    assert text.endswith("word\n") and not text.startswith(" ")
    assert len(caption_ids(Words(), text)) == 100
    assert len(caption_ids(Words(), text, seq_len=256)) == caption_budget(256) == 64


# ----------------------------------------------------------------------------- row layouts

START, END, GAP, FILL = 900, 901, 902, 903


def test_an_infill_row_and_its_filled_piece_are_laid_out_by_the_same_functions():
    from midillm.tokenization.rows import (IGNORE_INDEX, filled_piece, flat, infill_example, infill_prompt,
                                           infill_row, music_row)

    caption, bars = [1, 2], [[10, 11], [12], [13, 14], [15], [16, 17]]
    ids, labels = infill_example(caption, bars, 2, 1, START, END, GAP, FILL, seq_len=64)
    prompt = infill_prompt(caption, bars, 1, 2, START, GAP, FILL, budget=64)
    assert prompt == [1, 2, START, 10, 11, GAP, GAP, 15, 16, 17, FILL]
    assert ids == infill_row(prompt, [12, 13, 14], END)
    assert labels[:3] == [IGNORE_INDEX] * 3 and labels[5:7] == [IGNORE_INDEX] * 2 and labels[-1] == END
    # What an infill wrote, put back in its gap, is the piece in the continuation layout.
    assert filled_piece(caption, bars, 1, 2, [12, 13, 14], START, END) == music_row(caption, flat(bars), START, END)
    assert music_row(caption, [10], START) == [1, 2, START, 10]


def test_accompaniment_rows_and_prompts_put_the_given_parts_first():
    from midillm.decoding.generate import select_tracks
    from midillm.tokenization.rows import accompaniment_order, reorder_parts

    score = _chorale_sketch()
    order = accompaniment_order(4, random.Random(5))
    assert order == [2, 3, 0, 1]  # one or two given parts first, each group in score order
    assert accompaniment_order(1, random.Random(5)) is None
    assert [track.name for track in reorder_parts(score, order).tracks] == [score.tracks[index].name for index in order]
    # The prompt of `accompany` keeps the tracks asked for, in that order, as a row has them.
    assert [track.name for track in select_tracks(score, ["bass", "Alto"]).tracks] == ["Bass", "Alto"]
