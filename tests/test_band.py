"""Band music (issue 26): each part on the instrument asked, drums on the drum channel and only
in a drum part, parts named by their role where track names say nothing, and the sanity checks
a listener makes of a band. End to end on the tiny bundle trained on band scores (`tiny_bundle`
over `tiny_data`: drums, bass, piano, strings, a lead and a guitar in each piece)."""

from __future__ import annotations

import io

import pytest
import torch
from conftest import make_band_score
from symusic import Note, Score, Track

from midillm.decoding.request import MusicRequest, TaskError, part_instruments
from midillm.tokenization.caption import (INSTRUMENTS, PARTS, caption_field, instruments_value, names_in_caption,
                                          part_names, part_programs_listed, score_caption)
from midillm.tokenization.roles import name_says_nothing, part_role, track_role


@pytest.fixture(scope="module")
def band_lm(tiny_bundle):
    from midillm.decoding.generate import MidiLM

    return MidiLM.from_pretrained(tiny_bundle, dtype=torch.float32)


def written_instruments(score: Score) -> list[int]:
    """Each played track's program, -1 for a drum track, in part order."""
    return [-1 if track.is_drum else int(track.program) for track in score.tracks if track.note_num()]


def midi_channels(midi: bytes) -> dict[int, set[int]]:
    """Channel -> the programs its notes sound with, read from the MIDI file itself."""
    import mido

    channels: dict[int, set[int]] = {}
    for midi_track in mido.MidiFile(file=io.BytesIO(midi)).tracks:
        program = 0
        for message in midi_track:
            if message.type == "program_change":
                program = message.program
            elif message.type == "note_on" and message.velocity:
                channels.setdefault(message.channel, set()).add(program)
    return channels


def assert_as_asked(score: Score, names: list[str], asked: list[int], ended: bool, codec) -> None:
    """The part named `names[k]` plays `asked[k]` (-1: a drum track), the parts in the order the
    codec numbers them (by role: the bass and drums last); an ended piece plays every asked part."""
    program_of = dict(zip(names, asked))
    played = [track for track in score.tracks if track.note_num()]
    assert played and all(track.name in program_of for track in played)
    for track in played:
        assert (-1 if track.is_drum else int(track.program)) == program_of[track.name], track.name
    number_of = dict(zip(names, codec.part_numbers(names, asked)))
    assert [number_of[track.name] for track in played] == sorted(number_of[track.name] for track in played)
    if ended:
        assert sorted(written_instruments(score)) == sorted(asked)


# ----------------------------------------------------------------------------- roles


def test_parts_are_numbered_by_role_from_what_a_caption_says_of_them():
    from midillm.tokenization.roles import ROLE_ORDER, caption_role, role_part_numbers

    # A role word names the role; any other name leaves it to the instrument's family.
    assert caption_role("bass", None) == "Bass" and caption_role("Drums", 0) == "Drums"
    assert caption_role("Lead Guitar", 29) == "Guitar" and caption_role("Melody", 73) == "Winds"
    assert caption_role("Track7", -1) == "Drums" and caption_role("Soprano", None) == "Piano"
    assert ROLE_ORDER.index("Bass") == 13 and ROLE_ORDER.index("Drums") == 14
    # Two guitars: the second takes the next free number; numbers rise in role order.
    assert role_part_numbers(["Drums", "Guitar", "Bass", "Guitar", "Lead"], 16) == [14, 8, 13, 9, 0]
    # More parts of the last roles than numbers after them: moved down, still rising.
    assert role_part_numbers(["Drums"] * 4, 16) == [12, 13, 14, 15]
    assert role_part_numbers(["Lead"] * 16, 16) == list(range(16))


def test_a_request_lists_its_parts_in_the_codecs_part_order(band_lm):
    codec = band_lm.codec
    assert codec.part_numbering == "role"  # the band corpus: more than one instrument family
    text = ("Parts: Drums, Bass, Lead Guitar\nTime signature: 4/4\n"
            "Instruments: Drums, Electric Bass (finger), Overdriven Guitar\n")
    ordered, order = codec.caption_in_part_order(text)
    assert order == [2, 1, 0]
    assert names_in_caption(ordered) == ["Lead Guitar", "Bass", "Drums"]
    assert caption_field(ordered, INSTRUMENTS) == "Overdriven Guitar, Electric Bass (finger), Drums"
    assert codec.caption_numbers(ordered) == [8, 13, 14]
    assert codec.caption_in_part_order(ordered) == (ordered, None)
    # The programs, names and registers given part by part move with their parts.
    request = MusicRequest(text=text, programs=[-1, 33, 29], registers="3=E3-C5", parts=["Drums", "Bass", "Lead Guitar"])
    moved, _ = band_lm._in_part_order(request, text)
    assert moved.programs == [29, 33, -1] and moved.parts == ["Lead Guitar", "Bass", "Drums"]
    assert moved.registers == {"1": (52, 72)}


@pytest.mark.parametrize("name, says_nothing", [
    ("Track7", True), ("Staff-1", True), ("", True), ("  ", True), ("program 33", True), ("Part 3", True),
    ("Ch. 10", True), ("7", True), ("untitled", True), ("MIDI Ch. 2", True), ("MIDI 01", True), ("Spår 1", True),
    ("Sp\ufffdr 1", True), ("New Track 2", True),
    ("Soprano", False), ("Lead Guitar", False), ("Drum Kit", False), ("Piano 1", False), ("Bass", False),
    ("MIDI Drums", False), ("Partita", False), ("Melody 1", False)])
