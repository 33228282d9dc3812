"""MusicCodec: round trips on real and multi-track files, music BPE, captions, saving."""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from fractions import Fraction

import pytest
from symusic import Note, Score, Tempo, TimeSignature, Track

from conftest import MUSIC21_TEST_MIDI, make_band_score
from midillm import MusicCodec
from midillm.tokenization.codec import (part_scores, CODEC_CONFIG_FILE, MUSIC_END, MUSIC_START,
                                        CodecVersionError)
from midillm.tokenization.profile import LONG_DURATION_BEATS, measure_corpus
from midillm.tokenization.roundtrip import notes_kept


def kept_share(codec, paths) -> float:
    kept = total = 0
    for path in paths:
        path_kept, path_total = notes_kept(codec, Score(str(path)))
        kept, total = kept + path_kept, total + path_total
    return kept / total


@pytest.mark.parametrize("tokenization", ["REMI", "TSD", "MIDILike", "Structured", "MMM"])
def test_round_trip_keeps_notes_of_real_and_multitrack_files(
        tokenization, tiny_lm_tokenizer, band_midi_files, bach_midi_files):
    codec = MusicCodec.create(tokenization, lm_tokenizer=tiny_lm_tokenizer)
    files = MUSIC21_TEST_MIDI + band_midi_files + bach_midi_files[:10]
    assert kept_share(codec, files) >= 0.99


# ----------------------------------------------------------------------------- durations


def held_notes_score(program: int = 0, velocity: int = 90, metre: tuple[int, int] = (4, 4)) -> Score:
    """Chords on every beat over a 24-beat organ point, then a final chord held 16 beats: notes
    longer than the 12 beats a general-purpose tokenizer keeps."""
    tpq = 480
    beat = tpq * 4 // metre[1]
    score = Score(tpq)
    score.tempos.append(Tempo(0, 80.0))
    score.time_signatures.append(TimeSignature(0, *metre))
    track = Track(name="organ", program=program)
    track.notes.append(Note(0, 24 * beat, 36, velocity))
    for index in range(24):
        for pitch in (60, 64, 67):
            track.notes.append(Note(index * beat, beat, pitch + index % 3, velocity))
    for pitch in (48, 55, 60, 64):
        track.notes.append(Note(24 * beat, 16 * beat, pitch, velocity))
    score.tracks.append(track)
    return score


def _duration_bins(tokenizer, denominator: int) -> list[Fraction]:
    """The tokenizer's Duration values in quarter notes, for a metre with this denominator
    (miditok counts durations in the metre's beats)."""
    beats = sorted({Fraction(beat) + Fraction(position, resolution)
                    for beat, position, resolution in tokenizer.durations})
    return [value * 4 / denominator for value in beats]


def _bins_around(bins: list[Fraction], value: Fraction) -> set[Fraction]:
    """The bins on either side of `value`: where rounding to the nearest bin may put it. Past
    the longest bin there is none: such a note is cut, not rounded."""
    index = bisect.bisect_left(bins, value)
    if index == len(bins):
        return set()
    if bins[index] == value or index == 0:
        return {bins[index]}
    return {bins[index - 1], bins[index]}


