"""Tracks keep their identity, and work on music the user already has: infill, accompany, arrange.

The guarantees are checked on the notes themselves: what was given comes back unchanged (same
track, onset, pitch, duration), an infilled gap has exactly the bars asked for, and a model
whose rows never taught a task refuses it in one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from symusic import Score

from conftest import train_tiny_bundle
from midillm.cli import main
from midillm.decoding.generate import MidiLM
from midillm.decoding.request import TaskError
from midillm.tokenization.caption import part_names
from midillm.tokenization.codec import CODEC_CONFIG_FILE, MusicCodec


def notes_of(track, ticks_per_quarter: int) -> list[tuple[float, int, float]]:
    """(onset, pitch, duration) in quarter notes: comparable across time resolutions."""
    return sorted((note.time / ticks_per_quarter, note.pitch, note.duration / ticks_per_quarter)
                  for note in track.notes)


def one_error_line(stderr: str, message: str) -> bool:
    """One `midillm: error:` line holding `message`, and no traceback (progress bars aside)."""
    errors = [line for line in stderr.splitlines() if line.startswith("midillm: error:")]
    return len(errors) == 1 and message in errors[0] and "Traceback" not in stderr


def track_named(score: Score, name: str):
    matches = [track for track in score.tracks if track.name == name and track.note_num()]
    assert len(matches) == 1, [track.name for track in score.tracks]
    return matches[0]


# ----------------------------------------------------------------------------- tracks keep identity


def test_chorales_decode_to_their_named_voices(tiny_lm_tokenizer, bach_midi_files):
    from midillm.tokenization.profile import measure_corpus

    # Corpus-adapted, as `prepare` builds it: its durations hold the chorales' long final chords.
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer,
                              corpus=measure_corpus(Score(str(path)) for path in bach_midi_files))
    for path in bach_midi_files[:6]:
        score = Score(str(path))
        decoded = codec.decode(codec.encode(score))
        played = [track for track in score.tracks if track.note_num()]
        assert [track.name for track in decoded.tracks] == [track.name for track in played]
        assert {"Soprano", "Alto", "Tenor", "Bass"} <= {track.name for track in decoded.tracks}
        for original, back in zip(played, decoded.tracks):
            assert notes_of(back, decoded.ticks_per_quarter) == notes_of(original, score.ticks_per_quarter)


@pytest.mark.parametrize("vocab_size", [0, 900])
def test_multitrack_files_keep_their_tracks(tiny_lm_tokenizer, band_midi_files, vocab_size):
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, layout="bars" if vocab_size else "onsets")
    codec.train_bpe(band_midi_files, vocab_size)
    codec.train_compounds(band_midi_files)
    kept = total = 0
    for path in band_midi_files:
        score = Score(str(path))
        decoded = codec.decode(codec.encode(score))
        played = [track for track in score.tracks if track.note_num()]
        assert len(decoded.tracks) == len(played)
        # Tracks named "program 33" say nothing: the parts come back named by their roles (issue 26).
        for original, back, name in zip(played, decoded.tracks, part_names(score)):
            assert (back.program, back.is_drum, back.name) == (original.program, original.is_drum, name)
            wanted = set(notes_of(original, score.ticks_per_quarter))
            kept += len(wanted & set(notes_of(back, decoded.ticks_per_quarter)))
            total += len(wanted)
        # The metre and tempo changes are the score's, and every part follows them.
        assert [(signature.numerator, signature.denominator) for signature in decoded.time_signatures] == [(4, 4), (3, 4)]
    assert kept / total >= 0.99


def test_one_stream_codecs_still_merge_tracks_of_one_program(tiny_lm_tokenizer, bach_midi_files):
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, parts=False)
    decoded = codec.decode(codec.encode(bach_midi_files[0]))
    assert len(decoded.tracks) == 1 and not codec.parts


# ----------------------------------------------------------------------------- a bundle that learned the tasks


def trio_score(seed: int, bars: int = 8) -> Score:
    """Melody, bass and piano, named, in 4/4 then 3/4: light enough for 256-token rows."""
    import random

    from symusic import Note, Tempo, TimeSignature, Track

    rng = random.Random(seed)
    tpq = 480
    score = Score(tpq)
    score.tempos.append(Tempo(0, 100.0))
    score.time_signatures.extend([TimeSignature(0, 4, 4), TimeSignature(4 * tpq * (bars // 2), 3, 4)])
    tracks = {name: Track(name=name, program=program) for name, program in
              (("Melody", 73), ("Bass", 33), ("Piano", 0))}
    time = 0
    for bar in range(bars):
        beats = 4 if bar < bars // 2 else 3
        for beat in range(beats):
            onset = time + beat * tpq
            tracks["Melody"].notes.append(Note(onset, tpq, rng.randint(67, 84), 90))
            tracks["Piano"].notes.append(Note(onset, tpq, rng.randint(55, 64), 70))
        tracks["Bass"].notes.append(Note(time, beats * tpq, rng.randint(36, 48), 80))
        time += beats * tpq
    score.tracks.extend(list(tracks.values()))
    return score


def test_prepare_mixes_the_tasks_in_by_default():
    from midillm.tokenization.dataset import PrepareConfig

    config = PrepareConfig(source="music21:bach", out="unused")
    assert config.infill_ratio > 0 and config.accompany_ratio > 0


# Parts numbered by role (the trio's default: a flute, a bass and a piano are three General MIDI
# families; the bass then is `<Part_13>`, after the others at each onset) and in the file's order
# (the given parts first in the accompaniment rows).
@pytest.fixture(scope="module", params=["role", "order"])
def task_data(tiny_models, tmp_path_factory, request) -> Path:
    from midillm.tokenization.dataset import PrepareConfig, prepare

    folder = tmp_path_factory.mktemp("trio")
    for seed in range(12):
        trio_score(seed).dump_midi(folder / f"trio{seed}.mid")
    out = tmp_path_factory.mktemp("trio-data")
    report = prepare(PrepareConfig(source=str(folder), out=str(out), base_model=str(tiny_models["tied"]),
                                   vocab_size=0, seq_len=256, infill_ratio=1.0, accompany_ratio=1.0,
                                   num_workers=1, part_numbering=None if request.param == "role" else "order"),
                     log=lambda *_: None)
    assert report["tasks"] == ["continue", "infill", "accompany", "arrange"]
    assert report["train_examples_by_task"]["infill"] > 0
    # Numbered by role, an accompaniment row would be its continuation row: the given parts keep their places.
    assert (report["train_examples_by_task"]["accompany"] > 0) == (request.param == "order")
    assert MusicCodec.from_pretrained(out / "codec").part_numbering == request.param
    return out


# Not conftest's shared tiny_bundle: these tests need named parts (Melody, Bass, Piano) and rows
# that are mostly infill and accompaniment examples (ratios 1.0, 256-token rows), which the band
# data of tiny_bundle does not have.
@pytest.fixture(scope="module")
def task_bundle(tiny_models, task_data, tmp_path_factory):
    return train_tiny_bundle(tiny_models["tied"], task_data, tmp_path_factory.mktemp("task-bundle"), max_steps=40)


@pytest.fixture(scope="module")
def task_lm(task_bundle):
    return MidiLM.from_pretrained(task_bundle, dtype=torch.float32)


@pytest.fixture(scope="module")
def band_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trio-input") / "trio.mid"
    trio_score(seed=42, bars=6).dump_midi(path)
    return path


def bar_starts(score: Score) -> list[float]:
    """Start of each bar in quarter notes, from the score's metres (4/4 then 3/4 in the band)."""
    starts, time = [], 0.0
    signatures = [(signature.time / score.ticks_per_quarter, signature.numerator * 4 / signature.denominator)
                  for signature in score.time_signatures]
    end = score.end() / score.ticks_per_quarter
    while time < end + 1e-9:
        starts.append(time)
        length = [length for start, length in signatures if start <= time + 1e-9][-1]
        time += length
    return starts


