"""Evaluation: each metric on hand-made scores with known answers, then `midillm eval` end to end."""

from __future__ import annotations

import dataclasses

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from symusic import Note, Score, TimeSignature, Track

from midillm.eval import compare, features, harmony, listener, memorization, two_sample
from midillm.tokenization import voice_leading
from midillm.eval.sanity import bars_written, sample_sanity, sanity_summary
from midillm.eval.validity import token_errors_by_type, validity_summary
from midillm.tokenization.profile import CorpusProfile, excerpts, measure_corpus

TPQ = 480


def make_score(notes=(), drums=(), signature=(4, 4)) -> Score:
    """Notes as (onset, duration, pitch) in beats; `drums` the same on a drum track."""
    score = Score(TPQ)
    if signature:
        score.time_signatures.append(TimeSignature(0, *signature))
    for entries, is_drum in ((notes, False), (drums, True)):
        if entries:
            track = Track(program=0, is_drum=is_drum)
            for onset, duration, pitch in entries:
                track.notes.append(Note(int(onset * TPQ), int(duration * TPQ), pitch, 80))
            score.tracks.append(track)
    return score


SCALE = [(beat, 1, pitch) for beat, pitch in enumerate([60, 62, 64, 65, 67, 69, 71, 72])]


# ----------------------------------------------------------------------------- features


def test_features_of_a_c_major_scale_in_quarters():
    got = features.piece_features(make_score(SCALE))
    assert got["n_notes"] == 8
    assert got["pitch_range"] == 12
    assert got["n_pitches_used"] == 8
    assert got["n_pitch_classes_used"] == 7
    # Pitch classes: C twice, six others once -> -(1/4 log2 1/4 + 6/8 log2 1/8) = 0.5 + 2.25.
    assert got["pitch_class_entropy"] == pytest.approx(2.75)
    assert got["scale_consistency"] == 1.0
    assert got["polyphony"] == 1.0
    assert got["polyphony_rate"] == 0.0
    assert got["empty_beat_rate"] == 0.0
    assert got["groove_consistency"] == 1.0  # two bars of four quarters: identical onset patterns
    assert got["note_density"] == 1.0
    assert got["mean_ioi"] == 1.0
    assert got["note_length_histogram"][2] == 1.0 and sum(got["note_length_histogram"]) == 1.0


def test_chromatic_scale_entropy_and_scale_consistency():
    chromatic = make_score([(i * 0.5, 0.5, 60 + i) for i in range(12)])
    assert features.pitch_class_entropy(chromatic) == pytest.approx(math.log2(12))
    assert features.scale_consistency(chromatic) == pytest.approx(7 / 12)
    assert features.note_length_histogram(chromatic)[3] == 1.0  # all 8th notes


def test_polyphony_empty_beats_and_groove_on_a_chord_a_rest_and_a_note():
    # Beats 0-4: C-E-G; beats 4-6: silence; beats 6-8: one C.
    score = make_score([(0, 4, 60), (0, 4, 64), (0, 4, 67), (6, 2, 72)])
    assert features.polyphony(score) == pytest.approx((3 * 4 + 1 * 2) / 6)
    assert features.polyphony_rate(score) == pytest.approx(4 / 8)  # > 1 pitch for 4 of 8 beats
    assert features.polyphony_rate(score, threshold=3) == 0.0
    assert features.empty_beat_rate(score) == pytest.approx(2 / 8)
    assert features.mean_inter_onset_interval(score) == 6.0
    assert features.note_density(score) == pytest.approx(4 / 8)
    # Bar 1 onsets at step 0 only, bar 2 at beat 2 only (step 48 of 96): two differing steps.
    assert features.groove_consistency(score) == pytest.approx(1 - 2 / 96)


def test_groove_follows_the_time_signature():
    # 3/4: bars of 72 steps; onsets on every beat of two bars, the second bar missing beat 3.
    score = make_score([(0, 1, 60), (1, 1, 62), (2, 1, 64), (3, 1, 65), (4, 2, 67)], signature=(3, 4))
    assert features.groove_consistency(score) == pytest.approx(1 - 1 / 72)


def test_a_score_without_notes_gives_zero_counts_and_nan_elsewhere():
    got = features.piece_features(Score(TPQ))
    assert got["n_notes"] == 0 and got["n_pitches_used"] == 0 and got["n_pitch_classes_used"] == 0
    for name in ("pitch_range", "pitch_class_entropy", "scale_consistency", "polyphony", "polyphony_rate",
                 "empty_beat_rate", "groove_consistency", "note_density", "mean_ioi"):
        assert math.isnan(got[name]), name
    assert all(math.isnan(share) for share in got["note_length_histogram"])


def test_drums_only_has_rhythm_features_but_no_pitch_features():
    drums = [(beat * 0.5, 0.5, 36 + (beat % 2) * 2) for beat in range(16)]  # 8 beats of 8ths
    got = features.piece_features(make_score(drums=drums))
    assert got["n_notes"] == 16 and got["n_pitches_used"] == 0
    for name in ("pitch_range", "pitch_class_entropy", "scale_consistency", "polyphony", "polyphony_rate"):
        assert math.isnan(got[name]), name
    assert got["note_density"] == 2.0
    assert got["mean_ioi"] == 0.5
    assert got["empty_beat_rate"] == 0.0
    assert got["groove_consistency"] == 1.0
    # Drums next to a melody: pitch features see the melody only.
    mixed = make_score(SCALE, drums=drums)
    assert features.pitch_range(mixed) == 12 and features.n_pitches_used(mixed) == 8


def test_shorter_than_two_bars_has_no_groove_consistency():
    assert math.isnan(features.groove_consistency(make_score(SCALE[:7])))  # 7 beats of 4/4
    assert features.groove_consistency(make_score(SCALE)) == 1.0  # exactly 8 beats
    assert math.isnan(features.groove_consistency(make_score(SCALE[:5], signature=(3, 4))))


def test_polyphony_counts_notes_so_duplicates_show():
    score = make_score(SCALE[:4])
    score.tracks.append(score.tracks[0].copy())  # every note doubled on a second track
    assert features.polyphony(score) == 2.0
    assert features.polyphony_rate(score) == 1.0
    assert features.piece_features(score)["n_notes"] == 8
    # A cluster of one pitch struck three times at once is three notes, not one.
    cluster = make_score([(0, 1, 60)] * 3 + [(1, 1, 62)])
    assert features.polyphony(cluster) == pytest.approx((3 + 1) / 2)


# ----------------------------------------------------------------------------- validity


@pytest.fixture(scope="module")
def remi():
    from midillm.tokenization.codec import build_music_tokenizer

    return build_music_tokenizer("REMI")


def test_token_errors_by_type(remi):
    note = ["Pitch_60", "Velocity_63", "Duration_1.0.8"]
    good = ["Bar_None", "TimeSig_4/4", "Position_0", "Tempo_121.29", "Program_0", *note, "Position_8", "Program_0", *note]
    assert token_errors_by_type(remi, good) == {"type": 0, "time": 0, "duplicate_note": 0}
    # Bar -> Velocity, then Velocity -> Position: two successions the grammar forbids.
    bad_type = ["Bar_None", "Velocity_63", "Position_0", "Program_0", *note]
    assert token_errors_by_type(remi, bad_type) == {"type": 2, "time": 0, "duplicate_note": 0}
    backwards = ["Bar_None", "TimeSig_4/4", "Position_8", "Program_0", *note, "Position_4", "Program_0", *note]
    assert token_errors_by_type(remi, backwards) == {"type": 0, "time": 1, "duplicate_note": 0}
    duplicate = ["Bar_None", "TimeSig_4/4", "Position_0", "Program_0", *note, "Program_0", *note]
    assert token_errors_by_type(remi, duplicate)["duplicate_note"] == 0  # the codec keeps duplicates
    remi.config.remove_duplicated_notes = True
    try:
        assert token_errors_by_type(remi, duplicate) == {"type": 0, "time": 0, "duplicate_note": 1}
    finally:
        remi.config.remove_duplicated_notes = False