def notes_kept_with_durations(codec, score: Score) -> tuple[int, int, list[tuple]]:
    """(notes that come back from decode(encode(score)) with program, pitch, onset and duration,
    notes in the score, the lost ones as (program, pitch, onset, duration) in quarter notes).

    Judged after the tokenizer's own quantisation, but not after its clipping: the onset may
    move to the nearest step of the tokenizer's grid, the duration to one of the two Duration
    values around it; a note longer than the longest Duration value is lost.
    """
    tokenizer = codec.music_tokenizer
    steps = tokenizer.preprocess_score(score.copy()).ticks_per_quarter  # onset grid, per quarter
    decoded = codec.decode(codec.encode(score))
    found = defaultdict(list)
    for track in decoded.tracks:
        program = -1 if track.is_drum else track.program
        for note in track.notes:
            key = (program, note.pitch, Fraction(note.time, decoded.ticks_per_quarter))
            found[key].append(Fraction(note.duration, decoded.ticks_per_quarter))
    denominators = {signature.denominator for signature in score.time_signatures} or {4}
    bins = [_duration_bins(tokenizer, denominator) for denominator in denominators]
    tpq = score.ticks_per_quarter
    kept, lost = 0, []
    for track in score.tracks:
        program = -1 if track.is_drum else track.program
        for note in track.notes:
            exact = Fraction(note.time, tpq) * steps
            onsets = [Fraction(step, steps) for step in {math.floor(exact), math.ceil(exact)}
                      if abs(step - exact) <= Fraction(1, 2)]
            duration = Fraction(note.duration, tpq)
            allowed = set().union(*(_bins_around(values, duration) for values in bins))
            for onset in onsets:
                durations = found.get((program, note.pitch, onset), [])
                match = next((value for value in durations if value in allowed), None)
                if match is not None:
                    durations.remove(match)
                    kept += 1
                    break
            else:
                lost.append((program, note.pitch, float(exact / steps), float(duration)))
    return kept, score.note_num(), lost


@pytest.fixture(scope="module")
def duration_corpora(bach_midi_files, band_midi_files, tmp_path_factory) -> dict[str, list]:
    """Two corpora with their held pieces: the chorales (constant velocity, one program) and real
    multi-track files (music21's test files, the band scores) plus an organ piece."""
    folder = tmp_path_factory.mktemp("held")
    chorale = folder / "held-chorale.mid"
    held_notes_score(program=0, velocity=90).dump_midi(chorale)
    organ = folder / "held-organ.mid"
    held_notes_score(program=19, velocity=70).dump_midi(organ)
    return {"chorales": list(bach_midi_files) + [chorale],
            "multi-track": list(MUSIC21_TEST_MIDI) + list(band_midi_files) + [organ]}


@pytest.mark.parametrize("bpe", [0, 1500], ids=["no-bpe", "bpe"])
@pytest.mark.parametrize("corpus", ["chorales", "multi-track"])
def test_corpus_codec_keeps_pitch_onset_and_duration_of_long_notes_too(
        corpus, bpe, duration_corpora, tiny_lm_tokenizer):
    paths = duration_corpora[corpus]
    scores = [Score(str(path)) for path in paths]
    profile = measure_corpus(scores)
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, corpus=profile, layout="bars" if bpe else "onsets")
    if bpe:
        codec.train_bpe(paths, bpe)
        assert codec.music_tokenizer.is_trained
    kept = total = 0
    lost = []
    for score in scores:
        score_kept, score_total, score_lost = notes_kept_with_durations(codec, score)
        kept, total, lost = kept + score_kept, total + score_total, lost + score_lost
    assert kept / total >= 0.995, (kept, total, lost[:10])
    # Every note longer than the general-purpose range is among the kept ones.
    long_notes = [(track.program, note.pitch) for score in scores for track in score.tracks
                  for note in track.notes if note.duration / score.ticks_per_quarter > LONG_DURATION_BEATS]
    assert len(long_notes) >= 5
    assert not [note for note in lost if note[3] > LONG_DURATION_BEATS], lost


def test_without_a_profile_long_notes_are_cut(tiny_lm_tokenizer):
    # What the profile fixes: the general-purpose codec stops at 12 beats.
    score = held_notes_score()
    kept, total, lost = notes_kept_with_durations(MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer), score)
    assert sorted(duration for *_, duration in lost) == [16.0] * 4 + [24.0]
    profiled = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, corpus=measure_corpus([score]))
    assert notes_kept_with_durations(profiled, score)[2] == []


@pytest.mark.parametrize("metre", [(6, 8), (3, 8), (12, 8)])
def test_long_notes_keep_their_length_in_eighth_note_metres(tiny_lm_tokenizer, metre):
    # miditok counts Duration in the metre's beats (eighths here); the profile's longest note
    # must cover it in those beats, not in quarter notes.
    score = held_notes_score(metre=metre)
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, corpus=measure_corpus([score]))
    kept, total, lost = notes_kept_with_durations(codec, score)
    assert not lost, lost