def test_infill_keeps_everything_outside_the_gap_and_fills_exactly_its_bars(task_lm, band_file):
    given = task_lm.codec.decode(task_lm.codec.encode(band_file))  # the input as the codec sees it
    starts = bar_starts(given)
    gap_start, gap_end = starts[1], starts[3]  # bars 2-3
    results = task_lm.infill(band_file, "2-3", num_samples=3, seed=1, max_new_tokens=120)
    assert len(results) == 3
    for result in results:
        assert [track.name for track in result.tracks][:len(given.tracks)] == [track.name for track in given.tracks]
        for original in given.tracks:
            back = track_named(result, original.name) if sum(
                track.name == original.name for track in given.tracks) == 1 else None
            if back is None:
                continue
            outside = [note for note in notes_of(original, given.ticks_per_quarter)
                       if not gap_start <= note[0] < gap_end]
            written = [note for note in notes_of(back, result.ticks_per_quarter)
                       if not gap_start <= note[0] < gap_end]
            assert written == outside, original.name
        # The new music lies inside the gap: exactly two bars, no more, no fewer.
        new_onsets = [note.time / result.ticks_per_quarter for track in result.tracks for note in track.notes
                      if gap_start <= note.time / result.ticks_per_quarter < gap_end]
        assert new_onsets, "the gap was left empty"