def test_a_name_that_only_numbers_a_track_says_nothing(name, says_nothing):
    assert name_says_nothing(name) is says_nothing


def test_parts_without_names_are_named_by_their_role():
    score = make_band_score(seed=0, bars=6)  # tracks named "program 0", "program 33", ...
    assert part_names(score) == ["Drums", "Bass", "Piano", "Strings", "Lead", "Guitar"]
    # A name that says something is kept; the caption lists the parts with their instruments.
    score.tracks[5].name = "Rhythm Guitar"
    caption = score_caption(score)
    assert names_in_caption(caption) == ["Drums", "Bass", "Piano", "Strings", "Lead", "Rhythm Guitar"]
    assert part_programs_listed(caption_field(caption, INSTRUMENTS)) == [-1, 33, 0, 48, 73, 25]


def test_register_decides_bass_and_lead_where_the_family_cannot():
    low_line = part_role(0, False, [36, 38, 40, 43], [0, 1, 2, 3])   # a piano's left-hand bass line
    chords_low = part_role(0, False, [36, 40, 43, 45], [0, 0, 1, 1])  # low piano chords
    tune = part_role(40, False, [76, 79, 81, 84], [0, 1, 2, 3])      # a violin's high single line
    strum = part_role(25, False, [76, 79, 81, 84], [0, 1, 2, 3])     # a guitar's stays a guitar
    assert (low_line, chords_low, tune, strum) == ("Bass", "Piano", "Lead", "Guitar")
    assert part_role(0, True, [36, 38], [0, 0]) == "Drums"
    assert part_role(89, False, [60, 64, 67], [0, 0, 0]) == "Pad"


def test_instruments_are_written_part_by_part_in_part_order():
    # Runs of one instrument are counted; an instrument that comes back is named again, so the
    # line reads back part by part (a Counter would put the second piano beside the first).
    assert instruments_value([-1, 33, 0, 0, 25, 0]) == (
        "Drums, Electric Bass (finger), 2 x Acoustic Grand Piano, Acoustic Guitar (steel), Acoustic Grand Piano")
    assert part_programs_listed("Drums, 2 x Violin, Kazoo") == [-1, 40, 40, None]


# ----------------------------------------------------------------------------- what is asked


def test_part_instruments_come_from_the_programs_else_the_caption():
    caption = "Parts: Kit, Low, Keys\nInstruments: Drums, Electric Bass (finger), Acoustic Grand Piano\n"
    assert part_instruments(caption) == [-1, 33, 0]
    assert part_instruments(caption, programs=[-1, 33, 48]) == [-1, 33, 48]
    assert part_instruments("Instruments: 4 x Choir Aahs\n") == [52] * 4
    assert part_instruments("Instruments: Choir Aahs\n") is None  # one instrument, parts uncounted: it alone plays
    assert part_instruments("Instruments: Choir Aahs\n", parts=4) == [52] * 4
    assert part_instruments(None, programs=[-1, 33]) == [-1, 33]
    with pytest.raises(TaskError, match="3 parts but 2 instruments"):
        part_instruments("Parts: A, B, C\nInstruments: Drums, Violin\n")


def test_programs_over_a_drawn_caption_make_the_parts_theirs():
    drawn = ("Parts: Drums, Bass, Piano, Strings, Lead, Guitar\nTempo: 96 BPM\n"
             "Instruments: Drums, Electric Bass (finger), Acoustic Grand Piano, String Ensemble 1, Flute, "
             "Acoustic Guitar (steel)\n")
    caption = MusicRequest(programs=[-1, 33]).prompt_caption(drawn)
    assert names_in_caption(caption) == ["Drums", "Bass"]
    assert caption_field(caption, INSTRUMENTS) == "Drums, Electric Bass (finger)"
    # A count of parts keeps the drawn piece's first parts with their instruments.
    caption = MusicRequest(parts=3).prompt_caption(drawn)
    assert caption_field(caption, PARTS) == "Drums, Bass, Piano"
    assert part_instruments(caption) == [-1, 33, 0]
    with pytest.raises(TaskError, match="3 parts but 2 instruments"):
        MusicRequest(parts=3, programs=[-1, 33])


def test_a_part_with_an_asked_instrument_names_it_before_its_first_note(band_lm):
    """The corpus constraints: before part 0 (asked: drums) has named its program, no row may
    strike a note for it, nor name another program; a note before any Program token would
    decode as program 0 on a melodic channel."""
    caption = "Parts: Drums, Bass\nInstruments: Drums, Electric Bass (finger)\n"
    drums, bass = band_lm.codec.caption_numbers(caption)
    assert (drums, bass) == (14, 13)  # numbered by role, whatever the caption's order
    constraints = band_lm.constraints(caption)
    state = constraints.start_state()
    for lm_id in band_lm.codec.lm_ids_of_base_tokens(["Bar_None", "TimeSig_4/4", "Shift_0", f"Part_{drums}"]):
        state = constraints.advance(state, lm_id)
    allowed = constraints.row_mask(state)
    rows = band_lm.grammar.row_lm_ids
    for row, lm_id in enumerate(rows[:-1]):
        tokens = band_lm.codec.music_token_parts[band_lm.codec.music_id_of_lm_id(lm_id)]
        if not allowed[row]:
            continue
        first_note = next((index for index, token in enumerate(tokens) if token.startswith("Pitch")), None)
        programs = [token for token in tokens if token.startswith("Program_")]
        assert all(program == "Program_-1" for program in programs), tokens
        if first_note is not None:
            assert programs and tokens.index(programs[0]) < first_note, tokens
            assert all(not token.startswith("Pitch_") for token in tokens), tokens  # drum notes only
    assert allowed[rows.index(band_lm.codec.lm_ids_of_base_tokens(["Program_-1"])[0])]