def test_corpus_grid_keeps_the_corpus_onsets_in_half_note_metres(tiny_lm_tokenizer):
    # 32nd notes in 2/2: a grid of 8 steps per quarter is 16 per beat when the metre's beat
    # (miditok's unit) is a half note.
    tpq = 480
    score = Score(tpq)
    score.time_signatures.append(TimeSignature(0, 2, 2))
    track = Track(program=0)
    for index in range(64):
        track.notes.append(Note(index * tpq // 8, tpq // 8, 60 + index % 12, 80))
    score.tracks.append(track)
    profile = measure_corpus([score])
    assert profile.positions_per_beat == 16
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, corpus=profile)
    decoded = codec.decode(codec.encode(score))
    onsets = sorted(note.time / decoded.ticks_per_quarter for track in decoded.tracks for note in track.notes)
    assert onsets == [index / 8 for index in range(64)]


def test_constant_velocity_corpus_has_no_velocity_tokens_and_fewer_tokens_per_note(
        tiny_lm_tokenizer, bach_midi_files):
    scores = [Score(str(path)) for path in bach_midi_files]
    profile = measure_corpus(scores)
    assert profile.constant_velocity and profile.program_list == [0]
    # One stream (no parts), so the comparison is of the token settings alone.
    adaptive = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, corpus=profile, captions=False, parts=False)
    general = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, captions=False, parts=False)
    assert not [token for token in adaptive.music_tokenizer.vocab if token.startswith("Velocity_")]
    assert [token for token in general.music_tokenizer.vocab if token.startswith("Velocity_")]
    notes = sum(score.note_num() for score in scores)

    def tokens_per_note(codec):
        return sum(len(codec.encode(score)) - 2 for score in scores) / notes

    # Measured on these 40 chorales: 2.44 against 4.43 (no Velocity, one Program per change).
    assert tokens_per_note(adaptive) < 0.6 * tokens_per_note(general)
    # The dropped velocity comes back on decoding.
    decoded = adaptive.decode(adaptive.encode(scores[0]))
    assert decoded.note_num() > 0
    assert {note.velocity for track in decoded.tracks for note in track.notes} == set(profile.velocities)


def test_each_music_token_has_its_own_lm_row(tiny_lm_tokenizer, tmp_path):
    # miditok's BPE learns "word start + Bar_None" as its own id, standing for the same base
    # token as Bar_None: both must not become the same LM row twice (the sampler would give
    # that row double mass, which training never does).
    paths = []
    for seed in range(10):
        paths.append(tmp_path / f"band{seed}.mid")
        make_band_score(seed, bars=6).dump_midi(paths[-1])
    profile = measure_corpus([Score(str(path)) for path in paths])
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, corpus=profile, layout="bars")
    codec.train_bpe(paths, 600)
    assert len(set(codec.music_lm_ids)) == len(codec.music_lm_ids)
    assert codec.decode(codec.encode(paths[0])).note_num() > 0


def test_band_score_keeps_drums_programs_and_tempo_changes(tiny_lm_tokenizer):
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer)
    score = make_band_score(seed=7)
    decoded = codec.decode(codec.encode(score))
    assert {(track.program, track.is_drum) for track in decoded.tracks} == {
        (track.program, track.is_drum) for track in score.tracks}
    assert len(decoded.tempos) >= 2
    assert [(ts.numerator, ts.denominator) for ts in decoded.time_signatures][:2] == [(4, 4), (3, 4)]


def test_music_bpe_compresses_and_still_round_trips(tiny_lm_tokenizer, bach_midi_files):
    train, held_out = bach_midi_files[:30], bach_midi_files[30:]
    plain = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, captions=False, layout="bars")
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, captions=False, layout="bars")
    codec.train_bpe(train, vocab_size=2000)

    def tokens_per_note(codec_):
        tokens = sum(len(codec_.encode(path)) - 2 for path in held_out)
        return tokens / sum(Score(str(path)).note_num() for path in held_out)

    assert tokens_per_note(plain) > 4.0
    assert tokens_per_note(codec) < tokens_per_note(plain) / 3
    assert kept_share(codec, held_out) >= 0.99
    # Each merge is one readable LM token made of its parts' names.
    merged = [parts for parts in codec.music_token_parts if len(parts) > 1]
    assert merged
    name = "<" + "+".join(merged[0]) + ">"
    assert codec.lm_tokenizer.convert_tokens_to_ids(name) in codec.music_lm_ids