def test_infill_writes_exactly_the_bars_asked(task_lm, band_file):
    for bars, count in (("2-2", 1), ("3-5", 3)):
        results = task_lm.infill(band_file, bars, num_samples=2, seed=3, max_new_tokens=150)
        assert len(results) == 2
        for record in task_lm.last_generation:
            assert record["ended"], "the infill stopped on the token budget instead of after its bars"
            assert record["bars"] == count


@pytest.mark.parametrize("strict", [None, True], ids=["default", "strict-voice-leading"])
def test_accompany_keeps_the_given_track_exactly(task_lm, band_file, strict):
    """Given music comes back exactly, whatever the rules ask of the parts written around it
    (strict voice leading over a given bass leaves the parts above it no room: a dead end)."""
    given = task_lm.codec.decode(task_lm.codec.encode(band_file))
    kept = track_named(given, "Bass")
    results = task_lm.accompany(band_file, ["Bass"], num_samples=2, seed=0, max_new_tokens=300,
                                strict_voice_leading=strict)
    for result in results:
        back = track_named(result, "Bass")
        assert notes_of(back, result.ticks_per_quarter) == notes_of(kept, given.ticks_per_quarter)
        assert (back.program, back.is_drum) == (kept.program, kept.is_drum)
        # The given part keeps its number: first in order, and after the parts written by role
        # (the model wrote around it, below it at each onset, as it learned the trio).
        names = [track.name for track in result.tracks]
        assert len(names) > 1, "nothing was written around the given bass"
        assert names.index("Bass") == (0 if task_lm.codec.part_numbering == "order" else len(names) - 1)


def off_grid_file(folder: Path) -> Path:
    """The trio with every part's notes off the grid (every other one 7 ticks of 480 late, each 5
    ticks short) and in 11 loudnesses: what the tokens cannot hold."""
    from symusic import Note

    score = trio_score(seed=42, bars=6)
    for track in score.tracks:
        track.notes = [Note(note.time + (7 if index % 2 else 0), note.duration - 5, note.pitch, 23 + 9 * (index % 11))
                       for index, note in enumerate(track.notes)]
    path = folder / "off-grid.mid"
    score.dump_midi(path)
    return path


def own_notes(track, ticks_per_quarter: int) -> list[tuple[float, float, int, int]]:
    """(onset, length in quarter notes, pitch, velocity): all a note holds."""
    return sorted((note.time / ticks_per_quarter, note.duration / ticks_per_quarter, note.pitch, note.velocity)
                  for note in track.notes)


def test_accompany_gives_back_the_users_own_notes_off_the_grid_and_their_loudness(task_lm, tmp_path):
    """The tokens hold a given part on the corpus's grid and in its loudness levels; the written
    piece holds it as the user's file does: every onset, length, pitch and velocity."""
    path = off_grid_file(tmp_path)
    own = next(track for track in Score(path).tracks if track.name == "Bass")
    tpq = Score(path).ticks_per_quarter
    coded = track_named(task_lm.codec.decode(task_lm.codec.encode(path)), "Bass")
    assert [note.velocity for note in coded.notes] != [note.velocity for note in own.notes]  # the tokens' own
    [result] = task_lm.accompany(path, ["Bass"], num_samples=1, seed=0, max_new_tokens=200)
    assert own_notes(track_named(result, "Bass"), result.ticks_per_quarter) == own_notes(own, tpq)
    assert len([track for track in result.tracks if track.note_num()]) > 1, "nothing was written around it"