def test_token_error_counts_add_up_to_miditok_total(remi):
    rng = random.Random(0)
    vocabulary = [token for token in remi.vocab if "_None" not in token or token == "Bar_None"]
    for remove in (False, True):
        remi.config.remove_duplicated_notes = remove
        for _ in range(50):
            tokens = [rng.choice(vocabulary) for _ in range(rng.randint(1, 60))]
            assert sum(token_errors_by_type(remi, tokens).values()) == remi._tokens_errors(tokens)
    remi.config.remove_duplicated_notes = False


def test_validity_summary_shares():
    summary = validity_summary([{"decoded": True, "notes": 5, "tokens": 10, "errors": {"type": 1, "time": 0, "duplicate_note": 0}},
                                {"decoded": True, "notes": 0, "tokens": 2, "errors": {}},
                                {"decoded": False, "notes": 0}])
    assert summary["decoded_share"] == pytest.approx(2 / 3) and summary["valid_share"] == pytest.approx(1 / 3)
    assert summary["token_errors"]["type"] == 1 and summary["token_error_rate"] == pytest.approx(1 / 12)


# ----------------------------------------------------------------------------- sanity

SATB = ((60, 79), (55, 74), (48, 67), (36, 60))  # soprano, alto, tenor, bass ranges
CHORALE_PROFILE = CorpusProfile(pieces=10, programs={0: 10}, pitch_ranges={0: [36, 84]},
                                max_notes_per_onset=4, mean_notes_per_onset=3.9, max_programs_per_piece=1,
                                max_gap_beats=2.0, time_signatures={"4/4": 10}, max_unison=2)


def chorale(seed: int = 0, bars: int = 4, program: int = 0) -> Score:
    """A four-voice texture like a chorale: one track per voice, a chord on every beat, the
    final chord held for two beats."""
    rng = random.Random(seed)
    score = Score(TPQ)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    beats = 4 * bars - 1
    for low, high in SATB:
        track = Track(program=program)
        for beat in range(beats):
            track.notes.append(Note(beat * TPQ, TPQ if beat < beats - 1 else 2 * TPQ, rng.randint(low, high), 80))
        score.tracks.append(track)
    return score


def reasons(score, profile=CHORALE_PROFILE, **options) -> list[str]:
    return sample_sanity(score, profile, **options)["reasons"]


def test_a_four_voice_chorale_texture_is_sane():
    got = sample_sanity(chorale(), CHORALE_PROFILE)
    assert got["sane"] and got["reasons"] == []
    assert got["notes"] == 4 * 15 and got["onsets"] == 15 and got["bars"] == 4
    assert got["max_notes_per_onset"] == 4 and got["mean_notes_per_onset"] == 4.0
    assert got["duplicate_notes"] == 0 and got["programs"] == [0] and got["foreign_programs"] == []
    assert got["longest_gap_beats"] == 1.0 and got["first_onset_beats"] == 0.0
    assert got["ended"] is None  # not generated: its ending is unknown
    # The corpus's own pieces are sane against the profile measured on them.
    pieces = [chorale(seed) for seed in range(6)]
    profile = measure_corpus(pieces)
    assert profile.max_notes_per_onset == 4 and profile.max_gap_beats == 1.0
    assert sanity_summary([sample_sanity(piece, profile) for piece in pieces])["sane_share"] == 1.0


def test_a_twenty_note_cluster_is_a_crowded_onset():
    score = chorale()
    cluster = Track(program=0)
    for pitch in range(40, 60):
        cluster.notes.append(Note(2 * TPQ, TPQ, pitch, 80))
    score.tracks.append(cluster)
    got = sample_sanity(score, CHORALE_PROFILE)
    assert got["reasons"] == ["crowded_onset"] and got["max_notes_per_onset"] == 24
    # The cluster alone, as the broken samples were: one onset, time never moves.
    alone = Score(TPQ)
    alone.tracks.append(cluster)
    assert reasons(alone) == ["one_onset", "crowded_onset"]
    assert reasons(Score(TPQ)) == ["no_notes"]


def test_a_samples_most_crowded_onset_is_judged_as_the_corpus_excerpts_are():
    # A corpus whose every 8-bar excerpt holds one doubled chord (8 notes) among its 32 onsets:
    # rare among onsets (under 1%: the per-onset cap stays 4), common among excerpts.
    pieces = []
    for seed in range(4):
        piece = chorale(seed, bars=400)
        doubling = Track(program=0)
        for window, _ in excerpts(piece, 8, 8):
            doubling.notes.extend(Note(window * 8 * 4 * TPQ, TPQ, pitch, 80) for pitch in (40, 50, 62, 70))
        piece.tracks.append(doubling)
        pieces.append(piece)
    profile = measure_corpus(pieces)
    assert profile.max_notes_per_onset == 4 and profile.excerpt_max_notes_per_onset == 8
    # The corpus's own excerpts pass, as a sample with one doubled chord does...
    assert all(sample_sanity(excerpt, profile)["sane"] for _, excerpt in excerpts(pieces[0], 8, 8))
    sample = chorale(seed=9, bars=8)
    sample.tracks.append(Track(program=0))
    sample.tracks[-1].notes.extend(Note(4 * TPQ, TPQ, pitch, 80) for pitch in (40, 50, 62, 70))
    assert sample_sanity(sample, profile)["reasons"] == []
    # ...but not one chord more crowded than any of the corpus's excerpts has.
    sample.tracks[-1].notes.append(Note(4 * TPQ, TPQ, 45, 80))
    assert sample_sanity(sample, profile)["reasons"] == ["crowded_onset"]
    # A profile measured before excerpts' crowding was: every onset judged by the per-onset cap.
    older = dataclasses.replace(profile, excerpt_max_notes_per_onset=0)
    sample.tracks[-1].notes.pop()
    assert sample_sanity(sample, older)["reasons"] == ["crowded_onset"]


def test_notes_struck_more_often_than_the_corpus_unisons_are_duplicates():
    # The chorale profile allows two voices in unison on one program (as the chorales do).
    unison = chorale(seed=3)
    for voice in (1, 2):
        unison.tracks[voice].notes[5] = Note(unison.tracks[0].notes[5].time, TPQ, 64, 80)
    unison.tracks[0].notes[5] = Note(unison.tracks[0].notes[5].time, TPQ, 72, 80)
    assert reasons(unison) == []
    # A third strike of the same key at that onset is a duplicate.
    tripled = chorale(seed=3)
    time = tripled.tracks[0].notes[5].time
    for voice in (0, 1, 2):
        tripled.tracks[voice].notes[5] = Note(time, TPQ, 64, 80)
    got = sample_sanity(tripled, CHORALE_PROFILE)
    assert got["reasons"] == ["duplicate_notes"] and got["duplicate_notes"] == 1
    # Without unisons in the corpus, the second strike is already one.
    pair = Score(TPQ)
    for pitch in (60, 60, 55):
        pair.tracks.append(Track(program=0))
        pair.tracks[-1].notes.extend([Note(0, TPQ, pitch, 80), Note(TPQ, TPQ, pitch - 5, 80)])
    assert sample_sanity(pair, CHORALE_PROFILE)["duplicate_notes"] == 0
    assert sample_sanity(pair, dataclasses.replace(CHORALE_PROFILE, max_unison=1))["duplicate_notes"] == 2