def test_bars_never_split_a_bpe_token(tiny_lm_tokenizer, bach_midi_files):
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, captions=False, layout="bars")
    codec.train_bpe(bach_midi_files[:20], vocab_size=1500)
    bars = codec.encode_bars(bach_midi_files[25])
    assert len(bars) > 4
    for bar in bars:
        tokens = codec.music_tokens([codec.music_start_id, *bar])
        # Part 0 opens each bar; every part's bar is its own bar line and what follows it.
        assert tokens[:2] == ["Part_0", "Bar_None"]
        part_starts = [index for index, token in enumerate(tokens) if token.startswith("Part_")]
        assert [tokens[index + 1] for index in part_starts] == ["Bar_None"] * len(part_starts)
        assert tokens.count("Bar_None") == len(part_starts)
        # No merged token holds a part token: each is one LM id of its own.
        assert sum(codec.part_of_lm_id(lm_id) is not None for lm_id in bar) == len(part_starts)


def test_text_render_round_trips_through_the_lm_tokenizer(tiny_lm_tokenizer, bach_midi_files):
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, render="text", captions=False)
    added = len(tiny_lm_tokenizer)
    assert kept_share(codec, bach_midi_files[:3]) >= 0.99
    ids = codec.encode(bach_midi_files[0])
    tokens_codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, captions=False)
    # The plain-text baseline costs several LM tokens per music token.
    assert len(ids) > 2 * len(tokens_codec.encode(bach_midi_files[0]))
    assert added == len(tiny_lm_tokenizer) - len(tokens_codec.music_lm_ids) + 1


def test_caption_comes_first_and_carries_metadata(tiny_lm_tokenizer, bach_midi_files):
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer)
    metadata = {"composer": "J.S. Bach", "title": "BWV 1.6", "key": "F major"}
    ids = codec.encode(bach_midi_files[0], metadata)
    start = ids.index(codec.music_start_id)
    caption = codec.lm_tokenizer.decode(ids[:start])
    assert "Composer: J.S. Bach" in caption and "Key: F major" in caption
    assert "Time signature: 4/4" in caption and "Instruments:" in caption
    assert ids[-1] == codec.music_end_id
    # Decoding ignores the caption.
    assert codec.decode(ids).note_num() == codec.decode(ids[start:]).note_num() > 0


def test_new_tokens_have_readable_names_and_descriptions(tiny_lm_tokenizer):
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer)
    lm_id = codec.lm_tokenizer.convert_tokens_to_ids("<Pitch_60>")
    descriptions = codec.new_token_descriptions()
    assert descriptions[lm_id] == "note C4"
    assert descriptions[codec.lm_tokenizer.convert_tokens_to_ids("<Program_-1>")] == "drums"
    assert set(descriptions) == set(codec.music_lm_ids) | {codec.music_start_id, codec.gap_id, codec.fill_id}
    assert descriptions[codec.part_lm_id(1)] == "part number 2 voice plays"  # the onsets layout
    bars = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, layout="bars")
    assert bars.new_token_descriptions()[bars.part_lm_id(1)] == "new bar of part number 2 voice"
    assert codec.lm_tokenizer.convert_tokens_to_ids(MUSIC_START) == codec.music_start_id
    assert codec.lm_tokenizer.convert_tokens_to_ids(MUSIC_END) == codec.music_end_id


