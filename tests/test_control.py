"""The controls of a new piece (issue 25): one definition (`MusicRequest`'s control fields), the
same through the command, the pipeline and Python, carried by the caption, enforced by the
grammar where it can say them, and refused in one line where the model cannot meet them."""

from __future__ import annotations

import pytest
import torch
from symusic import Note, Score, Track

from midillm.decoding.request import CONTROL_NAMES, DENSITY_BIAS, KEY_BIAS, MusicRequest, TaskError
from midillm.eval.sanity import bars_written
from midillm.tokenization.caption import caption_fields


@pytest.fixture(scope="module")
def tiny_lm(tiny_bundle):
    from midillm.decoding.generate import MidiLM

    return MidiLM.from_pretrained(tiny_bundle, dtype=torch.float32)


def metres(score: Score) -> set[tuple[int, int]]:
    return {(signature.numerator, signature.denominator) for signature in score.time_signatures}


def played_parts(score: Score) -> int:
    return sum(1 for track in score.tracks if track.note_num())


# ----------------------------------------------------------------------------- the request


def test_caption_lines_are_controls_and_fields_win_over_them():
    request = MusicRequest(text="Composer: J.S. Bach\nKey: d minor\nTime signature: 3/4\nTempo: 84 BPM\n"
                                "Parts: Soprano, Bass\n")
    assert (request.key, request.time_signature, request.tempo, request.parts) == \
        ("D minor", "3/4", 84.0, ["Soprano", "Bass"])
    asked = MusicRequest(text="Key: D minor\nTempo: 84 BPM\n", key="G major", tempo=120, time_signature="4/4")
    caption = caption_fields(asked.prompt_caption(None))
    assert caption["Key"] == "G major" and caption["Tempo"] == "120 BPM" and caption["Time signature"] == "4/4"


def test_prompt_caption_carries_the_controls_in_the_caption_order():
    request = MusicRequest(time_signature="3/4", key="D minor", tempo=90, programs=[52], parts=4, bars=8)
    assert request.prompt_caption("Composer: J.S. Bach\nInstruments: 4 x Acoustic Grand Piano\n") == (
        "Composer: J.S. Bach\nKey: D minor\nTime signature: 3/4\nTempo: 90 BPM\nInstruments: 4 x Choir Aahs\n")
    # Nothing asked: the caption is left as it is (None: the model draws a training piece's caption).
    assert MusicRequest().prompt_caption("Composer: J.S. Bach\n") is None
    assert MusicRequest(key_bias=True).key_bias == KEY_BIAS


@pytest.mark.parametrize("values, message", [
    (dict(bars=0), "bars (the length of a new piece) must be a whole number of at least 1"),
    (dict(time_signature="three four"), "time_signature must look like 3/4"),
    (dict(key="H major"), "unknown key 'H major'; a key is a tonic and a mode: Cb major"),
    (dict(tempo=1000), "tempo must be between 10 and 400 BPM"),
    (dict(text="Tempo: fast\n"), "the caption's tempo must look like \"120 BPM\""),
    (dict(parts=0), "parts must be at least 1"),
    (dict(key_bias=-1.0), "key_bias (a strength) must be 0 or more"),
    (dict(registers="Bass: E2-C4"), 'registers look like "Bass=E2-C4, Soprano=C4-A5"'),
    (dict(registers="Bass=H2-C4"), 'registers look like "Bass=E2-C4, Soprano=C4-A5"'),
    (dict(registers="Bass=C4-E2"), "Bass's lowest note is above its highest"),
    (dict(task="continue", music=__file__, registers="Bass=E2-C4"), "registers: a control of a new piece"),
    (dict(task="infill", music=__file__, bars="1-2", tempo=90), "tempo: a control of a new piece"),
])
def test_bad_controls_are_one_line(values, message):
    with pytest.raises(TaskError) as error:
        MusicRequest(**values)
    assert message in str(error.value) and "\n" not in str(error.value)


# ----------------------------------------------------------------------------- by construction