# ----------------------------------------------------------------------------- end to end


def test_drums_and_bass_asked_are_drums_and_bass_written(band_lm):
    samples = band_lm.run(MusicRequest(programs=[-1, 33], bars=2, num_samples=4, seed=3,
                                       sampling={"max_new_tokens": 160}))
    assert any(sample.ended for sample in samples)
    for sample in samples:
        assert_as_asked(sample.score, ["Drums", "Bass"], [-1, 33], sample.ended, band_lm.codec)
        drums = [track for track in sample.score.tracks if track.is_drum]
        assert all(track.name == "Drums" for track in drums)
        # Drum notes only in the drum part: every other track is melodic.
        assert [track.name for track in sample.score.tracks if not track.is_drum] in ([], ["Bass"])


def test_a_training_tunes_caption_gets_its_instruments_part_by_part(band_lm):
    """The issue's test: the exact caption of a training tune (drum part included)."""
    caption = next(iter(band_lm.codec.corpus.captions))
    asked = part_programs_listed(caption_field(caption, INSTRUMENTS))
    # The training pieces' captions list their parts as the codec numbers them: the drums last.
    assert -1 in asked and 33 in asked and names_in_caption(caption)[-1] == "Drums"
    samples = band_lm.run(MusicRequest(text=caption, bars=2, num_samples=3, seed=4, sampling={"max_new_tokens": 240}))
    assert any(sample.ended for sample in samples)
    for sample in samples:
        assert_as_asked(sample.score, names_in_caption(caption), asked, sample.ended, band_lm.codec)
        for track in sample.score.tracks:  # named as the caption names them, drums on drums
            assert track.is_drum == (track.name == "Drums")


def test_with_constraints_off_the_asked_instruments_still_hold_and_the_corpus_limits_do_not(band_lm):
    """Constraints off is the model alone on the request: the caption's instruments part by part,
    none of the corpus's limits (crowding, repeats, ranges, metres)."""
    caption = next(iter(band_lm.codec.corpus.captions))
    asked = part_programs_listed(caption_field(caption, INSTRUMENTS))
    request_only = band_lm.constraints(caption, corpus_limits=False)
    corpus = band_lm.constraints(caption)
    assert request_only.part_programs == corpus.part_programs == dict(zip(band_lm.codec.caption_numbers(caption), asked))
    assert request_only.exact_parts == len(asked) and request_only.allowed_programs == set(asked)
    assert corpus.cap is not None and corpus.pitch_ranges and corpus.no_repeats
    # Each instrument keeps to the range the sanity check judges it by: its family's in the corpus.
    assert all(corpus.pitch_ranges[program] == band_lm.codec.corpus.pitch_range(program) for program in asked)
    assert request_only.cap is None and not request_only.pitch_ranges and not request_only.no_repeats
    samples = band_lm.run(MusicRequest(text=caption, bars=2, num_samples=3, seed=4, constrain=False,
                                       sampling={"max_new_tokens": 240}))
    for sample in samples:
        assert_as_asked(sample.score, names_in_caption(caption), asked, sample.ended, band_lm.codec)
    # Given music and nothing asked: the syntax alone, as before.
    assert band_lm.constraints(caption, given_music=True, corpus_limits=False) is None


def test_one_batch_with_a_caption_per_sample_writes_each_samples_instruments(band_lm):
    """Eval draws a caption per sample: one batch, prompts of different lengths (left-padded),
    each row constrained by its own caption, past the context window."""
    from midillm.decoding.generate import SamplingSettings

    drawn = next(iter(band_lm.codec.corpus.captions))
    texts = [drawn, "Parts: Drums\nInstruments: Drums\n", drawn]  # a short caption: a shorter prompt
    steps = band_lm.context_length + 40  # the window slides once with the rows' own heads
    rows = band_lm.generate_ids(3, texts=texts, settings=SamplingSettings(max_new_tokens=steps), seed=2)
    assert len({len(band_lm.prompt_ids(None, text)) for text in texts}) == 2
    for row, record, text in zip(rows, band_lm.last_generation, texts):
        asked = part_programs_listed(caption_field(text, INSTRUMENTS))
        assert record["caption"] == text and record["part_programs"] == asked
        prompt = band_lm.prompt_ids(None, text)
        assert row[:len(prompt)] == prompt  # its own prompt, no padding left in
        assert_as_asked(band_lm.codec.decode(row), names_in_caption(text), asked, record["ended"], band_lm.codec)
    with pytest.raises(ValueError, match="one caption per sample"):
        band_lm.generate_ids(2, texts=texts)


def test_without_a_caption_the_drawn_tunes_instruments_are_written(band_lm):
    samples = band_lm.run(MusicRequest(num_samples=2, seed=0, bars=2, sampling={"max_new_tokens": 240}))
    caption = band_lm.last_generation[0]["caption"]
    asked = band_lm.last_generation[0]["part_programs"]
    assert asked == part_programs_listed(caption_field(caption, INSTRUMENTS)) and -1 in asked
    for sample in samples:
        assert_as_asked(sample.score, names_in_caption(caption), asked, sample.ended, band_lm.codec)