def test_save_and_load_give_the_same_ids(tmp_path, tiny_lm_tokenizer, bach_midi_files):
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, layout="bars")
    codec.train_bpe(bach_midi_files[:20], vocab_size=1200)
    codec.save_pretrained(tmp_path / "codec")
    loaded = MusicCodec.from_pretrained(tmp_path / "codec")
    path = bach_midi_files[30]
    assert loaded.encode(path) == codec.encode(path)
    assert loaded.music_lm_ids == codec.music_lm_ids
    config = json.loads((tmp_path / "codec" / CODEC_CONFIG_FILE).read_text())
    assert config["miditok_version"] and config["midillm_version"]


@pytest.mark.parametrize("change, message", [
    ({"format_version": 99}, "upgrade midillm"),
    ({"miditok_version": "1.2.0"}, "install miditok==1.2.0"),
])
def test_incompatible_codec_fails_with_a_clear_message(tmp_path, tiny_lm_tokenizer, change, message):
    MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer).save_pretrained(tmp_path)
    config_file = tmp_path / CODEC_CONFIG_FILE
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **change}))
    with pytest.raises(CodecVersionError, match=message):
        MusicCodec.from_pretrained(tmp_path)


def test_missing_codec_folder_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="no midillm codec"):
        MusicCodec.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------- the onsets layout


def _part_notes(score: Score) -> list[list[tuple[int, int, int]]]:
    """Each played track's notes as (onset, pitch, duration) in ticks, sorted."""
    return [sorted((note.time, note.pitch, note.duration) for note in track.notes)
            for track in score.tracks if track.note_num()]


@pytest.mark.parametrize("onset_time", ["shift", "position"])
def test_onsets_layout_keeps_every_note_in_its_part(tiny_lm_tokenizer, bach_midi_files, band_midi_files, onset_time):
    """Pitch, onset, duration and part of every note come back, chorales and band files alike,
    whether an onset's time is a shift from the last onset or a position in the bar."""
    from midillm.tokenization.profile import measure_corpus

    for paths in (bach_midi_files[:12], band_midi_files):
        scores = [Score(str(path)) for path in paths]
        codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, corpus=measure_corpus(scores), onset_time=onset_time)
        codec.train_compounds(paths[: len(paths) // 2])  # half the pieces: the rest lean on the fallback
        assert codec.layout == "onsets" and codec.compounds
        for score in scores:
            # Each part as the tokenizer quantises it on its own (miditok's own preprocessing
            # merges the tracks of one program, which parts keep apart).
            reference = [_part_notes(codec.music_tokenizer.preprocess_score(part))[0] for part in part_scores(score)]
            decoded = codec.decode(codec.encode(score))
            assert _part_notes(decoded.resample(codec.music_tokenizer.time_division)) == reference


def test_note_compounds_are_kept_only_where_they_write_most_notes_whole(tiny_lm_tokenizer, bach_midi_files,
                                                                      band_midi_files):
    """`--compound-coverage 0.9`: chorales combine part, pitch and length few ways, the compounds
    write nearly every note as one token and are kept. The band files combine them (and
    velocities) too many ways: none are kept, each field is its own token, and every note still
    comes back. The default (0) keeps them always."""
    from midillm.tokenization.codec import DEFAULT_COMPOUND_COVERAGE
    from midillm.tokenization.profile import measure_corpus

    threshold = 0.9
    kept = {}
    for name, paths in (("chorales", bach_midi_files[:12]), ("band", band_midi_files)):
        scores = [Score(str(path)) for path in paths]
        codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, corpus=measure_corpus(scores))
        coverage = codec.train_compounds(paths, min_coverage=threshold)
        kept[name] = (coverage >= threshold, bool(codec.compounds))
        if name == "band":
            for score in scores:
                reference = [_part_notes(codec.music_tokenizer.preprocess_score(part))[0] for part in part_scores(score)]
                ids = codec.encode(score)
                assert all(len(codec.music_tokens([lm_id])) == 1 for lm_id in codec.music_part(ids))
                decoded = codec.decode(ids)
                assert _part_notes(decoded.resample(codec.music_tokenizer.time_division)) == reference
    assert kept == {"chorales": (True, True), "band": (False, False)}
    band = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, corpus=measure_corpus(scores))
    band.train_compounds(band_midi_files, min_coverage=DEFAULT_COMPOUND_COVERAGE)
    assert band.compounds  # the default keeps them