def test_metre_tempo_and_length_from_the_caption_alone(tiny_lm):
    samples = tiny_lm.run(MusicRequest(text="Time signature: 3/4\nTempo: 90 BPM\n", bars=2, num_samples=3,
                                       seed=1, sampling={"max_new_tokens": 200}))
    for sample in samples:
        assert metres(sample.score) == {(3, 4)}
        assert [tempo.qpm for tempo in sample.score.tempos] == [pytest.approx(90.0)]
        if sample.ended:
            assert bars_written(sample.score) <= 2
            assert sum(token == "Bar_None" for token in tiny_lm.codec.music_tokens(sample.ids)) == 2
    assert any(sample.ended for sample in samples)


def test_asked_parts_are_the_parts_that_play(tiny_lm):
    samples = tiny_lm.run(MusicRequest(parts=2, bars=2, num_samples=3, seed=2, sampling={"max_new_tokens": 250}))
    assert any(sample.ended for sample in samples)
    for sample in samples:
        assert played_parts(sample.score) <= 2
        if sample.ended:
            assert played_parts(sample.score) == 2


def test_command_writes_the_asked_tempo_and_metre_exactly(tiny_bundle, tmp_path, capsys):
    from midillm.cli import main

    out = tmp_path / "out"
    assert main(["generate", str(tiny_bundle), "--out", str(out), "-n", "2", "--tempo", "90",
                 "--time-signature", "3/4", "--max-new-tokens", "60", "--precision", "fp32"]) == 0
    for path in sorted(out.glob("*.mid")):
        score = Score(str(path))
        # The MIDI file holds 90 BPM (the binned tempo token would give 87.4), and 3/4 throughout.
        assert [round(tempo.qpm, 2) for tempo in score.tempos] == [90.0]
        assert metres(score) == {(3, 4)}


def test_pipeline_takes_the_same_controls(tiny_bundle, monkeypatch):
    import midillm  # noqa: F401  (registers the task)
    from transformers import pipeline

    from midillm.decoding.generate import MidiLM

    asked = []
    run = MidiLM.run
    monkeypatch.setattr(MidiLM, "run", lambda self, request: asked.append(request) or run(self, request))
    pipe = pipeline("midi-generation", model=str(tiny_bundle), dtype="fp32")
    outputs = pipe("Tempo: 121 BPM\nParts: Soprano, Bass\n", time_signature="3/4", tempo=120, bars=2, num_samples=2,
                   max_new_tokens=80, seed=3, registers={"Bass": "C3-G3"}, key="D minor", key_guidance=3)
    assert asked[0].key == "D minor" and asked[0].sampling["key_guidance"] == 3
    for output in outputs:
        back = Score.from_midi(output["midi"])
        assert [round(tempo.qpm, 2) for tempo in back.tempos] == [120.0]
        assert metres(back) == {(3, 4)}
        assert all(48 <= note.pitch <= 55 for track in back.tracks[1:] for note in track.notes)


def test_registers_read_note_names_or_numbers_by_part_name_or_number():
    from midillm.decoding.request import resolve_registers

    request = MusicRequest(registers="Bass=E2-C4, 1 = 72 - 79, alto=Bb3 to F#5")
    assert request.registers == {"Bass": (40, 60), "1": (72, 79), "alto": (58, 78)}
    assert resolve_registers(request.registers, ["Soprano", "Alto", "Tenor", "Bass"], None) == [
        (72, 79), (58, 78), None, (40, 60)]
    with pytest.raises(TaskError, match="register for 'Tuba': no such part; the parts are Soprano, Bass"):
        resolve_registers({"Tuba": (30, 50)}, ["Soprano", "Bass"], None)
    assert resolve_registers({"3": (30, 50)}, [], 3) == [None, None, (30, 50)]


@pytest.mark.parametrize("constrain", [True, False])
def test_each_part_keeps_to_its_asked_register(tiny_lm, constrain):
    # A narrow register for each part, far from where the chorale voices sit on their own: the
    # soprano a fifth around G5, the bass a third around D3; with or without the corpus constraints.
    samples = tiny_lm.run(MusicRequest(text="Parts: Soprano, Bass\n", registers="Soprano=C5-G5, 2=C3-E3", bars=2,
                                       num_samples=3, seed=5, constrain=constrain,
                                       sampling={"max_new_tokens": 160}))
    written = {"Soprano": set(), "Bass": set()}
    for sample in samples:
        assert [track.name for track in sample.score.tracks if track.note_num()] in (["Soprano", "Bass"], ["Soprano"])
        for track in sample.score.tracks:
            written[track.name] |= {note.pitch for note in track.notes}
    assert written["Soprano"] and written["Soprano"] <= set(range(72, 80))
    assert written["Bass"] and written["Bass"] <= set(range(48, 53))