def test_infill_gives_back_the_users_own_notes_around_the_gap(task_lm, tmp_path):
    path = off_grid_file(tmp_path)
    given = Score(path)
    starts = bar_starts(given)
    gap_start, gap_end = starts[1], starts[3]  # bars 2-3
    [result] = task_lm.infill(path, "2-3", num_samples=1, seed=1, max_new_tokens=120)
    written_inside = 0
    for own in [track for track in given.tracks if track.note_num()]:
        back = track_named(result, own.name)
        around = [note for note in own_notes(back, result.ticks_per_quarter) if not gap_start <= note[0] < gap_end]
        assert around == [note for note in own_notes(own, given.ticks_per_quarter)
                          if not gap_start <= note[0] < gap_end], own.name
        written_inside += sum(gap_start <= note[0] < gap_end for note in own_notes(back, result.ticks_per_quarter))
    assert written_inside, "the gap was left empty"


def test_given_music_left_when_tokens_run_out_is_all_of_it(task_lm, band_file):
    """Tokens may run out anywhere, even just after a bar line opened a given bar: what is left
    of the given music, queued ids included, is written after what was sampled."""
    from midillm.decoding.generate import select_tracks

    given = select_tracks(task_lm.codec.decode(task_lm.codec.encode(band_file)), ["Bass"])
    given_bars = task_lm.codec.encode_bars(given)
    assert task_lm.codec.layout == "onsets"
    numbers = set(task_lm.codec.score_part_numbers(given))
    plan = task_lm._onset_plan(given_bars, numbers)
    every_id = [lm_id for bar in given_bars for lm_id in bar]
    assert every_id == [lm_id for head, onsets in plan.given_bars for lm_id in head + [i for onset in onsets for i in onset.ids]]
    plan.record(plan.bar_row, forced=False)  # the first bar line: its head's other ids are queued
    assert plan.queue and plan.rest_ids() == every_id[1:]
    plan.record(plan.row_of_lm_id[plan.queue.pop(0)], forced=True)
    assert plan.rest_ids() == every_id[2:]


def test_arrange_keeps_the_melody_exactly(task_lm, band_file):
    given = task_lm.codec.decode(task_lm.codec.encode(band_file))
    melody = track_named(given, "Melody")
    results = task_lm.arrange(band_file, "Instruments: Electric Bass (finger), Acoustic Guitar (steel)",
                              tracks=["Melody"], num_samples=1, seed=0, max_new_tokens=300)
    result = results[0]
    assert result.tracks[0].name == "Melody"
    assert notes_of(result.tracks[0], result.ticks_per_quarter) == notes_of(melody, given.ticks_per_quarter)


def test_task_commands_write_scores(task_bundle, band_file, tmp_path, capsys):
    assert main(["infill", str(task_bundle), "--midi", str(band_file), "--bars", "2-3",
                 "--out", str(tmp_path / "infill"), "--max-new-tokens", "100"]) == 0
    assert main(["accompany", str(task_bundle), "--midi", str(band_file), "--tracks", "Bass",
                 "--out", str(tmp_path / "accompany"), "--max-new-tokens", "200"]) == 0
    assert main(["arrange", str(task_bundle), "--midi", str(band_file), "--tracks", "Melody",
                 "--text", "Instruments: Electric Bass (finger)", "--out", str(tmp_path / "arrange"),
                 "--max-new-tokens", "200"]) == 0
    for folder in ("infill", "accompany", "arrange"):
        score = Score(str(tmp_path / folder / "sample-000.mid"))
        assert score.note_num() > 0
    assert "Bass" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, message", [
    (["infill", "--bars", "5-2"], "not a range of bars"),
    (["infill", "--bars", "0-1"], "not a range of bars"),
    (["infill", "--bars", "five"], "bars must look like 5-8"),
    (["infill", "--bars", "4-40"], "outside the piece"),
    (["accompany", "--tracks", "Soprano"], "no track named 'Soprano'"),
    (["arrange", "--tracks", "Tuba", "--text", "Instruments: Violin"], "no track named 'Tuba'"),
])
def test_bad_requests_are_one_line(task_bundle, band_file, tmp_path, capsys, arguments, message):
    command, *rest = arguments
    code = main([command, str(task_bundle), "--midi", str(band_file), "--out", str(tmp_path / "out"), *rest])
    error = capsys.readouterr().err
    assert code == 1
    assert one_error_line(error, message)