def test_onsets_layout_writes_a_chord_together_and_a_note_as_one_position(tiny_lm_tokenizer, bach_midi_files):
    from midillm.tokenization.profile import measure_corpus

    train, held_out = bach_midi_files[:30], bach_midi_files[30:]
    profile = measure_corpus([Score(str(path)) for path in train])
    onsets = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, corpus=profile, captions=False)
    onsets.train_compounds(train)
    bars = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, corpus=profile, captions=False, layout="bars")

    def positions_per_note(codec) -> float:
        positions = sum(len(codec.encode(path)) - 2 for path in held_out)
        return positions / sum(Score(str(path)).note_num() for path in held_out)

    # Held-out chorales: about one position per note, an onset's time sharing its first note's
    # compound (compounds learned from 30 chorales here; 1.1 from the whole train split),
    # against 3.6 bar by bar.
    assert positions_per_note(onsets) < 1.45 and positions_per_note(bars) > 3.0
    # Each onset: its Position (with the first note where a compound holds both), then the
    # notes, parts rising; a four-voice chord is four positions, each a whole note (part, pitch,
    # and its duration unless it is held until the part's next note).
    onsets_of_piece, current = [], None
    for lm_id in onsets.encode(held_out[0])[1:-1]:
        unit = onsets.music_token_parts[onsets.music_id_of_lm_id(lm_id)]
        if unit[0].startswith(("Position_", "Shift_", "Bar_")):
            current = []
            onsets_of_piece.append(current)
        part = next((token for token in unit if token.startswith("Part_")), None)
        if current is not None and part is not None:
            current.append(int(part.split("_")[1]))
    for numbers in onsets_of_piece:
        assert numbers == sorted(set(numbers))
    assert len([onset for onset in onsets_of_piece if len(onset) >= 4]) > len(onsets_of_piece) / 4
    # Most held-out notes are one whole compound; the rest (a part, pitch and duration the 30
    # train chorales never had together) are written in two or three tokens.
    units = [onsets.music_token_parts[onsets.music_id_of_lm_id(lm_id)] for path in held_out
             for lm_id in onsets.encode(path)[1:-1]]
    whole = [unit for unit in units if any(token.startswith("Part_") for token in unit)
             and any(token.startswith("Pitch_") for token in unit)]
    assert len(whole) > 0.75 * sum(Score(str(path)).note_num() for path in held_out)
    # Most onsets cost no position of their own: their time travels with their first note.
    with_first_note = [unit for unit in units if unit[0].startswith(("Position_", "Shift_")) and len(unit) > 1]
    alone = [unit for unit in units if unit == [unit[0]] and unit[0].startswith(("Position_", "Shift_"))]
    assert len(with_first_note) > 2 * len(alone)


def test_onsets_codec_saves_its_layout_and_compounds(tmp_path, tiny_lm_tokenizer, bach_midi_files):
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer)
    codec.train_compounds(bach_midi_files[:10])
    codec.save_pretrained(tmp_path / "codec")
    loaded = MusicCodec.from_pretrained(tmp_path / "codec")
    assert loaded.layout == "onsets" and loaded.compounds == codec.compounds and loaded.onset_time == "shift"
    assert loaded.encode(bach_midi_files[12]) == codec.encode(bach_midi_files[12])
    # A codec saved before shifts (format 3: no "onset_time") reads its Positions as positions.
    config = json.loads((tmp_path / "codec" / "midillm_codec.json").read_text())
    MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, onset_time="position").save_pretrained(tmp_path / "positions")
    config = json.loads((tmp_path / "positions" / "midillm_codec.json").read_text())
    del config["onset_time"]
    config["format_version"] = 3
    (tmp_path / "positions" / "midillm_codec.json").write_text(json.dumps(config))
    assert MusicCodec.from_pretrained(tmp_path / "positions").onset_time == "position"
    # A codec saved before layouts existed (format 1: no "layout" key) reads as the bars layout it was.
    MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, layout="bars").save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "midillm_codec.json").read_text())
    del config["layout"], config["compounds"]
    config["format_version"] = 1
    (tmp_path / "old" / "midillm_codec.json").write_text(json.dumps(config))
    old = MusicCodec.from_pretrained(tmp_path / "old")
    assert old.layout == "bars" and old.decode(old.encode(bach_midi_files[12])).note_num() > 0