def test_a_part_with_a_register_is_never_a_drum_part(tiny_lm):
    """A register is a pitched part's: a part asked to play in C3-G3 but given no instrument may
    not turn out to be a drum kit, whose notes no register holds (seen once: a "Bass" of kicks and
    toms at 35-51 under the register 48-55)."""
    from midillm.decoding.grammar import CorpusConstraints

    codec = tiny_lm.codec
    if not codec.music_tokenizer.config.use_programs or "PitchDrum" not in tiny_lm.grammar.graph:
        pytest.skip("the tiny codec writes no drums")
    constraints = CorpusConstraints(tiny_lm.grammar, codec.corpus, registers=[None, (48, 55)], max_gap=None)
    drum_rows = [row for row, tokens in enumerate(constraints.row_tokens)
                 if any(token.startswith("PitchDrum_") or token == "Program_-1" for token in tokens)]
    in_register = [row for row, tokens in enumerate(constraints.row_tokens)
                   if tokens and tokens[0] in ("Program_0", "Pitch_50")]
    state = constraints.start_state()
    for lm_id in codec.lm_ids_of_base_tokens(["Bar_None", "TimeSig_4/4", "Shift_0", "Part_0", "Program_0", "Pitch_70",
                                              "Part_1"]):
        state = constraints.advance(state, lm_id)
    allowed = constraints.row_mask(state)
    assert drum_rows and not allowed[drum_rows].any()
    assert in_register and allowed[in_register].all()


# ----------------------------------------------------------------------------- what cannot be met


@pytest.mark.parametrize("arguments, message", [
    (["--time-signature", "5/4"], "time signature 5/4: this model's corpus never had it; it knows 4/4, 3/4"),
    (["--text", "Time signature: 7/8"], "time signature 7/8: this model's corpus never had it"),
    (["--bars", "0"], "bars (the length of a new piece) must be a whole number of at least 1"),
    (["--programs", "40"], "instrument Violin (program 40) is outside this model's vocabulary; it knows "),
    (["--text", "Instruments: Kazoo"], "instrument 'Kazoo' is outside this model's vocabulary; it knows "),
    (["--parts", "99"], "99 parts: this model's pieces have at most"),
    (["--text", "Parts: Soprano, Bass", "--registers", "Tuba=C2-C3"],
     "register for 'Tuba': no such part; the parts are Soprano, Bass"),
])
def test_requests_the_model_cannot_meet_are_one_line_and_exit_1(tiny_bundle, tmp_path, capsys, arguments, message):
    from midillm.cli import main

    assert main(["generate", str(tiny_bundle), "--out", str(tmp_path / "out"), "--max-new-tokens", "8",
                 *arguments]) == 1
    error = capsys.readouterr().err
    # One line, the last (the model's loading bars may come before it), and no traceback.
    last = error.strip().splitlines()[-1].split("\r")[-1]
    assert last.startswith("midillm: error:") and message in last and "Traceback" not in error
    assert not (tmp_path / "out").exists()
    if "it knows" in message and "instrument" in message:
        assert "Acoustic Grand Piano (0)" in last  # what is possible, named


# ----------------------------------------------------------------------------- the key-aware bias


def out_of_key_share(scores: list[Score], key: str) -> float:
    from midillm.decoding.grammar import scale_pitch_classes

    scale = scale_pitch_classes(key)
    pitches = [int(note.pitch) for score in scores for track in score.tracks if not track.is_drum
               for note in track.notes]
    assert len(pitches) > 50
    return sum(pitch % 12 not in scale for pitch in pitches) / len(pitches)


def test_key_bias_makes_out_of_key_notes_rare(tiny_lm):
    asked = dict(key="Eb minor", num_samples=8, seed=5, sampling={"max_new_tokens": 160})
    off = out_of_key_share([sample.score for sample in tiny_lm.run(MusicRequest(**asked))], "Eb minor")
    on = out_of_key_share([sample.score for sample in tiny_lm.run(MusicRequest(**asked, key_bias=True))], "Eb minor")
    # An almost untrained model strikes pitch classes about evenly (4 of 12 are outside the
    # scale); at the default strength, well under a tenth of its notes are.
    assert off > 0.2, off
    assert on < off / 3, (on, off)