def test_time_that_stalls_inside_the_piece_or_before_it_starts():
    score = chorale()
    for track in score.tracks:  # everything from beat 8 on moves 6 beats later: a 7-beat gap
        for index, note in enumerate(track.notes):
            if note.time >= 8 * TPQ:
                track.notes[index] = Note(note.time + 6 * TPQ, note.duration, note.pitch, note.velocity)
    got = sample_sanity(score, CHORALE_PROFILE)
    assert got["reasons"] == ["stall"] and got["longest_gap_beats"] == 7.0
    late = chorale()
    for track in late.tracks:  # nothing for the first 2.75 beats
        track.shift_time(int(2.75 * TPQ), inplace=True)
    got = sample_sanity(late, CHORALE_PROFILE)
    assert got["reasons"] == ["stall"] and got["first_onset_beats"] == 2.75


def test_a_part_stuck_on_one_pitch_longer_than_the_corpus_parts_is_not_sane():
    profile = dataclasses.replace(CHORALE_PROFILE, max_same_pitch_beats=6.0)
    assert reasons(chorale(bars=8), profile) == []
    stuck = chorale(bars=8)  # the alto repeats one pitch from beat 4 to the end (27 beats), as a stuck voice does
    alto = stuck.tracks[1]
    for index, note in enumerate(alto.notes):
        if note.time >= 4 * TPQ:
            alto.notes[index] = Note(note.time, note.duration, 62, note.velocity)
    got = sample_sanity(stuck, profile)
    assert got["reasons"] == ["stuck_part"] and got["same_pitch_beats"] == 28.0
    held = chorale(bars=8)  # one note held for 12 beats is stuck too
    bass = held.tracks[3]
    bass.notes = [note for note in bass.notes if not 4 * TPQ < note.time < 16 * TPQ]
    bass.notes[4] = Note(4 * TPQ, 12 * TPQ, 40, 80)
    assert sample_sanity(held, profile)["same_pitch_beats"] >= 12.0 and reasons(held, profile) == ["stuck_part"]
    # Silence between two notes of one pitch ends the stretch: a part that rests is not stuck.
    resting = Score(TPQ)
    resting.tracks.append(Track(program=0))
    resting.tracks[0].notes.extend([Note(0, 4 * TPQ, 60, 80), Note(8 * TPQ, 4 * TPQ, 60, 80)])
    assert sample_sanity(resting, profile)["same_pitch_beats"] == 4.0
    resting.tracks[0].notes[1] = Note(6 * TPQ, 4 * TPQ, 60, 80)  # a two-beat rest: still the same stretch
    assert sample_sanity(resting, profile)["same_pitch_beats"] == 10.0
    # Profiles measured before the limit existed (0) do not judge it; a measured corpus does.
    assert reasons(stuck) == []
    pieces = [chorale(seed, bars=8) for seed in range(6)]
    measured = measure_corpus(pieces)
    assert 1.0 <= measured.max_same_pitch_beats < 28.0
    assert "stuck_part" in sample_sanity(stuck, measured)["reasons"]


def test_instruments_and_pitches_the_corpus_never_uses():
    assert reasons(chorale(program=24)) == ["foreign_program"]  # nylon guitar for the piano
    mixed = chorale()
    mixed.tracks[3].program = 47  # timpani on the bass line: a second, foreign instrument
    got = sample_sanity(mixed, CHORALE_PROFILE)
    assert got["reasons"] == ["foreign_program", "too_many_programs"] and got["foreign_programs"] == [47]
    high = chorale()
    high.tracks[0].notes[3] = Note(3 * TPQ, TPQ, 100, 80)  # far above the corpus's piano
    got = sample_sanity(high, CHORALE_PROFILE)
    assert got["reasons"] == ["pitch_out_of_range"] and got["pitches_out_of_range"] == 1


def test_a_program_keeps_to_its_familys_range_and_a_few_stray_notes_are_allowed():
    # A band corpus plays each program in a tune or two: a program's range is its General MIDI
    # family's, pooled over the corpus's programs of that family.
    band = CorpusProfile(pitch_ranges={33: [28, 55], 35: [40, 60], 73: [72, 96], -1: [35, 81]})
    assert band.pitch_range(34) == (28, 60) and band.pitch_range(33) == (28, 60)  # the basses, pooled
    assert band.pitch_range(72) == (72, 96) and band.pitch_range(-1) == (35, 81)
    assert band.pitch_range(0) is None  # no piano in the corpus: not judged by range
    # A long piece may stray as the corpus's own do (1% of its notes), not more.
    long = chorale(bars=40)
    notes = long.tracks[0].notes
    notes[3] = Note(notes[3].time, TPQ, 100, 80)  # 1 of 636 notes above the piano's range
    got = sample_sanity(long, CHORALE_PROFILE)
    assert got["sane"] and got["pitches_out_of_range"] == 1
    for index in range(10, 80, 10):  # 8 of 636: more than 1%
        notes[index] = Note(notes[index].time, TPQ, 30, 80)
    got = sample_sanity(long, CHORALE_PROFILE)
    assert got["reasons"] == ["pitch_out_of_range"] and got["pitches_out_of_range"] == 8


def test_excerpts_are_spread_whole_bars_from_the_first_onsets_bar():
    score = Score(TPQ)
    score.time_signatures.append(TimeSignature(0, 3, 4))
    track = Track(program=0)
    for bar in range(2, 20):  # bars 2..19 of 3/4, one note on each downbeat
        track.notes.append(Note(bar * 3 * TPQ, TPQ, 40 + bar, 80))
    score.tracks.append(track)
    cut = list(excerpts(score, bars=8, count=4))
    # 18 bars from bar 2 hold two whole 8-bar windows: both taken, each moved to start at 0.
    assert [window for window, _ in cut] == [0, 1]
    assert [[note.pitch for note in excerpt.tracks[0].notes] for _, excerpt in cut] == [
        list(range(42, 50)), list(range(50, 58))]
    assert all(excerpt.tracks[0].notes[0].time == 0 and excerpt.end() <= 8 * 3 * TPQ for _, excerpt in cut)
    assert [window for window, _ in excerpts(score, bars=2, count=3)] == [0, 4, 8]  # first, middle, last


def test_held_out_pieces_far_longer_than_the_samples_are_judged_as_excerpts_of_their_length():
    from midillm.eval.evaluate import reference_excerpts

    def quarters(bars, pitch):  # a note on every beat of `bars` bars of 4/4
        return make_score([(beat, 1, pitch + beat % 7) for beat in range(4 * bars)])

    tunes, names = [quarters(40, 50), quarters(24, 60)], ["a.mid", "b.mid"]
    samples = [quarters(8, 70), quarters(9, 70), quarters(7, 70)]
    cut, cut_names, described = reference_excerpts(tunes, names, samples)
    # The samples' median is 8 bars: a 40-bar tune holds 5 windows of 8, a 24-bar one 3.
    assert described == {"bars": 8, "pieces": 2, "excerpts": 8}
    assert [bars_written(excerpt) for excerpt in cut] == [8] * 8
    assert cut_names[0] == "a.mid, 8-bar window 1" and cut_names[-1] == "b.mid, 8-bar window 3"
    assert [note.pitch for note in cut[5].tracks[0].notes][:2] == [60, 61]  # b.mid's first bar
    # At most `per_piece` excerpts a piece, spread from its first bar to its last.
    assert [name.rsplit(" ", 1)[-1] for name in reference_excerpts(tunes, names, samples, per_piece=2)[1]] == [
        "1", "5", "1", "3"]
    # Pieces under twice the samples' length (the chorales) stay whole.
    whole = reference_excerpts(tunes, names, [quarters(24, 70)])
    assert whole[0] is tunes and whole[1] is names and whole[2] is None
    assert reference_excerpts(tunes, names, [Score(TPQ)])[2] is None  # no sample with notes: nothing to match