def test_profile_says_whether_the_corpus_avoids_parallels(bach_midi_files):
    """Strict voice leading is the default where the corpus's own parts avoid parallel fifths
    and octaves: Bach's chorales do; the same chorales with their outer voices doubled in octaves
    (as a band doubles its bass and lead) do not."""
    from midillm.tokenization.profile import CorpusProfile

    scores = [Score(str(path)) for path in bach_midi_files[:12]]
    chorales = measure_corpus(scores)
    doubled = []
    for score in scores:
        score = score.copy()
        for track in [score.tracks[0], score.tracks[-1]]:
            octave = track.copy()
            octave.notes = [Note(note.time, note.duration, note.pitch + (12 if track is score.tracks[0] else -12),
                                 note.velocity) for note in track.notes]
            score.tracks.append(octave)
        doubled.append(score)
    doubled_scores, doubled = doubled, measure_corpus(doubled)
    assert 0 < chorales.parallels_per_move < 0.05 and chorales.avoids_parallels
    assert doubled.parallels_per_move > 0.1 and not doubled.avoids_parallels
    # Measured for each count of parts too ([pieces, moves, parallels]): the four voices avoid
    # them, the six parts doubling them do not.
    assert chorales.avoids_parallels_with(4) and not doubled.avoids_parallels_with(6)
    four = [index for index, score in enumerate(scores) if len(score.tracks) == 4]
    mixed = measure_corpus([scores[four[0]], doubled_scores[four[1]]]).parallels_by_parts
    assert set(mixed) == {4, 6} and mixed[4][0] == mixed[6][0] == 1
    assert mixed[4][2] < 0.05 * mixed[4][1] and mixed[6][2] > 0.1 * mixed[6][1]
    # One part has nothing to move in parallel with; a profile saved before knows nothing.
    melody = Score(str(bach_midi_files[0]))
    melody.tracks = melody.tracks[:1]
    assert measure_corpus([melody]).parallels_per_move is None and not measure_corpus([melody]).avoids_parallels
    old = chorales.to_dict()
    del old["parallels_per_move"]
    del old["parallels_by_parts"]
    assert CorpusProfile.from_dict(old).parallels_per_move is None
    assert not CorpusProfile.from_dict(old).avoids_parallels_with(4)
    assert CorpusProfile.from_dict(chorales.to_dict()).avoids_parallels
    # Saved as JSON (its keys strings) and read back, the counts are numbers again.
    assert CorpusProfile.from_dict(json.loads(json.dumps(doubled.to_dict()))).parallels_by_parts == \
        doubled.parallels_by_parts


def test_an_onsets_time_is_a_shift_from_the_bars_last_onset(tiny_lm_tokenizer):
    """Quarter notes in 4/4: each bar opens with `Shift_0` (its first onset, on the bar line),
    then every beat is the same token, one beat on; with positions each beat has its own token."""
    score = Score(480)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    track = Track(program=0)
    track.notes.extend([Note(beat * 480, 480, 60 + beat % 5, 90) for beat in range(8)])
    score.tracks.append(track)
    times = {}
    for onset_time in ("shift", "position"):
        codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, onset_time=onset_time)
        tokens = codec.music_tokens(codec.encode(score))
        times[onset_time] = [token for token in tokens if token.startswith(("Shift_", "Position_"))]
        assert codec.decode(codec.encode(score)).note_num() == 8
    beat = codec.music_tokenizer.config.max_num_pos_per_beat
    assert times["shift"] == [f"Shift_{0 if index % 4 == 0 else beat}" for index in range(8)]
    assert times["position"] == [f"Position_{beat * (index % 4)}" for index in range(8)]