def test_key_bias_raises_the_notes_a_key_dwells_on_in_each_row():
    """The bias counts every pitched note of a row, not only its first one."""
    from midillm.decoding.grammar import key_bias_rows

    rows = [["Pitch_62", "Duration_1.0.8"], ["Pitch_60", "Duration_1.0.8"], ["Pitch_60", "Pitch_63"],
            ["PitchDrum_60"], ["Position_4"]]
    # D is D major's tonic; C and D# lie outside its scale, which by default costs nothing.
    assert key_bias_rows(rows, "D major", 1.5).tolist() == [1.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    # A codec without the common key has its tonic to find: out-of-scale notes are lowered too.
    assert key_bias_rows(rows, "D major", 1.0, out_of_scale_share=3.0).tolist() == [1.0, -3.0, -6.0, 0.0, 0.0, 0.0]
    # E is in the scale but off the tonic triad: no bias either way; the whole triad, three times.
    assert key_bias_rows([["Pitch_64"]], "D major", 1.5).tolist() == [0.0, 0.0]
    assert key_bias_rows([["Pitch_62", "Pitch_66", "Pitch_69"]], "D major", 1.5).tolist() == [4.5, 0.0]
    # D minor's leading note (C#) is dwelt on; its major third (F#) is out of key; E is in it.
    assert key_bias_rows([["Pitch_61"], ["Pitch_66"], ["Pitch_64"]], "D minor", 1.0,
                         out_of_scale_share=3.0).tolist() == [1.0, -3.0, 0.0, 0.0]


def test_with_the_common_key_the_key_bias_leaves_chromatic_notes_as_the_model_made_them(tiny_lm):
    """The tonic is exact by construction there: the bias settles the mode and lowers no note."""
    from midillm.decoding.grammar import KEY_OUT_OF_SCALE_SHARE

    constraints = lambda: tiny_lm.constraints(controls=MusicRequest(key="A minor", key_bias=True))  # noqa: E731
    common = tiny_lm.codec.common_key
    try:
        tiny_lm.codec.common_key = True
        bias = constraints().row_bias
        assert bias.min() == 0.0 and bias.max() > 0.0
        tiny_lm.codec.common_key = False
        bias = constraints().row_bias
        assert bias.min() == -KEY_OUT_OF_SCALE_SHARE * KEY_BIAS
    finally:
        tiny_lm.codec.common_key = common


def test_key_bias_tells_a_key_from_its_relative():
    """A minor and C major share their notes: the bias must still prefer each one's own tonic triad."""
    from midillm.decoding.grammar import key_bias_rows

    a_minor_triad, c_major_triad = [["Pitch_57", "Pitch_60", "Pitch_64"]], [["Pitch_60", "Pitch_64", "Pitch_67"]]
    assert key_bias_rows(a_minor_triad, "A minor", 1.5)[0] > key_bias_rows(c_major_triad, "A minor", 1.5)[0]
    assert key_bias_rows(c_major_triad, "C major", 1.5)[0] > key_bias_rows(a_minor_triad, "C major", 1.5)[0]


def test_guidance_runs_the_model_on_the_caption_in_the_relative_key_and_takes_its_tokens(tiny_lm, monkeypatch):
    """Guidance's negative prompt is the asked key's relative (the key the model drifts to); its
    rows follow the sampled music token for token, and the asked controls still hold."""
    batches = []
    step = tiny_lm._decoder_step

    def recorded(input_ids, cache, *args, **kwargs):
        batches.append(input_ids.clone())
        return step(input_ids, cache, *args, **kwargs)

    monkeypatch.setattr(tiny_lm, "_decoder_step", recorded)
    # A short caption: the tiny model's rows leave a caption few tokens, and the Key line must fit.
    asked = dict(text="Time signature: 4/4\n", key="D minor", bars=2, num_samples=2, seed=3)
    samples = tiny_lm.run(MusicRequest(**asked, sampling={"max_new_tokens": 200, "key_guidance": 4.0}))
    prompts = [tiny_lm.codec.lm_tokenizer.decode(row) for row in batches[0]]
    key_lines = [caption_fields(prompt[prompt.index("Key:"):]).get("Key") for prompt in prompts]
    asked_key = key_lines[0]
    # The model is asked in its common key when it has one (D minor -> A minor), else in D minor.
    assert asked_key in ("A minor", "D minor")
    assert key_lines == [asked_key] * 2 + [{"A minor": "C major", "D minor": "F major"}[asked_key]] * 2
    for later in batches[1:]:
        assert later.shape[0] == 4 and torch.equal(later[:2, -1], later[2:, -1])
    for sample in samples:
        assert metres(sample.score) and sample.score.note_num() > 0
        if sample.ended:
            assert bars_written(sample.score) <= 2
    # Off: one row a sample; a caption without a key has no negative; a drawn caption's key
    # (a new piece asked nothing) is not guided.
    assert tiny_lm.guidance_text("Time signature: 3/4\n") is None
    batches.clear()
    tiny_lm.run(MusicRequest(bars=2, num_samples=2, seed=3, sampling={"max_new_tokens": 20}))
    assert batches[0].shape[0] == 2
    batches.clear()
    tiny_lm.run(MusicRequest(**asked, sampling={"max_new_tokens": 20, "key_guidance": 1.0}))
    assert batches[0].shape[0] == 2


def test_key_guidance_below_one_is_one_line():
    with pytest.raises(ValueError, match="key_guidance must be 1 \\(off\\) or more"):
        MusicRequest(sampling={"key_guidance": 0.5})


@pytest.mark.parametrize("parallels_per_move, strict", [(0.01, True), (0.2, False), (None, False)])
def test_strict_voice_leading_is_the_corpus_habit_unless_asked(tiny_lm, monkeypatch, parallels_per_move, strict):
    """Left unsaid, strict voice leading is on where the corpus avoids parallels; said, it is what was said."""
    import dataclasses

    lm = tiny_lm
    monkeypatch.setattr(lm.codec, "corpus", dataclasses.replace(lm.codec.corpus, parallels_per_move=parallels_per_move,
                                                                parallels_by_parts={}))
    assert lm.codec.layout == "onsets" and lm.codec.parts  # where the rules apply
    assert lm.constraints().strict_voice_leading == strict
    assert lm.constraints(strict_voice_leading=True).strict_voice_leading
    assert not lm.constraints(strict_voice_leading=False).strict_voice_leading


def test_strict_voice_leading_is_the_habit_of_the_corpus_pieces_with_as_many_parts(tiny_lm, monkeypatch):
    """The chorales' four voices avoid parallels, their eight-part settings (trumpets and strings
    doubling the voices) do not: a request is held to the habit of pieces with its count of
    pitched parts (drums are no voice), a count measured on too few pieces to those of the next
    counts up, a count above all measured to the whole corpus's; never strict where the corpus as
    a whole does not avoid parallels."""
    import dataclasses

    monkeypatch.setattr(tiny_lm.codec, "corpus", dataclasses.replace(
        tiny_lm.codec.corpus, parallels_per_move=0.02,
        parallels_by_parts={4: [32, 3000, 6], 8: [12, 2000, 120], 9: [1, 200, 0], 12: [2, 300, 60]}))

    def strict(parts: int, drums: bool = False) -> bool:
        programs = [0] * parts + ([-1] if drums else [])
        return tiny_lm.constraints("Key: C major", programs=programs).strict_voice_leading

    assert strict(4) and strict(4, drums=True)
    assert not strict(8)
    assert not strict(6)  # not measured: the pieces of the next counts up (8)
    assert not strict(9)  # one piece: with the next counts up
    assert strict(16)  # above every count measured: the whole corpus's habit
    # A count can only take strictness away: a corpus that does not avoid parallels as a whole
    # (a band) is never strict by default, whatever its pieces of four parts do.
    monkeypatch.setattr(tiny_lm.codec, "corpus", dataclasses.replace(tiny_lm.codec.corpus, parallels_per_move=0.4))
    assert not strict(4)
    assert tiny_lm.constraints("Key: C major", programs=[0] * 8, strict_voice_leading=True).strict_voice_leading
    # Given music: the parts of the finished piece count.
    melody = Score(480)
    melody.tracks.append(Track(program=0, notes=[Note(0, 480, 72, 80), Note(480, 480, 74, 80)]))
    request = MusicRequest("accompany", b"", tracks=["Soprano"])
    monkeypatch.setattr(tiny_lm.codec, "corpus", dataclasses.replace(
        tiny_lm.codec.corpus, parallels_per_move=0.02, part_ranges={name: [36, 70] for name in "ABCDEFGH"}))
    assert tiny_lm._strict_for_given(request, melody, list("ABC"))
    assert not tiny_lm._strict_for_given(request, melody, list("ABCDEFG"))


def test_strict_voice_leading_on_given_music_only_where_its_rules_can_hold(tiny_lm, monkeypatch):
    """The rules read the parts from the top voice down: a soprano harmonised below keeps them,
    a bass accompanied above, or a piece listing its bass first, would break them."""
    import dataclasses

    monkeypatch.setattr(tiny_lm.codec, "corpus", dataclasses.replace(
        tiny_lm.codec.corpus, parallels_per_move=0.01,
        part_ranges={"Soprano": [60, 81], "Alto": [53, 74], "Tenor": [48, 69], "Bass": [36, 62]}))

    def given(*pitches: int) -> Score:
        score = Score(480)
        for pitch in pitches:
            score.tracks.append(Track(program=0, notes=[Note(0, 480, pitch, 80), Note(480, 480, pitch + 2, 80)]))
        return score

    default = MusicRequest("accompany", b"", tracks=["Soprano"])
    assert tiny_lm._strict_for_given(default, given(70), ["Alto", "Tenor", "Bass"])
    assert not tiny_lm._strict_for_given(default, given(45), ["Soprano", "Alto"])  # a bass under the melody
    assert not tiny_lm._strict_for_given(default, given(70), ["Descant"])  # a part the corpus never had
    assert tiny_lm._strict_for_given(default, given(72, 64, 57, 45))  # an infill's piece, top voice first
    assert not tiny_lm._strict_for_given(default, given(45, 72))  # its bass listed first
    asked = MusicRequest("accompany", b"", tracks=["Bass"], strict_voice_leading=True)
    assert tiny_lm._strict_for_given(asked, given(45), ["Soprano"])  # what is asked wins


def test_strict_voice_leading_flag_says_on_off_or_nothing():
    from midillm.cli import build_parser

    parse = lambda *flags: build_parser().parse_args(["generate", "m", "--out", "o", *flags])  # noqa: E731
    assert parse().strict_voice_leading is None
    assert parse("--strict-voice-leading").strict_voice_leading is True
    assert parse("--no-strict-voice-leading").strict_voice_leading is False


def test_density_is_a_third_of_the_corpus_and_a_caption_line(bach_midi_files):
    """A piece's Density is its notes per beat per part against the thirds of its corpus: the
    same chorale in eighths is dense, in whole notes sparse; the request reads and writes the line."""
    from symusic import Score as MidiScore

    from midillm.tokenization.profile import density_edges, measure_corpus

    scores = [MidiScore(str(path)) for path in bach_midi_files[:12]]
    profile = measure_corpus(scores, [f"Title: {index}\n" for index in range(len(scores))])
    low, high = profile.density_edges
    # The profile keeps the pieces' captions (titles left out, counted) with their Density lines: a third each.
    assert {caption_fields(caption)["Density"]: count for caption, count in profile.captions.items()} == \
        {"sparse": 4, "medium": 4, "dense": 4}
    assert 0.5 < low < high < 2.5  # chorale parts: about a note a beat
    assert density_edges([1.0] * 6) == []  # pieces all alike: no Density line says anything
    assert sorted(profile.density_of(score) for score in scores).count("medium") == 4
    chorale = scores[0]
    faster, slower = chorale.copy(), chorale.copy()
    for track in faster.tracks:  # each note split into two of half the length
        track.notes = [Note(note.time + half, note.duration // 2, note.pitch, note.velocity)
                       for note in track.notes for half in (0, note.duration // 2)]
    for track in slower.tracks:  # every fourth note held four times as long
        track.notes = [Note(note.time, note.duration * 4, note.pitch, note.velocity)
                       for index, note in enumerate(track.notes) if index % 4 == 0]
    assert profile.density_of(faster) == "dense" and profile.density_of(slower) == "sparse"
    request = MusicRequest(text="Parts: Soprano, Alto\nDensity: Dense\n")
    assert request.density == "dense"
    assert caption_fields(MusicRequest(density="sparse").prompt_caption("Parts: Soprano\n"))["Density"] == "sparse"
    with pytest.raises(TaskError, match="density is one of sparse, medium, dense"):
        MusicRequest(density="busy")


def test_density_on_a_model_whose_captions_never_said_it_is_one_line(tiny_lm, monkeypatch):
    import dataclasses

    monkeypatch.setattr(tiny_lm.codec, "corpus", dataclasses.replace(tiny_lm.codec.corpus, density_edges=[]))
    with pytest.raises(TaskError, match="density: this model's captions never said it"):
        tiny_lm.run(MusicRequest(density="dense", sampling={"max_new_tokens": 8}))
    with pytest.raises(TaskError, match="density: this model's captions never said it"):
        tiny_lm.generate(density="dense", max_new_tokens=8)


def test_every_control_is_a_flag_of_generate():
    from midillm.cli import build_parser

    arguments = build_parser().parse_args(["generate", "m", "--out", "o", "--key", "D minor", "--time-signature",
                                           "3/4", "--tempo", "90", "--parts", "4", "--programs", "0",
                                           "--bars", "8", "--density", "dense", "--key-bias", "--density-bias",
                                           "--registers", "Bass=E2-C4"])
    assert {name: getattr(arguments, name) for name in CONTROL_NAMES} == {
        "bars": 8, "programs": "0", "time_signature": "3/4", "tempo": 90.0, "key": "D minor", "parts": "4",
        "density": "dense", "key_bias": KEY_BIAS, "density_bias": DENSITY_BIAS, "registers": "Bass=E2-C4"}


def test_density_bias_moves_a_piece_sparser_than_asked_on_sooner(tiny_lm):
    """Asked dense, two notes in three beats so far: a shift of a beat loses more than one of half
    a beat, a note at this onset nothing. Asked sparse, four parts on every eighth: the reverse."""
    from midillm.decoding.grammar import CorpusConstraints

    import dataclasses

    codec, grammar = tiny_lm.codec, tiny_lm.grammar
    beat = codec.music_tokenizer.config.max_num_pos_per_beat
    # The corpus's thirds of notes per beat per part: sparse steers toward 0.5, dense toward 2.0.
    profile = dataclasses.replace(codec.corpus, density_edges=[1.0, 1.5])

    def row(tokens):
        return grammar.row_of_lm_id[codec.lm_ids_of_base_tokens(tokens)[0]]

    def bias_after(density, tokens):
        constraints = CorpusConstraints(grammar, profile, density=density, density_bias=DENSITY_BIAS)
        state = constraints.start_state()
        for lm_id in codec.lm_ids_of_base_tokens(tokens):
            state = constraints.advance(state, lm_id)
        return constraints.row_bias_for(state)

    sparse_so_far = bias_after("dense", ["Bar_None", "TimeSig_4/4", "Shift_0", "Part_0", "Pitch_67",
                                         f"Shift_{3 * beat}", "Part_0", "Pitch_69"])
    half_beat, one_beat, note = row([f"Shift_{beat // 2}"]), row([f"Shift_{beat}"]), row(["Pitch_60"])
    assert sparse_so_far[one_beat] < sparse_so_far[half_beat] < 0 == sparse_so_far[note]
    # 0.67 notes a beat asked 2.0, more than a bin (0.5) off: the whole bias for each beat skipped.
    assert sparse_so_far[one_beat] == pytest.approx(-DENSITY_BIAS)
    eighths = [token for onset in range(4) for token in
               [f"Shift_{beat // 2 if onset else 0}", "Part_0", "Pitch_72", "Part_1", "Pitch_67", "Part_2", "Pitch_64",
                "Part_3", "Pitch_48"]]
    busy_so_far = bias_after("sparse", ["Bar_None", "TimeSig_4/4"] + eighths[:-8] + eighths[-8:])
    assert busy_so_far[one_beat] > busy_so_far[half_beat] > 0 == busy_so_far[note]
    with pytest.raises(TaskError, match="density-aware bias needs a density"):
        MusicRequest(density_bias=True)