def test_the_shuffled_control_moves_whole_bars_and_keeps_every_parts_instrument():
    from midillm.eval.evaluate import shuffle_bars

    # Six bars of 3/4: a bass (program 33) on each downbeat, a kick drum on every beat, and a
    # piano chord whose root names the bar.
    score = Score(TPQ)
    score.time_signatures.append(TimeSignature(0, 3, 4))
    bass, drums, piano = Track(program=33), Track(program=0, is_drum=True), Track(program=4)
    for bar in range(6):
        start = bar * 3 * TPQ
        bass.notes.append(Note(start, 3 * TPQ, 36 + bar, 90))
        for beat in range(3):
            drums.notes.append(Note(start + beat * TPQ, TPQ // 4, 36, 100))
        for pitch in (60 + bar, 64 + bar, 67 + bar):
            piano.notes.append(Note(start + TPQ, TPQ, pitch, 70))
    score.tracks.extend([bass, drums, piano])
    shuffled = shuffle_bars(score, random.Random(3))
    # Each part keeps its instrument and its drum flag (moved as tokens, the drums came back as
    # pitched notes on a piano).
    assert [(track.program, track.is_drum) for track in shuffled.tracks] == [(33, False), (0, True), (4, False)]
    order = [(note.time // (3 * TPQ), note.pitch - 36) for note in shuffled.tracks[0].notes]
    assert sorted(bar for bar, _ in order) == list(range(6))
    assert [old for _, old in order] != list(range(6))  # the bars moved
    for new_bar, old_bar in order:  # ... and each bar moved whole: its chord on its second beat
        chord = sorted(note.pitch for note in shuffled.tracks[2].notes if note.time == new_bar * 3 * TPQ + TPQ)
        assert chord == [60 + old_bar, 64 + old_bar, 67 + old_bar]
    assert len(shuffled.tracks[1].notes) == 18 and shuffled.end() == score.end()
    assert [note.time for note in score.tracks[0].notes] == [bar * 3 * TPQ for bar in range(6)]  # the input untouched


def test_a_roles_notes_per_beat_are_measured_where_a_sample_is_judged_on_excerpts():
    # A guitar that strums quarters through the first 8 bars of 64 and sits out the rest plays
    # 1 note a beat where it plays; over the whole tune it would read 1/8.
    score = Score(TPQ)
    drums, guitar = Track(program=0, is_drum=True), Track(program=25)
    for beat in range(64 * 4):
        drums.notes.append(Note(beat * TPQ, TPQ // 2, 42, 80))
    for beat in range(8 * 4):
        guitar.notes.append(Note(beat * TPQ, TPQ, 52 + beat % 5, 80))
    score.tracks.extend([drums, guitar])
    profile = measure_corpus([score])
    assert profile.role_notes_per_beat["Guitar"] == [1.0, 1.0]
    assert profile.role_notes_per_beat["Drums"][0] == pytest.approx(1.0, abs=0.02)
    # Its longest rest is still the whole tune's: from beat 32 to the drums' last note's end.
    assert profile.role_rest_beats["Guitar"] == 64 * 4 - 0.5 - 32
    # An 8-bar sample whose guitar strums like the tune's is within the range it was measured on.
    sample = next(excerpt for _, excerpt in excerpts(score, 8, 1))
    assert sample_sanity(sample, profile)["parts_out_of_density"] == 0

def test_ending_is_reported_and_counts_only_when_required():
    cut = {"ended": False, "new_tokens": 512, "masked_mass": 0.25}
    ended = {"ended": True, "new_tokens": 300, "masked_mass": 0.05}
    score = chorale()
    lenient = [sample_sanity(score, CHORALE_PROFILE, cut), sample_sanity(score, CHORALE_PROFILE, ended)]
    strict = [sample_sanity(score, CHORALE_PROFILE, cut, require_ending=True),
              sample_sanity(score, CHORALE_PROFILE, ended, require_ending=True)]
    assert strict[0]["reasons"] == ["no_ending"] and strict[1]["sane"]
    summary, strict_summary = sanity_summary(lenient), sanity_summary(strict)
    assert summary["sane_share"] == 1.0 and strict_summary["sane_share"] == 0.5
    assert summary["ended_share"] == strict_summary["ended_share"] == 0.5
    assert summary["mean_masked_mass"] == pytest.approx(0.15)
    assert strict_summary["reasons"] == {"no_ending": 1}
    assert sanity_summary([sample_sanity(score, CHORALE_PROFILE)])["ended_share"] is None  # unknown


def test_sanity_summary_pools_onsets_and_tallies_reasons():
    cluster = Score(TPQ)
    track = Track(program=0)
    for pitch in range(40, 60):
        track.notes.append(Note(0, TPQ, pitch, 80))
    cluster.tracks.append(track)
    checks = [sample_sanity(chorale(), CHORALE_PROFILE), sample_sanity(cluster, CHORALE_PROFILE),
              sample_sanity(Score(TPQ), CHORALE_PROFILE)]
    summary = sanity_summary(checks)
    assert summary["samples"] == 3 and summary["sane"] == 1 and summary["sane_share"] == pytest.approx(1 / 3)
    assert summary["mean_notes_per_onset"] == pytest.approx((60 + 20) / (15 + 1))
    assert summary["max_notes_per_onset"] == 20
    assert summary["reasons"] == {"no_notes": 1, "one_onset": 1, "crowded_onset": 1}


def test_bars_follow_the_time_signatures():
    assert bars_written(chorale(bars=3)) == 3
    assert bars_written(Score(TPQ)) == 0
    score = make_score([(0, 1, 60), (4, 1, 62), (7.5, 0.5, 64)], signature=(4, 4))
    assert bars_written(score) == 2
    score.time_signatures.append(TimeSignature(4 * TPQ, 3, 4))  # bar 2 on in 3/4: 4 + 3 + 1 beats
    assert bars_written(score) == 3
    assert bars_written(make_score([(0, 1, 60)], signature=None)) == 1  # 4/4 by default


# ----------------------------------------------------------------------------- comparison


def test_overlap_area_and_kl_of_known_distributions():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 4000), rng.normal(0, 1, 4000)
    assert compare.overlap_area(a, b) > 0.95
    assert compare.kl_divergence(a, b) < 0.01
    far = rng.normal(20, 1, 4000)
    assert compare.overlap_area(a, far) < 0.01
    assert compare.kl_divergence(a, far) > 10
    # Two unit Gaussians one standard deviation apart overlap by 2 * Phi(-1/2) = 0.617; KL = 1/2.
    shifted = rng.normal(1, 1, 4000)
    assert compare.overlap_area(a, shifted) == pytest.approx(0.617, abs=0.03)
    assert compare.kl_divergence(a, shifted) == pytest.approx(0.5, abs=0.08)
    assert math.isnan(compare.overlap_area(a, np.zeros(0)))
    assert compare.overlap_area(np.zeros(5), np.zeros(7)) == pytest.approx(1.0, abs=1e-3)  # constant sets


def test_intra_and_inter_set_distances():
    values = np.array([0.0, 1.0, 3.0])
    assert sorted(compare.intra_set_distances(values).tolist()) == [1.0, 2.0, 3.0]
    assert sorted(compare.inter_set_distances(np.array([1.0]), values).tolist()) == [0.0, 1.0, 2.0]
    vectors = np.array([[0.0, 0.0], [3.0, 4.0]])
    assert compare.intra_set_distances(vectors).tolist() == [5.0]


def test_compare_sets_near_and_far_with_a_ceiling():
    rng = np.random.default_rng(1)

    def pieces(mean, n=60):
        return [{"pitch_range": float(v), "note_length_histogram": [0.5, 0.5], "mean_ioi": math.nan}
                for v in rng.normal(mean, 2, n)]

    reference = pieces(20)
    names = ("pitch_range", "note_length_histogram", "mean_ioi")
    near = compare.compare_sets(reference, pieces(20), names)
    far = compare.compare_sets(reference, pieces(40), names)
    ceiling = compare.split_half_ceiling(reference, features=names)
    assert near["pitch_range"]["oa"] > 0.85 and far["pitch_range"]["oa"] < 0.1
    assert near["pitch_range"]["kl"] < far["pitch_range"]["kl"]
    assert ceiling["pitch_range"]["oa"] > 0.8
    assert math.isnan(near["mean_ioi"]["oa"])  # undefined everywhere: left out, not zero
    assert compare.mean_over_features(near) == pytest.approx(np.mean([near["pitch_range"]["oa"],
                                                                     near["note_length_histogram"]["oa"]]))


def test_nan_features_are_counted_not_silently_dropped():
    one_chord = features.piece_features(make_score([(0, 1, 60), (0, 1, 64), (0, 1, 67)]))
    scale = features.piece_features(make_score(SCALE))
    empty = features.piece_features(Score(TPQ))
    generated = [one_chord, scale, empty]
    counts = compare.nan_counts(generated)
    assert counts["mean_ioi"] == 2  # one onset, no notes: no inter-onset interval
    assert counts["groove_consistency"] == 2  # shorter than two bars
    assert counts["pitch_range"] == 1 and counts["note_length_histogram"] == 1  # only the empty one
    assert counts["n_pitches_used"] == 0  # a count is 0, never NaN
    summary = compare.summarise_features(generated)
    assert summary["mean_ioi"]["n"] == 1 and summary["mean_ioi"]["nan"] == 2
    assert summary["note_length_histogram"]["nan"] == 1
    reference = [features.piece_features(make_score([(beat, 1, 60 + beat % 5) for beat in range(8 + k)]))
                 for k in range(6)]
    comparison = compare.compare_sets(reference, generated)
    assert comparison["mean_ioi"]["generated_defined"] == 1 and comparison["mean_ioi"]["generated_nan"] == 2
    assert comparison["mean_ioi"]["reference_nan"] == 0 and comparison["mean_ioi"]["reference_defined"] == 6



def test_evaluate_sets_judges_sanity_against_the_held_out_pieces_without_a_profile():
    from midillm.eval import evaluate_sets

    reference = [chorale(seed) for seed in range(4)]
    cluster = Score(TPQ)
    cluster.tracks.append(Track(program=0))
    for pitch in range(40, 60):
        cluster.tracks[0].notes.append(Note(0, TPQ, pitch, 80))
    result = evaluate_sets({"generated": [reference[0].copy(), cluster]}, reference, reference[:2],
                           generations={"generated": [{"ended": True, "new_tokens": 200, "masked_mass": 0.1},
                                                      {"ended": False, "new_tokens": 512, "masked_mass": 0.4}]})
    assert result["sanity"]["profile_source"] == "held-out"
    assert result["reference"]["sanity"]["sane_share"] == 1.0
    sanity = result["sets"]["generated"]["sanity"]
    assert [check["sane"] for check in sanity["per_piece"]] == [True, False]
    # (Its one part also strikes 20 notes in one beat, denser than any chorale voice: issue 26's band check.)
    assert sanity["reasons"] == {"one_onset": 1, "crowded_onset": 1, "part_density": 1} and sanity["ended_share"] == 0.5
    # The one-chord sample has no inter-onset interval: counted, not silently dropped.
    assert result["sets"]["generated"]["nan_features"]["mean_ioi"] == 1
    assert result["sets"]["generated"]["comparison"]["mean_ioi"]["generated_nan"] == 1


# ----------------------------------------------------------------------------- listener measures

# I, IV, V7, I, ii6, V7 without its fifth, vii°7, I in C major, as (soprano, alto, tenor, bass).
C_MAJOR_CHORDS = [(72, 67, 64, 48), (72, 69, 65, 53), (71, 65, 62, 55), (72, 67, 64, 48),
                  (74, 69, 62, 53), (71, 65, 59, 43), (68, 65, 62, 59), (72, 67, 64, 48)]


def voices(*parts, signature=(4, 4)) -> Score:
    """One track per part; each part a list of (onset, duration, pitch) in beats."""
    score = Score(TPQ)
    score.time_signatures.append(TimeSignature(0, *signature))
    for part in parts:
        track = Track(program=0)
        for onset, duration, pitch in part:
            track.notes.append(Note(int(round(onset * TPQ)), int(round(duration * TPQ)), pitch, 80))
        score.tracks.append(track)
    return score


def block_chords(chords) -> Score:
    """Four parts striking one chord (a tuple of four pitches) on every beat."""
    return voices(*([(beat, 1, chord[part]) for beat, chord in enumerate(chords)] for part in range(4)))


def vocabulary_chorale(seed: int, beats: int = 16) -> Score:
    """Block chords of the vocabulary on random roots, bass on the root, the upper parts on
    chord tones in their ranges: chorale-like harmony with no voice leading to speak of."""
    rng = random.Random(seed)
    shapes = [harmony.CHORD_SHAPES[name] for name in ("major", "minor", "dominant seventh", "minor seventh")]
    chords = []
    for _ in range(beats):
        root, shape = rng.randrange(12), rng.choice(shapes)
        tones = [(root + step) % 12 for step in shape]
        # Each chord tone once in the upper three parts (a seventh chord drops its fifth there).
        upper = [tones[0], tones[1], tones[-1]] if len(tones) == 4 else tones
        rng.shuffle(upper)
        chords.append(tuple(60 + 12 * (part == 0) + (tone - 60) % 12 for part, tone in enumerate(upper))
                      + (36 + root,))
    return block_chords(chords)


def test_the_chord_vocabulary_in_any_transposition_and_inversion():
    for shape in ((0, 4, 7), (0, 3, 7), (0, 3, 6), (0, 4, 8), (0, 4, 7, 10), (0, 4, 7, 11), (0, 3, 7, 10),
                  (0, 3, 6, 10), (0, 3, 6, 9), (0, 4, 10), (0, 4, 11), (0, 3, 10)):
        for root in (0, 5, 11):
            assert harmony.is_chord([(root + step) % 12 for step in shape]), (shape, root)
    assert harmony.is_chord([4, 7, 0, 0, 4])  # C major in first inversion, doubled
    for not_a_chord in ([0, 2, 7], [0, 5, 7], [0, 1, 2], [0, 4, 7, 10, 2], [0, 7], [0], []):
        assert not harmony.is_chord(not_a_chord), not_a_chord


def test_block_chords_on_every_beat_are_all_chords_single_notes_none():
    assert harmony.chord_on_beat(block_chords(C_MAJOR_CHORDS)) == harmony.ChordCount(beats=8, chords=8)
    assert harmony.chord_on_beat_share(block_chords(C_MAJOR_CHORDS)) == 1.0
    assert harmony.chord_on_beat_share(make_score(SCALE)) == 0.0
    # Four parts on two pitch classes (octaves and a fifth) are not a chord.
    assert harmony.chord_on_beat_share(block_chords([(72, 67, 60, 48)] * 4)) == 0.0
    # A rest in every part is a beat without a chord; no notes at all, no beats.
    gapped = block_chords(C_MAJOR_CHORDS[:2])
    for track in gapped.tracks:
        track.notes.append(Note(3 * TPQ, TPQ, track.notes[0].pitch, 80))
    assert harmony.chord_on_beat(gapped) == harmony.ChordCount(beats=4, chords=3)
    assert math.isnan(harmony.chord_on_beat_share(Score(TPQ)))
    # Drums are no part of the harmony.
    with_drums = make_score([(beat, 1, pitch) for beat, chord in enumerate(C_MAJOR_CHORDS) for pitch in chord],
                            drums=[(beat, 1, 37) for beat in range(8)])
    assert harmony.chord_on_beat_share(with_drums) == 1.0


def test_a_passing_note_between_beats_is_heard_a_suspension_on_the_beat_is_not():
    alto, tenor, bass = [(0, 2, 67)], [(0, 1, 64), (1, 1, 62)], [(0, 1, 48), (1, 1, 55)]
    # Soprano C5 to D5 on the off-beat, then on the beat B4 over G-B-D: both beats are chords
    # (the alto's G held into beat 2 belongs to the G chord).
    passing = voices([(0, 0.5, 72), (0.5, 0.5, 74), (1, 1, 71)], alto, tenor, bass)
    assert harmony.chord_on_beat(passing) == harmony.ChordCount(beats=2, chords=2)
    # The soprano's C held over beat 2 against G-D-G (a 4-3 suspension, resolving after the beat).
    suspension = voices([(0, 1.5, 72), (1.5, 0.5, 71)], alto, tenor, bass)
    assert harmony.chord_on_beat(suspension) == harmony.ChordCount(beats=2, chords=1)


def test_beats_follow_the_time_signature_dotted_in_compound_metres():
    assert harmony.beat_times(make_score([(0, 8, 60)])).tolist() == list(range(8))
    assert harmony.beat_times(make_score([(0, 6, 60)], signature=(3, 2))).tolist() == [0, 2, 4]
    assert harmony.beat_times(make_score([(0, 6, 60)], signature=(6, 8))).tolist() == [0, 1.5, 3, 4.5]
    assert harmony.beat_times(make_score([(0, 1.5, 60)], signature=(3, 8))).tolist() == [0, 0.5, 1]
    changing = make_score([(0, 7, 60)])
    changing.time_signatures.append(TimeSignature(4 * TPQ, 6, 8))  # one bar of 4/4, then 6/8
    assert harmony.beat_times(changing).tolist() == [0, 1, 2, 3, 4, 5.5]
    # 6/8: a chord struck on each dotted-quarter beat, the bass alone on the eighths between
    # them. Counted on eighths, two of every three beats would be a lone bass note.
    beats = [0, 1.5, 3, 4.5]
    six_eight = voices([(b, 0.5, 72) for b in beats], [(b, 0.5, 67) for b in beats],
                       [(b, 0.5, 64) for b in beats], [(b, 1.5, 48) for b in beats], signature=(6, 8))
    assert harmony.chord_on_beat(six_eight) == harmony.ChordCount(beats=4, chords=4)


def test_parallel_fifths_count_contrary_motion_does_not():
    upper = [(beat, 1, pitch) for beat, pitch in enumerate([72, 74, 76])]
    fifths = voices(upper, [(beat, 1, pitch) for beat, pitch in enumerate([65, 67, 69])])
    contrary = voices(upper, [(beat, 1, pitch) for beat, pitch in enumerate([65, 64, 62])])
    assert voice_leading.parallel_motion(fifths) == {"moves": 2, "parallels": 2}
    assert listener.piece_listening(fifths)["parallels_per_move"] == 1.0
    assert voice_leading.parallel_motion(contrary) == {"moves": 2, "parallels": 0}
    assert listener.piece_listening(contrary)["parallels_per_move"] == 0.0
    # A drum track is no voice: hits on the same "pitches" add no moves.
    drummed = fifths.copy()
    drummed.tracks.append(Track(program=0, is_drum=True))
    drummed.tracks[-1].notes.extend(fifths.tracks[1].notes)
    assert voice_leading.parallel_motion(drummed) == {"moves": 2, "parallels": 2}
    # Without two voices that both move there is nothing to count.
    assert math.isnan(listener.piece_listening(make_score(SCALE))["parallels_per_move"])


def test_rests_inside_voices_are_counted_per_part():
    # A rest of a beat after the first note; a 0.05-beat gap is articulation; the last note
    # has no next note to rest before.
    melody = voices([(0, 1, 60), (2, 1, 62), (3, 1, 64), (4.05, 1, 65)])
    assert voice_leading.rests_inside_voices(melody) == voice_leading.RestCount(notes=3, rests=1)
    assert listener.piece_listening(melody)["rests_inside_voices"] == pytest.approx(1 / 3)
    assert voice_leading.rests_inside_voices(voices(SCALE)) == voice_leading.RestCount(notes=7, rests=0)
    # Two parts that take turns: the piece never falls silent, but each part rests.
    turns = voices([(0, 1, 72), (2, 1, 74)], [(1, 1, 60), (3, 1, 62)])
    assert voice_leading.rests_inside_voices(turns) == voice_leading.RestCount(notes=2, rests=2)
    # In a part that plays chords, notes released under a held one are no rest; the held one,
    # which the silence follows, is.
    chords = voices([(0, 4, 48), (0, 1, 60), (1, 1, 62), (5, 1, 64)])
    assert voice_leading.rests_inside_voices(chords) == voice_leading.RestCount(notes=3, rests=1)


def test_the_classifier_cannot_tell_one_distribution_from_itself_and_tells_different_ones():
    rng = np.random.default_rng(0)
    same = [two_sample.two_sample_classifier_accuracy(rng.normal(size=(20, 14)), rng.normal(size=(40, 14)),
                                                      seed=seed) for seed in range(5)]
    assert all(accuracy <= 0.7 for accuracy in same) and abs(np.mean(same) - 0.5) < 0.1
    # Three features shifted by three standard deviations: the best any classifier can do is 99.5%.
    shifted = rng.normal(size=(40, 14))
    shifted[:, :3] += 3.0
    assert two_sample.two_sample_classifier_accuracy(rng.normal(size=(20, 14)), shifted) >= 0.9
    # A feature undefined in every piece of one set (and only there) gives that set away.
    undefined = rng.normal(size=(20, 14))
    undefined[:, 3] = np.nan
    assert two_sample.two_sample_classifier_accuracy(undefined, rng.normal(size=(20, 14))) >= 0.9
    assert math.isnan(two_sample.two_sample_classifier_accuracy(rng.normal(size=(3, 14)), shifted))


def test_the_logistic_regression_is_scikit_learns():
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 5))
    y = (x[:, 0] - x[:, 2] + rng.normal(size=60) > 0).astype(np.int64)
    weights, intercept = two_sample.fit_logistic_regression(x, y)
    reference = linear_model.LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(x, y)
    assert weights == pytest.approx(reference.coef_[0], abs=1e-5)
    assert intercept == pytest.approx(reference.intercept_[0], abs=1e-5)


def test_bach_chorales_sound_chords_on_the_beat_and_a_shuffled_control_does_not(bach_midi_files):
    from midillm.eval.tasks import shuffled_control

    chorales = [Score(str(path)) for path in bach_midi_files[:30]]
    rng = random.Random(0)
    controls = [shuffled_control(score, rng) for score in chorales]
    bach = [listener.piece_listening(score) for score in chorales]
    control = [listener.piece_listening(score) for score in controls]
    heard, control_heard = listener.listening_summary(bach), listener.listening_summary(control)
    print(f"Bach ({len(chorales)} chorales): {heard}; shuffled control: {control_heard}")
    # The figure for Bach is ~91% chords on the beat; parallels and rests are rare.
    assert heard["chord_on_beat"] >= 0.85
    assert heard["parallels_per_move"] < 0.05 and heard["rests_inside_voices"] < 0.01
    assert control_heard["chord_on_beat"] < 0.5
    assert control_heard["parallels_per_move"] > heard["parallels_per_move"]
    rows = listener.classifier_rows(bach, [features.piece_features(score) for score in chorales])
    control_rows = listener.classifier_rows(control, [features.piece_features(score) for score in controls])
    assert two_sample.two_sample_classifier_accuracy(control_rows, rows) >= 0.9
    assert listener.split_half_classifier_accuracy(rows) <= 0.7


def test_evaluate_sets_reports_the_listener_measures_of_every_set():
    from midillm.eval import evaluate_sets

    reference = [vocabulary_chorale(seed) for seed in range(12)]
    result = evaluate_sets({"generated": [chorale(seed) for seed in range(8)],
                            "copies": [vocabulary_chorale(seed) for seed in range(100, 108)]},
                           reference, reference[:2])
    held_out, generated, copies = result["reference"], result["sets"]["generated"], result["sets"]["copies"]
    assert held_out["chord_on_beat"] == copies["chord_on_beat"] == 1.0
    assert generated["chord_on_beat"] < 0.5  # random pitches in four ranges
    # Random pitches in the three upper parts rest nowhere and move in parallels now and then.
    assert generated["rests_inside_voices"] == 0.0 and generated["parallels_per_move"] > 0
    assert generated["classifier_accuracy"] >= 0.9
    assert copies["classifier_accuracy"] <= 0.7 and held_out["classifier_accuracy"] <= 0.7
    pooled = held_out["listener_per_piece"]
    assert held_out["parallels_per_move"] == pytest.approx(
        sum(piece["parallels"] for piece in pooled) / sum(piece["moves"] for piece in pooled))


# ----------------------------------------------------------------------------- memorisation


def test_a_transposed_copy_is_found_whole():
    rng = random.Random(0)
    training_piece = [(i * 0.5, 0.5, rng.randint(55, 80)) for i in range(64)]  # 8 bars of 8ths
    other = [(i, 1, rng.randint(40, 60)) for i in range(32)]
    index = memorization.TrainingIndex([make_score(other), make_score(training_piece)], ["other", "source"])
    # 5 bars of the training piece (bars 2-6), transposed up a fourth, after 2 bars of its own.
    intro = [(i * 1.0, 1, 90 + (i % 3)) for i in range(8)]
    copied = [(onset + 4, duration, pitch + 5) for onset, duration, pitch in training_piece[8:48]]
    sample = make_score(intro + copied)
    found = memorization.longest_copy(sample, index)
    assert found["source"] == "source"
    assert found["notes"] == 40
    assert found["bars"] == pytest.approx(39 * 0.5 / 4)  # first to last copied onset
    assert found["start_beat"] == 8.0
    summary = memorization.memorization_summary([found, memorization.longest_copy(make_score(intro), index)])
    assert summary["share_copying"] == 0.5 and summary["longest_notes_max"] == 40


def test_no_match_across_training_pieces_and_empty_samples():
    a = [(i, 1, 60 + i) for i in range(6)]  # rising steps
    b = [(i, 1, 70 + i) for i in range(6)]
    index = memorization.TrainingIndex([make_score(a), make_score(b)])
    # Twelve rising steps: each training piece holds only six, and the separator stops the
    # match from running from one into the next.
    found = memorization.longest_copy(make_score([(i, 1, 50 + i) for i in range(12)]), index)
    assert found["notes"] == 6
    empty = memorization.longest_copy(Score(TPQ), index)
    assert empty["notes"] == 0 and empty["bars"] == 0.0 and empty["source"] is None


# ----------------------------------------------------------------------------- end to end


def test_a_model_that_knows_nothing_scores_the_log_of_its_choices(tiny_models, tiny_data):
    """Likelihood on a known distribution: a zero output matrix gives every one of the K tokens
    the head scores the same probability, so each held-out token costs exactly log K nats."""
    from midillm.decoding.generate import MidiLM
    from midillm.eval.likelihood import held_out_likelihood
    from midillm.model.runtime import add_music_tokens, load_base_model
    from midillm.tokenization import MusicCodec

    codec = MusicCodec.from_pretrained(tiny_data / "codec")
    model = load_base_model(str(tiny_models["untied"]))
    add_music_tokens(model, codec)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()
    got = held_out_likelihood(MidiLM(model, codec, dtype=torch.float32), tiny_data)
    choices = len(set(codec.music_lm_ids)) if codec.render == "tokens" else len(codec.lm_tokenizer)
    assert got["loss"] == pytest.approx(math.log(choices), rel=1e-5)
    assert got["perplexity"] == pytest.approx(choices, rel=1e-4)
    prepared = json.loads((tiny_data / "prepare.json").read_text())
    notes = prepared["splits"][got["split"]]["notes"]
    assert got["notes"] == notes > 0 and got["tokens"] > 0
    assert got["bits_per_note"] == pytest.approx(got["tokens"] * math.log2(choices) / notes, rel=1e-5)


def test_eval_command_writes_metrics_and_a_report(tiny_bundle, tiny_data, tmp_path, capsys):
    from midillm.cli import main

    # eval leaves its metrics in the bundle too (checked below): on a copy of the shared bundle.
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    out = tmp_path / "eval"
    assert main(["eval", str(bundle), "--data", str(tiny_data), "--out", str(out),
                 "-n", "3", "--max-new-tokens", "60", "--seed", "1", "--top-p", "0.9", "--min-p", "0.05"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    # Sampled as `generate` samples this bundle (its own settings), but for the flags given.
    from midillm.decoding.request import SamplingSettings

    from midillm.tokenization import MusicCodec

    bundle_sampling = SamplingSettings.from_pretrained(bundle, SamplingSettings.for_layout(MusicCodec.from_pretrained(bundle).layout))
    assert metrics["sampling"]["temperature"] == bundle_sampling.temperature
    assert metrics["sampling"]["top_p"] == 0.9 != bundle_sampling.top_p
    assert metrics["sampling"]["min_p"] == 0.05 != bundle_sampling.min_p
    assert metrics["sampling"]["max_new_tokens"] == 60
    assert json.loads((bundle / "eval" / "metrics.json").read_text()) == metrics
    assert set(metrics["sets"]) == {"generated", "model_alone", "untrained", "shuffled"}
    assert metrics["validity"]["generated"]["samples"] == 3
    assert metrics["validity"]["generated"]["token_errors"] == {"type": 0, "time": 0, "duplicate_note": 0}
    fine_tuned, untrained = metrics["likelihood"]["generated"], metrics["likelihood"]["untrained"]
    assert fine_tuned["tokens"] > 0 and fine_tuned["notes"] > 0
    # 30 steps of training beat none, per token and per note.
    assert fine_tuned["loss"] < untrained["loss"] and fine_tuned["bits_per_note"] < untrained["bits_per_note"]

    # The sane share leads: the summary, the command's output and the report.
    summary = metrics["summary"]
    assert list(summary)[:3] == ["sane_share", "sane_share_model_alone", "ended_share"]
    assert printed.splitlines()[-2].startswith("sane_share ")  # the numbers line, before "Wrote ..."
    assert summary["bits_per_note"] == fine_tuned["bits_per_note"]
    assert metrics["sanity"]["profile_source"] == "codec"  # prepare measured the train split
    for name, key in (("generated", "sane_share"), ("model_alone", "sane_share_model_alone")):
        sanity = metrics["sets"][name]["sanity"]
        assert sanity["samples"] == len(sanity["per_piece"]) == 3
        assert summary[key] == sanity["sane_share"] == sum(check["sane"] for check in sanity["per_piece"]) / 3
        for check in sanity["per_piece"]:
            assert isinstance(check["ended"], bool) and check["new_tokens"] <= 60
            assert check["sane"] == (check["reasons"] == [])
        assert sum(sanity["reasons"].values()) >= 3 - sanity["sane"]
    generated = metrics["sets"]["generated"]["sanity"]
    assert summary["ended_share"] == sum(check["ended"] for check in generated["per_piece"]) / 3
    assert summary["insane_reasons"] == generated["reasons"]
    assert summary["corpus_sane_share"] == metrics["reference"]["sanity"]["sane_share"]
    assert summary["corpus_mean_notes_per_onset"] > 1  # band pieces: chords and drums together
    assert set(summary["nan_features"]) >= {"mean_ioi", "groove_consistency"}
    assert summary["nan_features"]["mean_ioi"] == metrics["sets"]["generated"]["features"]["mean_ioi"]["nan"]
    for name in ("generated", "model_alone", "untrained", "shuffled"):
        entry = metrics["sets"][name]
        assert set(entry["comparison"]) >= {"pitch_range", "groove_consistency", "note_length_histogram"}
        assert "share_copying" in entry["memorization"]
        # The listener measures, beside the sane share, for every set and in the summary.
        for key in ("chord_on_beat", "parallels_per_move", "rests_inside_voices", "classifier_accuracy"):
            assert key in entry and summary[key if name == "generated" else f"{name}_{key}"] == entry[key]
        assert len(entry["listener_per_piece"]) == entry["pieces"]
    assert summary["corpus_chord_on_beat"] == metrics["reference"]["chord_on_beat"]
    # The training pieces themselves would be found whole; the held-out ones are other pieces.
    assert metrics["reference"]["memorization"]["samples"] == metrics["reference"]["pieces"]
    for key, path in metrics["report"].items():
        assert Path(path).is_file(), key
    assert (out / "figures" / "features.png").stat().st_size > 1000
    assert (out / "figures" / "note_lengths.png").is_file()
    assert (out / "samples" / "sample-000.png").is_file() and (out / "samples" / "sample-002.mid").is_file()
    # The model alone's samples are written too, each the very piece its sanity judged.
    from symusic import Score
    for index, check in enumerate(metrics["sets"]["model_alone"]["sanity"]["per_piece"]):
        written = Score(str(out / "samples" / f"model-alone-{index:03d}.mid"))
        assert sum(track.note_num() for track in written.tracks) == check["notes"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5  # 2 figures + 3 piano rolls, inlined
    assert "data:audio/wav;base64," in html
    assert (html.index("What a listener hears") < html.index("Sane samples") < html.index("Summary")
            < html.index("Features and overlapped area"))
    markdown = (out / "report.md").read_text()
    assert "figures/features.png" in markdown and "Summary" in markdown
    # The held-out pieces, whole or cut to the samples' length, as the report says.
    cut = metrics["reference"]["excerpts"]
    assert (f"{cut['excerpts']} excerpts of {cut['bars']} bars" if cut else
            f"{metrics['reference']['pieces']} held-out pieces") in markdown
    assert cut is None or metrics["reference"]["pieces"] == cut["excerpts"] == len(metrics["reference"]["names"])


def test_eval_of_a_folder_of_midi_without_a_model(tiny_data, tmp_path):
    from midillm.eval import EvalConfig, evaluate

    prepared = json.loads((tiny_data / "prepare.json").read_text())
    folder = tmp_path / "samples"
    folder.mkdir()
    train_paths = [piece["path"] for piece in prepared["pieces"] if piece["split"] == "train"]
    for index, path in enumerate(train_paths[:3]):
        Score(path).dump_midi(folder / f"copy{index}.mid")
    (folder / "broken.mid").write_bytes(b"not midi")
    metrics = evaluate(EvalConfig(data=str(tiny_data), out=str(tmp_path / "out"), samples=str(folder)),
                       log=lambda *_: None)
    assert metrics["validity"]["generated"]["samples"] == 4
    assert metrics["validity"]["generated"]["valid_share"] == 0.75
    assert metrics["likelihood"] == {} and set(metrics["sets"]) == {"generated", "shuffled"}
    # Files have no record of how they ended; their sanity is judged all the same.
    assert metrics["summary"]["ended_share"] is None
    assert metrics["sets"]["generated"]["sanity"]["samples"] == 3
    assert list(metrics["summary"])[0] == "sane_share"
    # Samples copied from the training set are caught as copies of whole pieces.
    memo = metrics["sets"]["generated"]["memorization"]
    assert memo["share_copying"] == 1.0
    assert all(copy["source"] in {Path(path).name for path in train_paths}
               for copy in memo["per_piece"])
    # Three samples are too few to cross-validate a classifier on: no figure, not a guess.
    assert math.isnan(metrics["sets"]["generated"]["classifier_accuracy"])
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert markdown.index("What a listener hears") < markdown.index("Sane samples")
    assert (tmp_path / "out" / "report.html").is_file()


def test_eval_errors_are_one_line(tiny_data, tmp_path, capsys):
    from midillm.cli import main

    assert main(["eval", str(tmp_path / "missing"), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "prepare.json" in capsys.readouterr().err
    assert main(["eval", "x", "--data", str(tiny_data), "--out", str(tmp_path / "o"), "-n", "0"]) == 1
    assert "-n must be at least 1" in capsys.readouterr().err
    assert main(["eval", "x", "--data", str(tiny_data), "--out", str(tmp_path / "o"), "--temperature", "0"]) == 1
    assert capsys.readouterr().err.strip().endswith("temperature must be above 0, not 0.0")


def test_eval_may_write_into_the_bundles_own_eval_folder(tiny_bundle, tiny_data, tmp_path):
    from midillm.cli import main

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    out = bundle / "eval"  # where the model card reads its metrics: no copy onto itself
    assert main(["eval", str(bundle), "--data", str(tiny_data), "--out", str(out), "-n", "1",
                 "--max-new-tokens", "20", "--no-baselines"]) == 0
    assert json.loads((out / "metrics.json").read_text())["validity"]["generated"]["samples"] == 1