def test_not_a_midi_file_is_one_line(task_bundle, tmp_path, capsys):
    text = tmp_path / "notes.mid"
    text.write_text("not music")
    assert main(["accompany", str(task_bundle), "--midi", str(text), "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert one_error_line(error, "not a readable MIDI file")


def test_a_model_without_the_task_rows_refuses_in_one_line(task_bundle, tiny_models, band_midi_files,
                                                           tmp_path, band_file, capsys):
    from midillm.tokenization.dataset import PrepareConfig, prepare

    # prepare with the task ratios at 0 records that the rows teach continuation only.
    report = prepare(PrepareConfig(source=str(band_midi_files[0].parent), out=str(tmp_path / "data"),
                                   base_model=str(tiny_models["tied"]), vocab_size=0, seq_len=128,
                                   infill_ratio=0, accompany_ratio=0, num_workers=1), log=lambda *_: None)
    assert report["tasks"] == ["continue"]
    assert report["train_examples_by_task"]["infill"] == report["train_examples_by_task"]["accompany"] == 0
    # Such a bundle (here: the task bundle with its codec saying so) refuses each task.
    plain = tmp_path / "plain-bundle"
    shutil.copytree(task_bundle, plain)
    config = json.loads((plain / CODEC_CONFIG_FILE).read_text())
    config["tasks"] = report["tasks"]
    (plain / CODEC_CONFIG_FILE).write_text(json.dumps(config))
    lm = MidiLM.from_pretrained(plain, dtype=torch.float32)
    assert lm.tasks == ("continue",)
    with pytest.raises(TaskError, match="cannot infill"):
        lm.infill(band_file, "2-3")
    for command, extra in (("infill", ["--bars", "2-3"]), ("accompany", []),
                           ("arrange", ["--text", "Instruments: Violin"])):
        assert main([command, str(plain), "--midi", str(band_file), "--out", str(tmp_path / command), *extra]) == 1
        error = capsys.readouterr().err
        assert one_error_line(error, f"cannot {command}") and "-ratio above 0" in error



# ----------------------------------------------------------------------------- task evaluation


def two_voices(upper: list[int], lower: list[int]) -> Score:
    from symusic import Note, Track

    score = Score(480)
    for name, pitches in (("Soprano", upper), ("Bass", lower)):
        track = Track(name=name, program=0)
        for beat, pitch in enumerate(pitches):
            track.notes.append(Note(beat * 480, 480, pitch, 80))
        score.tracks.append(track)
    return score


def test_parallel_fifths_and_octaves_are_counted():
    from midillm.eval.tasks import parallel_motion

    # C5/F4 -> D5/G4: a fifth moving to a fifth in the same direction.
    assert parallel_motion(two_voices([72, 74], [65, 67])) == {"moves": 1, "parallels": 1}
    # Octaves in parallel, then contrary motion from an octave to a tenth.
    assert parallel_motion(two_voices([72, 74, 76], [60, 62, 60])) == {"moves": 2, "parallels": 1}
    # A voice that holds its note is not a move of two voices.
    assert parallel_motion(two_voices([72, 72], [65, 67])) == {"moves": 0, "parallels": 0}


def test_shuffled_control_keeps_the_melody_and_the_notes(band_file):
    import random

    from midillm.eval.tasks import shuffled_control

    score = Score(str(band_file))
    control = shuffled_control(score, random.Random(0))
    played = [track for track in score.tracks if track.note_num()]
    shuffled = [track for track in control.tracks if track.note_num()]
    assert notes_of(shuffled[0], control.ticks_per_quarter) == notes_of(played[0], score.ticks_per_quarter)
    assert [track.note_num() for track in shuffled] == [track.note_num() for track in played]
    assert any(notes_of(a, control.ticks_per_quarter) != notes_of(b, score.ticks_per_quarter)
               for a, b in zip(shuffled[1:], played[1:]))


def test_task_evaluation_reports_harmonisation_and_infill(task_lm, band_file, tmp_path):
    import math

    from midillm.eval.tasks import evaluate_tasks

    other = tmp_path / "other.mid"
    trio_score(seed=7, bars=6).dump_midi(other)
    result = evaluate_tasks(task_lm, [band_file, other], tmp_path / "tasks", max_bars=4, max_new_tokens=200,
                            log=lambda *_: None)
    assert result["pieces"] == 2
    harmonisation = result["harmonisation"]
    assert 0 <= harmonisation["sane_share"] <= 1
    assert harmonisation["bits_per_note_written_parts"] > 0 and math.isfinite(harmonisation["bits_per_note_written_parts"])
    assert set(harmonisation["voice_ranges"]) == {"Melody", "Bass", "Piano"}
    assert result["infill"]["exact_gap_share"] == 1.0
    assert result["infill"]["bits_per_note"] > 0 and math.isfinite(result["infill"]["bits_per_note"])
    assert (tmp_path / "tasks" / "tasks.json").is_file()
    assert (tmp_path / "tasks" / "harmonised-000.png").is_file()


def test_pipeline_does_the_tasks_on_given_music(task_bundle, band_file):
    from transformers import pipeline

    import midillm  # noqa: F401  (registers the task)

    pipe = pipeline("midi-generation", model=str(task_bundle))
    data = band_file.read_bytes()
    given = Score(str(band_file))
    bass = notes_of(track_named(given, "Bass"), given.ticks_per_quarter)
    accompanied = pipe(data, task="accompany", tracks=["Bass"], max_new_tokens=200)
    assert len(accompanied) == 1 and accompanied[0]["ids"] is None
    back = Score.from_midi(accompanied[0]["midi"])
    assert notes_of(track_named(back, "Bass"), back.ticks_per_quarter) == bass
    filled = pipe(str(band_file), task="infill", bars="2-3", num_samples=2, max_new_tokens=120)
    assert len(filled) == 2 and all(output["score"].note_num() > 0 for output in filled)
    arranged = pipe(data, task="arrange", text="Instruments: Violin", tracks=["Melody"], max_new_tokens=150)
    assert track_named(arranged[0]["score"], "Melody").note_num() == track_named(given, "Melody").note_num()
    with pytest.raises(ValueError, match="needs bars"):
        pipe(data, task="infill")


def test_each_named_part_keeps_the_range_the_corpus_gives_it(tiny_lm_tokenizer, bach_midi_files):
    from midillm.decoding.grammar import CorpusConstraints, MusicGrammar
    from midillm.tokenization.caption import score_caption
    from midillm.tokenization.profile import measure_corpus

    scores = [Score(str(path)) for path in bach_midi_files]
    profile = measure_corpus(scores, [score_caption(score) for score in scores])
    low, high = profile.part_ranges["Bass"]
    assert high < profile.part_ranges["Soprano"][1] and low < profile.part_ranges["Soprano"][0]
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, corpus=profile)
    grammar = MusicGrammar(codec)
    constraints = CorpusConstraints(grammar, profile, part_names=["Soprano", "Alto", "Tenor", "Bass"])
    state = constraints.start_state()
    ids = ([codec.part_lm_id(0)] + codec.lm_ids_of_base_tokens(["Bar_None", "TimeSig_4/4", "Position_0"])
           + [codec.part_lm_id(3)] + codec.lm_ids_of_base_tokens(["Bar_None", "Position_0"]))
    for lm_id in ids:
        state = constraints.advance(state, lm_id)
    mask = constraints.row_mask(state)

    def allowed(pitch):
        return bool(mask[grammar.row_of_lm_id[codec.lm_ids_of_base_tokens([f"Pitch_{pitch}"])[0]]])

    assert allowed(low) and allowed(high) and not allowed(high + 1) and not allowed(low - 1)


def test_model_card_says_which_tasks_the_model_can_do(task_bundle, tmp_path):
    from midillm.hub.card import build_model_card

    card = str(build_model_card(task_bundle))
    assert "## Work on your own music" in card and "midillm infill" in card and "task=\"accompany\"" in card
    plain = tmp_path / "plain"
    shutil.copytree(task_bundle, plain)
    config = json.loads((plain / CODEC_CONFIG_FILE).read_text())
    config["tasks"] = ["continue"]
    (plain / CODEC_CONFIG_FILE).write_text(json.dumps(config))
    assert "not trained to infill, accompany or arrange" in str(build_model_card(plain))


def test_task_likelihoods_read_the_music_in_the_key_the_model_learned(task_lm, band_file, tmp_path):
    from midillm.eval.tasks import evaluate_tasks
    from midillm.tokenization.tonality import common_tonic, estimate_key, shift_to, transposed

    assert task_lm.codec.common_key  # prepare's default: every piece moved to C major or A minor
    given = Score(str(band_file))
    tonic, minor = estimate_key(given)
    # A semitone away, on the side that keeps the move to the common key within -6..5: the
    # copy lands on the very same notes, so the model must find it exactly as likely.
    interval = 1 if shift_to(tonic, common_tonic(minor)) - 1 >= -6 else -1
    copy = tmp_path / "copy.mid"
    transposed(given, interval).dump_midi(copy)
    results = [evaluate_tasks(task_lm, [path], max_bars=4, max_new_tokens=32, log=lambda *_: None)
               for path in (band_file, copy)]
    for task, key in (("harmonisation", "bits_per_note_written_parts"), ("infill", "bits_per_note")):
        assert results[0][task][key] == pytest.approx(results[1][task][key], rel=1e-5)


def test_a_part_numbered_below_a_given_one_strikes_with_it_and_the_given_notes_stay_exact(task_lm, band_file):
    """Numbered by role, the given bass (`<Part_13>`) comes after the melody (`<Part_1>`) at each
    onset: the plan lets the model reach a given onset with its own melody note, makes the bass's
    notes there the only way on past part 13, and the bass comes back note for note."""
    from midillm.decoding.generate import select_tracks

    if task_lm.codec.part_numbering != "role":
        pytest.skip("in order the given parts come first at each onset")
    given = select_tracks(task_lm.codec.decode(task_lm.codec.encode(band_file)), ["Bass"])
    numbers = task_lm.codec.score_part_numbers(given)
    assert list(numbers) == [13]
    bars = task_lm.codec.encode_bars(given)
    plan = task_lm._onset_plan(bars, set(numbers))
    rows = task_lm.grammar.row_lm_ids
    written = [bars[0][0]]
    plan.record(plan.bar_row, forced=False)

    def write(row: int, forced: bool = False) -> None:
        written.append(int(rows[row]))
        plan.record(row, forced)
        while plan.queue:
            lm_id = plan.queue.pop(0)
            written.append(lm_id)
            plan.record(plan.row_of_lm_id[lm_id], True)

    write(plan.row_of_lm_id[plan.queue.pop(0)], forced=True)  # the first bar's metre
    struck_with_bass = 0
    while not plan.done:
        allowed = plan.allowed_rows()
        if plan.pending and not plan.pending[0].meta:
            there = allowed & (plan._row_targets() == plan.pending[0].position) & (plan.row_part == 1)
            assert there.any(), "no way to reach a given onset with a melody note"
            write(int(torch.nonzero(there)[0]))
            assert plan.at_onset and plan.at_onset[0][0] == 13
            assert not (plan.allowed_rows() & (plan._row_targets() >= 0)).any(), "time moved past the given bass"
            given_row, passing = plan.given_row()
            assert passing[plan.bar_row] and passing[given_row]
            write(given_row)
            struck_with_bass += 1
        elif plan.given_row() is not None:
            write(plan.given_row()[0])
        else:
            write(plan.bar_row if allowed[plan.bar_row] else plan.end_row)
    assert struck_with_bass == len(bars) - 1  # each bar's bass note but the first (it holds the tempo)
    ids = written + plan.rest_ids()
    score = task_lm.codec.decode([task_lm.codec.music_start_id] + ids + [task_lm.codec.music_end_id],
                                 names={1: "Melody", 13: "Bass"})
    bass, melody = track_named(score, "Bass"), track_named(score, "Melody")
    assert notes_of(bass, score.ticks_per_quarter) == notes_of(given.tracks[0], given.ticks_per_quarter)
    assert len({note.time for note in melody.notes} & {note.time for note in bass.notes}) == struck_with_bass