def test_the_command_writes_drums_on_the_drum_channel(tiny_bundle, tmp_path):
    from midillm.cli import main

    out = tmp_path / "out"
    assert main(["generate", str(tiny_bundle), "--out", str(out), "-n", "3", "--programs", "drums,33,0", "--bars", "2",
                 "--max-new-tokens", "200", "--precision", "fp32", "--seed", "5"]) == 0
    files = sorted(out.glob("*.mid"))
    assert len(files) == 3
    for path in files:
        score = Score(str(path))
        played = written_instruments(score)
        # Each part on its own instrument, in part order (by role: piano, bass, drums; a sample
        # cut by --max-new-tokens may stop before every part has entered).
        assert played and played == [program for program in (0, 33, -1) if program in played]
        channels = midi_channels(path.read_bytes())
        # The drum part sounds on channel 10 (9 counted from 0), and nothing else does there;
        # the melodic parts sound with their own programs on their own channels.
        assert (9 in channels) == (-1 in played)
        assert len(channels) == len(played)
        melodic = [program for program in played if program >= 0]
        assert sorted(set().union(*(programs for channel, programs in channels.items() if channel != 9))) \
            == sorted(set(melodic))


def test_the_command_refuses_parts_and_instruments_that_disagree(tiny_bundle, tmp_path, capsys):
    from midillm.cli import main

    assert main(["generate", str(tiny_bundle), "--out", str(tmp_path / "out"), "--parts", "3",
                 "--programs=-1,33"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("midillm: error:") and "3 parts but 2 instruments" in error


def test_a_band_round_trips_with_its_programs_and_drum_flag(band_lm):
    score = make_band_score(seed=7, bars=6)
    decoded = band_lm.codec.decode(band_lm.codec.encode(score))
    assert written_instruments(score) == [-1, 33, 0, 48, 73, 25]
    # Numbered by role, the parts come back lead first, the bass and drums last.
    assert written_instruments(decoded) == [73, 48, 0, 25, 33, -1]
    assert [track.name for track in decoded.tracks] == part_names(band_lm.codec.in_part_order(score))
    assert sorted(part_names(score)) == sorted(track.name for track in decoded.tracks)
    from midillm.tokenization.roundtrip import notes_kept

    kept, total = notes_kept(band_lm.codec, score)
    assert kept == total


def test_track_role_reads_a_tracks_notes():
    track = Track(name="", program=0)
    for time in range(8):
        track.notes.append(Note(time * 480, 480, 40 + time % 3, 90))
    assert track_role(track) == "Bass"


# ----------------------------------------------------------------------------- band-aware sanity


BAND = [-1, 33, 0, 48, 73, 25]  # make_band_score's parts: drums, bass, piano, strings, flute, guitar


@pytest.fixture(scope="module")
def band_profile():
    from midillm.tokenization.profile import measure_corpus

    scores = [make_band_score(seed, bars=8) for seed in range(10)]
    return measure_corpus(scores, [score_caption(score) for score in scores])


def judged(score: Score, profile, asked=BAND) -> dict:
    from midillm.eval.sanity import sample_sanity

    return sample_sanity(score, profile, {"ended": True, "part_programs": asked})


def test_the_profile_measures_each_roles_rests_and_notes_per_beat(band_profile):
    assert set(band_profile.role_rest_beats) == {"Drums", "Bass", "Piano", "Strings", "Lead", "Guitar"}
    # The strings' last half note holds a beat past the last bar line (8 bars, 28 beats): the
    # piece is 29 beats long, and every other part rests that last beat; the strings never rest.
    assert band_profile.role_rest_beats["Bass"] == 1.0 and band_profile.role_rest_beats["Strings"] == 0.0
    # The drums strike every half beat of 28 (56 notes), the flute every quarter beat.
    assert band_profile.role_notes_per_beat["Drums"] == [round(56 / 29, 4)] * 2
    assert band_profile.role_notes_per_beat["Lead"] == [round(112 / 29, 4)] * 2


def test_a_band_like_its_corpus_is_sane_with_its_caption(band_profile):
    check = judged(make_band_score(seed=11, bars=8), band_profile)
    assert check["sane"], check["reasons"]
    assert check["instruments_as_asked"] and check["drums_asked"] and check["drums_written"]
    assert check["silent_parts"] == check["parts_out_of_density"] == 0


def without_notes_after(track: Track, ticks: int) -> None:
    kept = [(note.time, note.duration, note.pitch, note.velocity) for note in track.notes if note.time < ticks]
    track.notes.clear()
    for note in kept:
        track.notes.append(Note(*note))


def test_a_part_that_falls_silent_is_not_sane(band_profile):
    score = make_band_score(seed=11, bars=8)
    without_notes_after(score.tracks[1], 4 * 480 * 2)  # the bass stops after two bars of eight
    check = judged(score, band_profile)
    assert "silent_part" in check["reasons"] and check["silent_parts"] == 1
    assert [part["role"] for part in check["parts"] if part["silent"]] == ["Bass"]


def test_drums_written_on_a_melodic_channel_are_not_the_drums_asked(band_profile):
    score = make_band_score(seed=11, bars=8)
    score.tracks[0].is_drum = False  # the samples: the drum part as program 0
    check = judged(score, band_profile)
    assert "other_instrument" in check["reasons"] and not check["instruments_as_asked"]
    assert check["drums_asked"] and not check["drums_written"]


def test_a_missing_part_and_a_sparse_part_are_not_sane(band_profile):
    score = make_band_score(seed=11, bars=8)
    score.tracks = [track for index, track in enumerate(score.tracks) if index != 4]  # no lead
    check = judged(score, band_profile)
    assert "missing_part" in check["reasons"] and check["parts_played"] == 5
    sparse = make_band_score(seed=11, bars=8)
    lead = sparse.tracks[4]
    notes = [(note.time, note.duration * 16, note.pitch, note.velocity) for note in lead.notes][::16]
    lead.notes.clear()
    for note in notes:  # a whole note where the corpus's flutes play sixteenths
        lead.notes.append(Note(*note))
    check = judged(sparse, band_profile)
    # (Time also stalls: in this corpus the flute's sixteenths are the only onsets between eighths.)
    assert "part_density" in check["reasons"] and "silent_part" not in check["reasons"]
    assert [part["role"] for part in check["parts"] if part["out_of_density"]] == ["Lead"]


def test_the_set_summary_counts_the_band_checks(band_profile):
    from midillm.eval.sanity import sanity_summary

    good = judged(make_band_score(seed=11, bars=8), band_profile)
    drumless = make_band_score(seed=12, bars=8)
    drumless.tracks[0].is_drum = False
    silent = make_band_score(seed=13, bars=8)
    without_notes_after(silent.tracks[1], 4 * 480 * 2)
    unasked = judged(make_band_score(seed=14, bars=8), band_profile, asked=None)
    summary = sanity_summary([good, judged(drumless, band_profile), judged(silent, band_profile), unasked])
    assert summary["instruments_as_asked_share"] == pytest.approx(2 / 3)
    assert summary["drums_when_asked_share"] == pytest.approx(2 / 3)
    assert summary["silent_parts"] == 1
    assert unasked["instruments_as_asked"] is None and unasked["sane"]


def test_the_card_reports_the_band_checks(tmp_path):
    from midillm.hub.card import _evaluation_text

    text = _evaluation_text({"summary": {"sane_share": 1.0, "instruments_as_asked_share": 0.75,
                                         "drums_when_asked_share": 1.0, "silent_parts": 2}})
    assert "| samples whose parts play the instruments asked | 75% |" in text
    assert "| samples with drums, where the caption asks for drums | 100% |" in text
    assert "| parts silent longer than their role's longest rest in the corpus | 2 |" in text


# ----------------------------------------------------------------------------- every asked part plays


def test_until_every_asked_part_has_played_each_new_onset_opens_with_one(band_lm):
    """Drums and bass asked; the drums have played: the next onset must open with the bass, and
    the piece may not end. Given way only in a dead end (`relax`), instruments kept."""
    from midillm.decoding.grammar import CorpusConstraints

    caption = "Parts: Drums, Bass\nInstruments: Drums, Electric Bass (finger)\n"
    drums, bass = band_lm.codec.caption_numbers(caption)
    constraints = band_lm.constraints(caption)
    state = constraints.start_state()
    for lm_id in band_lm.codec.lm_ids_of_base_tokens(["Bar_None", "TimeSig_4/4", "Shift_0", f"Part_{drums}",
                                                      "Program_-1", "PitchDrum_36"]):
        state = constraints.advance(state, lm_id)
    assert state.parts_played == {drums}
    rows = {tuple(band_lm.codec.music_token_parts[band_lm.codec.music_id_of_lm_id(lm_id)]): row
            for row, lm_id in enumerate(band_lm.grammar.row_lm_ids[:-1])}
    # The drums again at a new onset, in one row (time and the drum note together) where the
    # codec has such a compound; numbered by role the drums come last, so it may have none.
    drums_at_a_new_onset = [row for tokens, row in rows.items()
                            if tokens[0].startswith("Shift_") and tokens[1:2] == (f"Part_{drums}",)]
    strict = constraints.row_mask(state)
    assert not strict[band_lm.grammar.end_row]
    assert not strict[drums_at_a_new_onset].any()
    assert constraints.row_mask(state, CorpusConstraints.LATE_ENTRIES)[drums_at_a_new_onset].all()
    assert constraints.row_mask(state, CorpusConstraints.MAY_END)[band_lm.grammar.end_row]
    # Time moved on, no part yet at this onset: the bass opens it, the drums may not.
    state = constraints.advance(state, band_lm.codec.lm_ids_of_base_tokens(["Shift_4"])[0])
    strict = constraints.row_mask(state)
    assert strict[rows[(f"Part_{bass}",)]] and not strict[rows[(f"Part_{drums}",)]]
    # No other part may play: the caption asks for these two.
    assert not strict[rows[("Part_0",)]] and not strict[rows[("Part_6",)]]


def test_a_typical_caption_whose_parts_and_instruments_disagree_leaves_the_instruments_out():
    from midillm.tokenization.caption import parts_agreeing

    typical = ("Parts: Track7, Track8, Track9, Track10\nTime signature: 4/4\n"
               "Instruments: 2 x Voice Oohs, Tango Accordion, Bright Acoustic Piano, Electric Bass (finger), Drums\n")
    assert parts_agreeing(typical) == "Parts: Track7, Track8, Track9, Track10\nTime signature: 4/4\n"
    agreeing = "Parts: Soprano, Alto, Tenor, Bass\nInstruments: 4 x Choir Aahs\n"
    assert parts_agreeing(agreeing) == agreeing
    with pytest.raises(TaskError, match="4 parts but 6 instruments"):
        part_instruments(typical)
    assert part_instruments(parts_agreeing(typical)) is None


def test_a_dead_end_gives_way_to_the_parts_range_then_the_instruments_never_to_a_drum_note_on_a_bass(band_lm):
    """Strict voice leading reads part order as register order (a chorale's); a band's parts
    numbered in file order (here: as the caption lists them) may put a Bass part above a high
    Strings note, where it finds no pitch at all. The way out keeps the bass on its instrument
    and in its range: a drum note there (which the syntax alone would allow) is never written."""
    from midillm.decoding.grammar import CorpusConstraints, GrammarLogitsProcessor

    caption = ("Parts: Drums, Bass, Piano, Strings, Lead, Guitar\nTime signature: 4/4\n"
               "Instruments: Drums, Electric Bass (finger), Acoustic Grand Piano, String Ensembles 1, Flute, "
               "Acoustic Guitar (steel)\n")
    constraints = band_lm.constraints(caption, part_numbers=list(range(6)))
    assert constraints.strict_voice_leading  # the synthetic band corpus has no parallels
    prompt = band_lm.prompt_ids(None, caption) + band_lm.codec.lm_ids_of_base_tokens(
        ["Bar_None", "TimeSig_4/4", "Shift_0", "Part_3", "Program_48", "Pitch_68", "Velocity_111", "Shift_1",
         "Part_1", "Program_33"])
    state = constraints.start_state()
    for lm_id in band_lm.codec.music_part(prompt):
        state = constraints.advance(state, lm_id)
    syntax = band_lm.grammar.row_mask(band_lm.grammar.state_after(band_lm.codec.music_part(prompt)))
    for relax in (CorpusConstraints.STRICT, CorpusConstraints.LATE_ENTRIES, CorpusConstraints.MAY_END):
        assert not (syntax & constraints.row_mask(state, relax)).any()  # a dead end
    processor = GrammarLogitsProcessor(band_lm.grammar, prompt_ids=[prompt], constraints=constraints)
    scores = processor(torch.tensor([prompt]), torch.zeros(1, len(band_lm.codec.lm_tokenizer)))
    allowed = [band_lm.codec.music_tokens([lm_id]) for lm_id in torch.isfinite(scores[0]).nonzero().flatten().tolist()]
    low, high = constraints.part_ranges[1]
    assert allowed and all(tokens[0].startswith("Pitch_") for tokens in allowed)
    assert all(low <= int(tokens[0].split("_")[1]) <= high for tokens in allowed)


# ----------------------------------------------------------------------------- each part as busy as its role


def test_a_part_keeps_within_its_roles_notes_per_beat_while_it_is_written(band_lm):
    """The corpus constraints keep each asked part's notes per beat within its role's range in
    the corpus (`role_notes_per_beat`, the range the sanity check judges by): time does not move
    on past where a part would fall below its floor, and while it is behind only it strikes; a
    part at its ceiling strikes no more at this onset. Given way first in a dead end."""
    import dataclasses

    from midillm.decoding.grammar import CorpusConstraints

    profile = dataclasses.replace(band_lm.codec.corpus, role_notes_per_beat={"Drums": [0.5, 4.0], "Bass": [0.5, 2.0],
                                                                             "Piano": [0.1, 3.0]})
    # A bass guitar may only be heard as a Bass; a piano as a Piano, or as a Bass or Lead line:
    # its limits are those every one of them allows.
    constraints = CorpusConstraints(band_lm.grammar, profile, part_programs=[-1, 33, 0], max_gap=None)
    assert constraints.part_floors == {0: 0.5, 1: 0.5, 2: 0.5} and constraints.part_ceilings == {0: 4.0, 1: 2.0, 2: 2.0}
    codec = band_lm.codec
    rows = {tuple(codec.music_token_parts[codec.music_id_of_lm_id(lm_id)]): row
            for row, lm_id in enumerate(band_lm.grammar.row_lm_ids[:-1])}
    steps_per_beat = constraints.positions_per_beat

    def after(tokens, state=None):
        state = state or constraints.start_state()
        for lm_id in codec.lm_ids_of_base_tokens(tokens):
            state = constraints.advance(state, lm_id)
        return state

    def moves_time(mask):
        return [tokens for tokens, row in rows.items() if mask[row] and tokens[0].startswith("Shift_")
                and int(tokens[0].split("_")[1]) > 0]

    opening = ["Bar_None", "TimeSig_4/4", "Shift_0", "Part_0", "Program_-1", "PitchDrum_36", "Velocity_111",
               "Part_1", "Program_33", "Pitch_40", "Velocity_111", "Part_2", "Program_0", "Pitch_60", "Velocity_111"]
    state = after(opening)
    # One note each at the first onset: at 0.5 a beat (with 10% to spare) time may move 1.8 beats on.
    allowed = constraints.row_mask(state)
    assert allowed[rows[(f"Shift_{steps_per_beat}",)]] and not allowed[rows[(f"Shift_{2 * steps_per_beat}",)]]
    # Two beats on, the drums strike again, the bass and the piano do not: both are behind.
    state = after([f"Shift_{2 * steps_per_beat}", "Part_0", "PitchDrum_38", "Velocity_111"], state)
    allowed = constraints.row_mask(state)
    assert not moves_time(allowed)
    assert not allowed[rows[("PitchDrum_42",)]] and not allowed[rows[("Part_0",)]]
    assert allowed[rows[("Part_1",)]] and allowed[rows[("Part_2",)]]
    assert moves_time(constraints.row_mask(state, CorpusConstraints.ANY_DENSITY))  # the first way out
    # Both strike: time moves on again.
    state = after(["Part_1", "Pitch_43", "Velocity_111", "Part_2", "Pitch_64", "Velocity_111"], state)
    assert moves_time(constraints.row_mask(state))
    # A part at its ceiling: at the first onset (no beat gone yet), two notes are all it may strike.
    state = after(opening[:7] + ["PitchDrum_38", "Velocity_111"])
    allowed = constraints.row_mask(state)
    assert not allowed[rows[("PitchDrum_42",)]] and allowed[rows[("Part_1",)]]
    # Ending now holds the last notes to the end of the bar, as the sanity check counts the piece:
    # four beats, so each part needs two notes at 0.5 a beat before the piece may end.
    ending = CorpusConstraints(band_lm.grammar, profile, part_programs=[-1, 33, 0], min_bars=1)
    state = ending.start_state()
    for lm_id in codec.lm_ids_of_base_tokens(opening):
        state = ending.advance(state, lm_id)
    end_row = band_lm.grammar.end_row
    assert not ending.row_mask(state)[end_row] and ending.row_mask(state, CorpusConstraints.ANY_DENSITY)[end_row]
    for lm_id in codec.lm_ids_of_base_tokens([f"Shift_{steps_per_beat}", "Part_0", "PitchDrum_38", "Velocity_111",
                                              "Part_1", "Pitch_43", "Velocity_111", "Part_2", "Pitch_64", "Velocity_111"]):
        state = ending.advance(state, lm_id)
    assert ending.row_mask(state)[end_row]
    # A range too narrow to keep with 10% to spare (one piece's strings) is left to the model.
    narrow = dataclasses.replace(profile, role_notes_per_beat={**profile.role_notes_per_beat, "Strings": [0.5, 0.5]})
    assert 3 not in CorpusConstraints(band_lm.grammar, narrow, part_programs=[-1, 33, 0, 48]).part_floors
    # Constraints off (the model alone) keep no density limits.
    alone = CorpusConstraints(band_lm.grammar, profile, part_programs=[-1, 33, 0], corpus_limits=False)
    assert alone.part_floors == alone.part_ceilings == {}


def test_no_voice_stays_on_one_pitch_longer_than_the_corpus_lets_it(band_lm):
    """The corpus constraints cut a part's run on one pitch (struck again or held: in the onsets
    layout a note sounds until its part's next one) a beat short of the corpus's longest
    (`max_same_pitch_beats`, the limit `stuck_part` judges by): time does not move past that
    deadline until the part has moved to another pitch, nor may the part strike its pitch again
    where the next onset would be past it. Given way first in a dead end; off for the model alone
    and for given music."""
    import dataclasses

    from midillm.decoding.grammar import CorpusConstraints

    profile = dataclasses.replace(band_lm.codec.corpus, max_same_pitch_beats=3.0, role_notes_per_beat={})
    constraints = CorpusConstraints(band_lm.grammar, profile, part_programs=[33, 0], min_bars=1, max_gap=None)
    assert constraints.same_pitch_limit == 2.0
    codec = band_lm.codec
    rows = {tuple(codec.music_token_parts[codec.music_id_of_lm_id(lm_id)]): row
            for row, lm_id in enumerate(band_lm.grammar.row_lm_ids[:-1])}
    steps_per_beat = constraints.positions_per_beat

    def after(tokens, state):
        for lm_id in codec.lm_ids_of_base_tokens(tokens):
            state = constraints.advance(state, lm_id)
        return state

    opening = ["Bar_None", "TimeSig_4/4", "Shift_0", "Part_0", "Program_33", "Pitch_40", "Velocity_111",
               "Part_1", "Program_0", "Pitch_60", "Velocity_111"]
    state = after(opening, constraints.start_state())
    allowed = constraints.row_mask(state)
    # Both parts began their pitch at beat 0: time may move two beats on, not further.
    assert allowed[rows[(f"Shift_{2 * steps_per_beat}",)]] and not allowed[rows[(f"Shift_{2 * steps_per_beat + 1}",)]]
    # Ending now holds both notes to the end of the bar: four beats on one pitch.
    end_row = band_lm.grammar.end_row
    assert not allowed[end_row] and constraints.row_mask(state, CorpusConstraints.ANY_DENSITY)[end_row]
    # Two beats on, neither part may strike its pitch again, and time may not move on until both
    # have moved to another pitch.
    state = after([f"Shift_{2 * steps_per_beat}"], state)
    allowed = constraints.row_mask(state)
    # This onset is the parts' last chance: the lower part may not come first and leave the
    # upper one no way to move here (an onset's parts come from the top down).
    assert allowed[rows[("Part_0",)]] and not allowed[rows[("Part_1",)]]
    state = after(["Part_0"], state)
    allowed = constraints.row_mask(state)
    assert not allowed[rows[("Pitch_40",)]] and allowed[rows[("Pitch_43",)]]
    state = after(["Pitch_43", "Velocity_111"], state)
    assert not allowed_moves(constraints.row_mask(state), rows)
    assert allowed_moves(constraints.row_mask(state, CorpusConstraints.ANY_DENSITY), rows)  # the first way out
    state = after(["Part_1", "Pitch_64", "Velocity_111"], state)
    assert allowed_moves(constraints.row_mask(state), rows)
    assert state.pitch_runs == {0: (43, 2.0, None, None), 1: (64, 2.0, None, None)}  # both held
    # A note written with its length ends there: struck again a beat on, the bass's pitch may
    # last to beat 2, not past it, and then time may move on past it; no note outlasts the limit.
    state = after(opening + [f"Shift_{steps_per_beat}", "Part_0", "Pitch_40", "Velocity_111"],
                  constraints.start_state())
    lengths = {int(whole) + int(part) / int(resolution): tokens for tokens in rows if len(tokens) == 1
               and tokens[0].startswith("Duration_")
               for whole, part, resolution in [tokens[0].split("_", 1)[1].split(".")]}
    allowed = constraints.row_mask(state)
    assert allowed[rows[lengths[1.0]]] and not allowed[rows[lengths[1.5]]]
    state = after([*lengths[1.0], "Part_1", "Pitch_64", "Velocity_111"], state)
    assert state.pitch_runs[0] == (40, 0.0, 2.0, 1.0)
    allowed = constraints.row_mask(state)
    assert allowed[rows[(f"Shift_{2 * steps_per_beat}",)]]  # to beat 3: the piano's new pitch began at 1
    assert not constraints.row_mask(after(["Part_0", "Pitch_43", "Velocity_111"], state))[rows[lengths[2.5]]]
    # Constraints off (the model alone) keep no such limit.
    alone = CorpusConstraints(band_lm.grammar, profile, part_programs=[33, 0], corpus_limits=False)
    assert alone.same_pitch_limit is None
    # Nor does given music (no asked parts: a prompt, infill, accompaniment keep their own notes).
    assert CorpusConstraints(band_lm.grammar, profile).same_pitch_limit is None


def allowed_moves(mask, rows) -> list:
    """The single-token rows that move time on (a positive shift) that `mask` allows."""
    return [tokens for tokens, row in rows.items() if mask[row] and len(tokens) == 1
            and tokens[0].startswith("Shift_") and int(tokens[0].split("_")[1]) > 0]


def test_a_track_name_asked_twice_keeps_both_tracks_of_that_name():
    """A band tune with two "Drum Kit" tracks: keeping "Drum Kit" twice keeps both, not the
    first twice (the second kit's notes would be lost and the first's doubled)."""
    from midillm.decoding.generate import select_tracks

    score = Score(480)
    for name, pitch, is_drum in (("Drum Kit", 36, True), ("Drum Kit", 42, True), ("Bass", 40, False)):
        track = Track(name=name, program=0 if is_drum else 33, is_drum=is_drum)
        track.notes.append(Note(0, 480, pitch, 90))
        score.tracks.append(track)
    kept = select_tracks(score, ["Drum Kit", "Drum Kit", "bass"])
    assert [track.notes[0].pitch for track in kept.tracks] == [36, 42, 40]
    assert [track.notes[0].pitch for track in select_tracks(score, ["Drum Kit"]).tracks] == [36]


def test_parts_only_counted_on_a_role_numbered_codec_are_any_parts_no_more_than_that_many(band_lm):
    """`--parts 2` with a caption that names none: numbered by role, no part number is asked,
    but once two parts have played no third may open."""
    rows = {tuple(band_lm.codec.music_token_parts[band_lm.codec.music_id_of_lm_id(lm_id)]): row
            for row, lm_id in enumerate(band_lm.grammar.row_lm_ids[:-1])}
    third_opens = {}
    for count in (2, 3):
        text = "Time signature: 4/4\n"
        constraints = band_lm.constraints(text, controls=MusicRequest(parts=count, text=text))
        assert constraints.part_numbers is None and constraints.max_parts == count
        state = constraints.start_state()
        for lm_id in band_lm.codec.lm_ids_of_base_tokens(["Bar_None", "TimeSig_4/4", "Shift_0", "Part_6", "Program_0",
                                                          "Pitch_60"]):
            state = constraints.advance(state, lm_id)
        assert constraints.row_mask(state)[rows[("Part_13",)]]  # a second part may open
        for lm_id in band_lm.codec.lm_ids_of_base_tokens(["Part_13", "Program_33", "Pitch_40"]):
            state = constraints.advance(state, lm_id)
        third_opens[count] = bool(constraints.row_mask(state)[rows[("Part_14",)]])
    assert third_opens == {2: False, 3: True}


def test_a_row_cut_from_inside_a_piece_names_only_the_parts_that_play_in_it(tiny_data):
    """A band's strings that rest from bar 4 on are not in the captions of the rows there: a
    caption's parts are the parts that play, as a request means them. A second guitar playing
    alone would be numbered as the first on its own: such a row keeps the whole caption."""
    from midillm.tokenization import MusicCodec
    from midillm.tokenization.dataset import _window_captions

    codec = MusicCodec.from_pretrained(tiny_data / "codec")
    assert codec.part_numbering == "role"
    score = make_band_score(3, bars=8)
    half = 4 * 4 * score.ticks_per_quarter  # bar 4: the first four bars are 4/4
    strings = next(track for track in score.tracks if track.program == 48)
    strings.notes = strings.notes.filter(lambda note: note.time < half)
    bars = codec.encode_bars(score)
    assert len(bars) == 8
    playing = codec.parts_in_bars(bars)
    assert len(codec.score_part_numbers(score)) == 6
    assert all(len(numbers) == 6 for numbers in playing[:4]) and all(len(numbers) == 5 for numbers in playing[4:])
    caption_of = _window_captions(codec, score, {}, bars)
    assert caption_of(0, 4) is None and caption_of(2, 6) is None  # every part plays: the whole caption
    late = codec.lm_tokenizer.decode(caption_of(4, 8))
    assert "String" not in late and caption_field(late, PARTS).count(",") == 4
    for name in ("Drums", "Piano", "Flute", "Electric Bass (finger)", "Acoustic Guitar (steel)"):
        assert name in caption_field(late, INSTRUMENTS), name

    # A second guitar, and the first resting from bar 4: alone, the second would be numbered the first's.
    second = next(track for track in score.tracks if track.program == 25).copy()
    second.program, second.name = 27, "program 27"
    first = next(track for track in score.tracks if track.program == 25)
    first.notes = first.notes.filter(lambda note: note.time < half)
    score.tracks.append(second)
    bars = codec.encode_bars(score)
    caption_of = _window_captions(codec, score, {}, bars)
    assert caption_of(4, 8) is None and caption_of(0, 4) is None
