"""Sampling: every sample decodes without token errors, prompts are kept, settings are checked."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from midillm import MusicCodec
from midillm.decoding.generate import MidiLM
from midillm.decoding.request import SamplingSettings
from midillm.tokenization.roundtrip import note_keys


@pytest.fixture(scope="module")
def codec(tiny_lm_tokenizer_path, bach_midi_files):
    from transformers import AutoTokenizer

    codec = MusicCodec.create(lm_tokenizer=AutoTokenizer.from_pretrained(tiny_lm_tokenizer_path))
    codec.train_compounds(bach_midi_files[:20])
    return codec


@pytest.fixture(scope="module")
def untrained_lm(codec):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(codec.lm_tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=128)
    return MidiLM(LlamaForCausalLM(config), codec, dtype=torch.float32)


def token_errors(codec, ids):
    return codec.token_errors(ids)


def test_twenty_untrained_samples_all_decode_without_token_errors(untrained_lm):
    samples = untrained_lm.generate_ids(num_samples=20, settings=SamplingSettings(max_new_tokens=150), seed=3)
    assert len(samples) == 20
    for ids, record in zip(samples, untrained_lm.last_generation):
        assert token_errors(untrained_lm.codec, ids) == 0
        # Every note the model wrote is in the score: one per Pitch token, but for a last
        # note cut by the token budget before its Duration.
        tokens = untrained_lm.codec.music_tokens(ids)
        written = sum(token.split("_")[0] in ("Pitch", "PitchDrum") for token in tokens)
        assert written - (0 if record["ended"] else 1) <= untrained_lm.codec.decode(ids).note_num() <= written
        # As a new piece, one the budget cut keeps its whole bars: the notes before its last bar
        # line (all of them with fewer than two).
        bar_lines = [index for index, token in enumerate(tokens) if token == "Bar_None"]
        notes_before = [token.split("_")[0] in ("Pitch", "PitchDrum") for token in tokens[:bar_lines[-1]]] \
            if len(bar_lines) > 1 else []
        decoded = untrained_lm.codec.decode(ids, whole_bars=True)
        if record["ended"] or not any(notes_before):
            written = sum(token.split("_")[0] in ("Pitch", "PitchDrum") for token in tokens)
            assert written - (0 if record["ended"] else 1) <= decoded.note_num() <= written
        else:
            assert decoded.note_num() == sum(notes_before)
            # Nothing sounds past the last whole bar's line.
            from midillm.tokenization.metre import end_of_bars

            metres = [(signature.time, signature.numerator, signature.denominator)
                      for signature in decoded.time_signatures]
            bar_end = end_of_bars(metres, decoded.ticks_per_quarter, len(bar_lines) - 1)
            assert max(note.time + note.duration for track in decoded.tracks for note in track.notes) <= bar_end
    assert sum(untrained_lm.codec.decode(ids).note_num() > 0 for ids in samples) >= 15


def test_generation_past_the_context_slides_the_window(untrained_lm):
    # Context 128, 300 new tokens: the window slides at least twice.
    [ids] = untrained_lm.generate_ids(settings=SamplingSettings(max_new_tokens=300), seed=1)
    assert token_errors(untrained_lm.codec, ids) == 0


def test_same_seed_same_samples_other_seed_other_samples(untrained_lm):
    settings = SamplingSettings(max_new_tokens=40)
    first = untrained_lm.generate_ids(num_samples=2, settings=settings, seed=5)
    again = untrained_lm.generate_ids(num_samples=2, settings=settings, seed=5)
    other = untrained_lm.generate_ids(num_samples=2, settings=settings, seed=6)
    assert first == again
    assert first != other and first[0] != first[1]


def test_continuation_starts_with_the_prompt_unchanged(untrained_lm, bach_midi_files):
    from symusic import Score

    codec = untrained_lm.codec
    prompt = Score(str(bach_midi_files[3]))
    [ids] = untrained_lm.generate_ids(prompt=prompt, settings=SamplingSettings(max_new_tokens=60), seed=2)
    expected = note_keys(codec.music_tokenizer.preprocess_score(prompt.copy()))
    output = note_keys(codec.decode(ids))
    assert not (expected - output)  # every prompt note is there, after quantisation
    prompt_ids = untrained_lm.prompt_ids(prompt)
    assert ids[:len(prompt_ids)] == prompt_ids


def test_caption_prompt_and_instrument_restriction(untrained_lm):
    samples = untrained_lm.generate_ids(num_samples=3, text="Composer: J.S. Bach", programs=[40],
                                        settings=SamplingSettings(max_new_tokens=120), seed=0)
    for ids in samples:
        score = untrained_lm.codec.decode(ids)
        assert {track.program for track in score.tracks if track.note_num()} <= {40}
        assert untrained_lm.codec.lm_tokenizer.decode(ids[:ids.index(untrained_lm.codec.music_start_id)]).startswith("Composer")


@pytest.mark.parametrize("settings, message", [
    (dict(temperature=-1.0), "temperature"), (dict(top_p=0.0), "top_p"), (dict(top_k=-2), "top_k"),
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(min_p=1.5), "min_p"),
])
def test_bad_sampling_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        SamplingSettings(**settings)


def test_missing_prompt_file_is_reported(untrained_lm, tmp_path):
    with pytest.raises(FileNotFoundError, match="file not found"):
        untrained_lm.generate_ids(prompt=tmp_path / "nope.mid")


def test_folder_that_is_not_a_bundle_is_reported(tmp_path):
    from midillm.model.bundle import BundleError

    with pytest.raises(BundleError, match="not a midillm bundle"):
        MidiLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("arguments, message", [
    (["--temperature", "-1"], "temperature must be above 0"),
    (["--formats", "mid,mp3"], "unknown export format 'mp3'"),
    (["--prompt", "missing.mid"], "prompt file not found"),
    ([], "not a midillm bundle"),
])
def test_generate_command_rejects_bad_arguments_in_one_line(tmp_path, capsys, arguments, message):
    from midillm.cli import main

    assert main(["generate", str(tmp_path), "--out", str(tmp_path / "out"), *arguments]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("midillm: error:") and message in error and "\n" not in error


def test_forced_time_signature_and_tempo_open_the_piece(untrained_lm):
    samples = untrained_lm.generate(num_samples=2, time_signature="3/4", tempo=90, max_new_tokens=80, seed=4)
    for score in samples:
        assert (score.time_signatures[0].numerator, score.time_signatures[0].denominator) == (3, 4)
        assert abs(score.tempos[0].qpm - 90) < 8


def test_unknown_time_signature_is_refused(untrained_lm):
    with pytest.raises(ValueError, match="not in the codec's vocabulary"):
        untrained_lm.generate(time_signature="13/7", max_new_tokens=4)


@pytest.fixture(scope="module")
def tiny_lm(tiny_bundle):
    """The shared bundle loaded once in fp32, for the tests that sample from it or read it; the
    tests about loading itself (precisions, two loads giving the same tokens) load their own."""
    return MidiLM.from_pretrained(tiny_bundle, dtype=torch.float32)


def test_twenty_samples_from_a_trained_bundle_all_decode_and_stay_in_the_corpus(tiny_lm):
    from test_structure import assert_sane_structure

    model = tiny_lm
    corpus = model.codec.corpus
    samples = model.generate_ids(num_samples=20, settings=SamplingSettings(max_new_tokens=120), seed=0)
    # Prompted as in training: a training piece's caption, the one seed 0 draws (cut as training
    # rows cut it), then <music>.
    prompt = model.prompt_ids()
    assert all(ids[:len(prompt)] == prompt for ids in samples)
    caption = model.codec.lm_tokenizer.decode(prompt[:-1]).strip()
    assert caption and model.default_text(None, seed=0) in corpus.captions
    assert model.default_text(None, seed=0).startswith(caption)
    for ids in samples:
        assert token_errors(model.codec, ids) == 0
        score = model.codec.decode(ids)
        assert score.note_num() > 0
        assert_sane_structure(score, corpus.max_notes_per_onset, corpus.program_list, corpus.max_unison)


def test_saved_bundle_gives_the_same_tokens_for_the_same_seed(tiny_bundle):
    first = MidiLM.from_pretrained(tiny_bundle, dtype=torch.float32)
    again = MidiLM.from_pretrained(tiny_bundle, dtype=torch.float32)
    settings = SamplingSettings(max_new_tokens=60)
    samples = first.generate_ids(3, settings=settings, seed=11)
    assert samples == again.generate_ids(3, settings=settings, seed=11)
    assert samples != again.generate_ids(3, settings=settings, seed=12)


def test_generate_command_writes_every_format(tiny_bundle, tmp_path, capsys):
    from symusic import Score

    from midillm.cli import main

    out = tmp_path / "samples"
    assert main(["generate", str(tiny_bundle), "--out", str(out), "-n", "2", "--max-new-tokens", "80",
                 "--formats", "mid,musicxml,wav,png"]) == 0
    for index in range(2):
        for suffix in ("mid", "musicxml", "wav", "png"):
            assert (out / f"sample-{index:03d}.{suffix}").is_file()
        assert Score(str(out / f"sample-{index:03d}.mid")).note_num() > 0


# ----------------------------------------------------------------------------- inference precision


def test_cpu_default_gives_the_decoder_layers_int8_weights_and_leaves_the_rest(tiny_bundle, tiny_lm, monkeypatch):
    from torch import nn

    from midillm.decoding.precision import Int8Linear, default_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_precision() == "int8"
    lm = MidiLM.from_pretrained(tiny_bundle)
    reference = tiny_lm
    assert lm.precision == "int8" and reference.precision == "fp32"
    layers, reference_layers = lm.model.get_decoder().layers, reference.model.get_decoder().layers
    # Every Linear of the decoder layers is int8 (q, k, v, o, gate, up, down), none is left float.
    quantized = {name: module for name, module in layers.named_modules() if isinstance(module, Int8Linear)}
    linears = {name: module for name, module in reference_layers.named_modules() if isinstance(module, nn.Linear)}
    assert quantized.keys() == linears.keys() and len(quantized) == 7 * len(layers)
    assert not any(isinstance(module, nn.Linear) for module in layers.modules())
    for name, module in quantized.items():
        assert module.weight_int8.dtype == torch.int8 and module.scale.shape == (module.out_features,)
        # Per output channel: the rounding error is at most half a step of the channel's own scale.
        error = (module.dequantized() - linears[name].weight).abs()
        assert (error <= module.scale[:, None] / 2 + 1e-7).all()
    # The embeddings, the norms and the output head (its music rows) are fp32 and untouched.
    assert torch.equal(lm._head(), reference._head()) and lm._head().dtype == torch.float32
    assert isinstance(lm.model.get_output_embeddings(), nn.Linear)
    float_state = {name: tensor for name, tensor in lm.model.state_dict().items()
                   if not name.endswith(("weight_int8", "scale"))}
    reference_state = reference.model.state_dict()
    assert float_state and all(torch.equal(tensor, reference_state[name]) for name, tensor in float_state.items())


@pytest.mark.parametrize("num_samples", [3, 10], ids=["int8-kernel", "widened"])
def test_int8_samples_decode_and_stay_in_the_corpus(tiny_bundle, num_samples):
    """Up to 8 rows the int8 kernel runs; above it, weights widened for the call (then dropped)."""
    from test_structure import assert_sane_structure

    from midillm.decoding.precision import Int8Linear

    lm = MidiLM.from_pretrained(tiny_bundle, dtype="int8")
    corpus = lm.codec.corpus
    samples = lm.generate_ids(num_samples, settings=SamplingSettings(max_new_tokens=120), seed=0)
    assert samples == lm.generate_ids(num_samples, settings=SamplingSettings(max_new_tokens=120), seed=0)
    for ids in samples:
        assert token_errors(lm.codec, ids) == 0
        score = lm.codec.decode(ids)
        assert score.note_num() > 0
        assert_sane_structure(score, corpus.max_notes_per_onset, corpus.program_list, corpus.max_unison)
    assert all(module.wide is None for module in lm.model.modules() if isinstance(module, Int8Linear))


@pytest.mark.parametrize("dtype, name, parameter_dtype", [
    (torch.float32, "fp32", torch.float32), ("fp32", "fp32", torch.float32), ("float32", "fp32", torch.float32),
    ("bf16", "bf16", torch.bfloat16), (torch.bfloat16, "bf16", torch.bfloat16)])
def test_explicit_float_precisions_load_plain_float_models(tiny_bundle, dtype, name, parameter_dtype):
    from torch import nn

    from midillm.decoding.precision import Int8Linear

    lm = MidiLM.from_pretrained(tiny_bundle, dtype=dtype)
    assert lm.precision == name
    assert not any(isinstance(module, Int8Linear) for module in lm.model.modules())
    assert all(module.weight.dtype == parameter_dtype for module in lm.model.modules() if isinstance(module, nn.Linear))
    [ids] = lm.generate_ids(settings=SamplingSettings(max_new_tokens=40), seed=0)
    assert token_errors(lm.codec, ids) == 0 and lm.codec.decode(ids).note_num() > 0


def test_an_unknown_precision_is_one_line(tiny_bundle, tmp_path, capsys):
    from midillm.cli import main

    with pytest.raises(ValueError, match="precision must be auto or one of fp32, bf16, fp16, int8, not 'int4'"):
        MidiLM.from_pretrained(tiny_bundle, dtype="int4")
    with pytest.raises(SystemExit):
        main(["generate", str(tiny_bundle), "--out", str(tmp_path), "--precision", "int4"])
    assert "invalid choice: 'int4'" in capsys.readouterr().err


def test_generate_command_takes_a_precision(tiny_bundle, tmp_path, capsys, monkeypatch):
    from midillm.cli import main

    loaded = []
    original = MidiLM.from_pretrained.__func__
    monkeypatch.setattr(MidiLM, "from_pretrained", classmethod(
        lambda cls, path, dtype="auto": loaded.append(original(cls, path, dtype)) or loaded[-1]))
    assert main(["generate", str(tiny_bundle), "--out", str(tmp_path), "-n", "1", "--max-new-tokens", "30",
                 "--precision", "fp32"]) == 0
    assert [lm.precision for lm in loaded] == ["fp32"]
    assert (tmp_path / "sample-000.mid").is_file()


# ----------------------------------------------------------------------------- generation = training


def training_time_model(bundle):
    """The model as `midillm train` builds it (base + described new rows + LoRA, music-only
    head), with the bundle's adapter loaded by PEFT, unmerged."""
    import json

    from peft import PeftModel

    from midillm.model.runtime import MusicLM, add_music_tokens, load_base_model

    codec = MusicCodec.from_pretrained(bundle)
    base = load_base_model(json.loads((bundle / "adapter_config.json").read_text())["base_model_name_or_path"])
    add_music_tokens(base, codec)
    peft_model = PeftModel.from_pretrained(base, bundle)
    return MusicLM(peft_model, codec.music_lm_ids, len(codec.lm_tokenizer), music_only_head=True).eval()


def real_row(codec, seq_len: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The longest chunk of a piece exactly as `prepare` cuts it for a training row (caption,
    `<music>`, bars of music): (ids, labels, length of caption + `<music>`)."""
    from conftest import make_band_score
    from midillm.tokenization.rows import chunk_piece

    score = make_band_score(seed=42, bars=6)
    ids, head = max(chunk_piece(codec.caption_ids(score), codec.encode_bars(score), codec.music_start_id,
                                codec.music_end_id, seq_len), key=lambda chunk: len(chunk[0]))
    labels = [-100] * head + ids[head:]
    return torch.tensor([ids]), torch.tensor([labels]), head


def test_generation_prompt_is_how_training_rows_start(tiny_lm):
    from conftest import make_band_score
    from midillm.tokenization.rows import chunk_piece

    lm = tiny_lm
    caption = lm.default_text(None)
    assert caption
    bars = lm.codec.encode_bars(make_band_score(seed=0, bars=6))
    [(row, head), *_] = chunk_piece(lm.codec.lm_tokenizer(caption, add_special_tokens=False).input_ids, bars,
                                    lm.codec.music_start_id, lm.codec.music_end_id, lm.context_length)
    # With no text, MidiLM prompts with a training piece's caption, cut as training cuts it.
    assert lm.prompt_ids() == row[:head]


@pytest.fixture(scope="module")
def training_model(tiny_bundle):
    """Built once for the three precisions compared with it; only read (the adapter is switched
    off inside a context that switches it back on)."""
    return training_time_model(tiny_bundle)


def training_probabilities(training, ids: torch.Tensor) -> torch.Tensor:
    """Next-token probabilities over the music rows (`training.music_rows` order), per position."""
    with torch.no_grad():
        hidden = training.decoder_hidden_states(ids)[0]
        logits = hidden @ training.music_head_weight().to(hidden.dtype).T
    return torch.softmax(logits.float(), dim=-1)


def cached_probabilities(lm: MidiLM, ids: torch.Tensor, head: int) -> torch.Tensor:
    """MidiLM's next-token probabilities over its rows, computed as `generate_ids` does: the
    prompt in one pass, then one id at a time through the KV cache, mask and positions given."""
    rows = []
    with torch.inference_mode():
        weight = lm._head()
        hidden, cache = lm._decoder_step(ids[:, :head], None)
        rows.append(hidden)
        attention = torch.ones((1, head), dtype=torch.long)
        for position in range(head, ids.shape[1]):
            attention = torch.cat([attention, torch.ones((1, 1), dtype=torch.long)], dim=1)
            hidden, cache = lm._decoder_step(ids[:, position:position + 1], cache, attention,
                                             torch.tensor([[position]]))
            rows.append(hidden)
        logits = (torch.cat(rows).to(weight.dtype) @ weight.T).float()
    return torch.softmax(logits, dim=-1)


# bf16: measured 4e-4 on the tiny model, int8 weights 2e-4, against 5e-2 for the adapter's own effect.
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 5e-3), ("int8", 5e-3)],
                         ids=["fp32", "bf16", "int8"])
def test_generation_model_gives_the_training_distribution(tiny_bundle, training_model, dtype, tolerance):
    training = training_model
    lm = MidiLM.from_pretrained(tiny_bundle, dtype=dtype)
    assert lm.precision == ("int8" if dtype == "int8" else {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype])
    ids, labels, head = real_row(lm.codec, lm.context_length)
    assert ids.shape[1] > 3 * lm.context_length // 4  # most of a training-length row: one bar of six parts

    expected = training_probabilities(training, ids)[head - 1:]
    # The probability that MidiLM samples each LM id, in the training head's order (a row that
    # appeared twice in MidiLM's head would be sampled with both rows' mass).
    assert set(lm.rows.tolist()) == set(training.music_rows.tolist())
    got = torch.zeros_like(expected).index_add_(1, training.row_of[lm.rows], cached_probabilities(lm, ids, head))
    difference = (got - expected).abs().max(dim=0).values
    differing = {lm.codec.lm_tokenizer.convert_ids_to_tokens(int(training.music_rows[column])): round(float(value), 4)
                 for column, value in enumerate(difference) if value > tolerance}
    assert not differing, f"next-token probabilities differ (max abs difference per token): {differing}"

    # The loss that training minimises is the NLL of these very probabilities.
    row_nll, count = training(ids, labels)
    targets = training.row_of[ids[0, head:]]
    nll = -torch.log(got[torch.arange(len(targets)), targets].double()).sum()
    assert count.item() == len(targets)
    assert abs(nll.item() - row_nll.item()) <= (1e-3 if dtype == torch.float32 else 0.05) * len(targets)

    # The comparison has teeth: without the adapter the distribution is far from MidiLM's.
    with training.peft_model.disable_adapter():
        base = training_probabilities(training, ids)[head - 1:]
    assert (base - expected).abs().max() > 5 * (got - expected).abs().max()


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 5e-3)],
                         ids=["fp32", "bf16"])
def test_cached_steps_and_padded_windows_equal_a_full_forward_pass(tiny_bundle, dtype, tolerance):
    from conftest import make_band_score

    lm = MidiLM.from_pretrained(tiny_bundle, dtype=dtype)
    ids, _, head = real_row(lm.codec, lm.context_length)
    decoder = lm.model.get_decoder()
    weight = lm._head()

    def probabilities(hidden):
        return torch.softmax((hidden.to(weight.dtype) @ weight.T).float(), dim=-1)

    with torch.inference_mode():
        full = probabilities(decoder(input_ids=ids).last_hidden_state[0, head - 1:])
    stepped = cached_probabilities(lm, ids, head)
    assert (stepped - full).abs().max() <= tolerance

    # Past the context, `_slide_window` restarts rows of different lengths left-padded in one
    # batch; each row must see exactly what it would see alone.
    # A sparse texture (bass and strings) so that the recent music holds bar lines.
    sparse = make_band_score(seed=43, bars=12)
    sparse.tracks = [track for track in sparse.tracks if track.program in (33, 48)]
    music = lm.codec.encode(sparse)
    music = music[music.index(lm.codec.music_start_id) + 1:]
    prompt = ids[0, :head].tolist()
    length = ids.shape[1]
    # The same music, the second row shifted by a few tokens: its bar lines fall elsewhere.
    sequences = torch.tensor([prompt + music[:length - head], prompt + music[7:7 + length - head]])
    with torch.inference_mode():
        hidden, cache, attention, next_position = lm._slide_window(sequences, [prompt, prompt], [0, 0])
        lengths = attention.sum(dim=1).tolist()
        assert lengths[0] != lengths[1]  # padding is exercised
        windows = [row[:head] + row[len(row) - (length - head):] for row, length in zip(sequences.tolist(), lengths)]
        follow = [lm.grammar.row_lm_ids[0], lm.grammar.row_lm_ids[1]]
        attention = torch.cat([attention, torch.ones((2, 1), dtype=attention.dtype)], dim=1)
        after, _ = lm._decoder_step(torch.tensor(follow)[:, None], cache, attention, next_position[:, None])
        for row, window in enumerate(windows):
            alone = decoder(input_ids=torch.tensor([window + [follow[row]]])).last_hidden_state[0]
            assert (probabilities(hidden[row]) - probabilities(alone[-2])).abs().max() <= tolerance
            assert (probabilities(after[row]) - probabilities(alone[-1])).abs().max() <= tolerance


def test_loading_a_bundle_asks_nothing_on_the_terminal(tiny_bundle):
    """A bundle's config.json names remote code for Hub users; loading it with midillm must not
    make transformers ask whether to run that code (a fresh process: nothing registered yet)."""
    import subprocess
    import sys

    script = ("import builtins\n"
              "def asked(*args, **kwargs):\n"
              "    raise SystemExit('asked on the terminal: ' + str(args[:1]))\n"
              "builtins.input = asked\n"
              "import torch\n"
              "from midillm.decoding.generate import MidiLM\n"
              f"MidiLM.from_pretrained({str(tiny_bundle)!r}, dtype=torch.float32)\n"
              "print('loaded')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "loaded" in result.stdout, result.stderr[-2000:]
    assert "custom code" not in result.stdout + result.stderr


# ----------------------------------------------------------------------------- the default caption


# Six pieces whose captions differ in every line a prompt can say: parts, instruments, tempo, metre.
VARIED_PARTS = ([("Lead", 73, False), ("Bass", 33, False), ("Drum Kit", 0, True)],
                [("Staff-1", 0, False), ("Staff-2", 48, False)],
                [("Track7", 25, False), ("Track8", 32, False), ("Track9", 0, True), ("Track10", 19, False)],
                [("Voice", 52, False), ("Organ", 19, False), ("Bass", 33, False)],
                [("Melody", 40, False), ("Harp", 46, False)],
                [("Guitar", 27, False), ("Drums", 0, True)])


def varied_piece(index: int, bars: int = 4):
    """A short multi-track piece with its own parts, instruments, tempo and metre."""
    import random

    from symusic import Note, Score, Tempo, TimeSignature, Track

    rng = random.Random(index)
    score = Score(480)
    beats = 3 if index % 2 else 4
    score.tempos.append(Tempo(0, 90.0 + 10 * index))
    score.time_signatures.append(TimeSignature(0, beats, 4))
    for name, program, is_drum in VARIED_PARTS[index]:
        track = Track(name=name, program=program, is_drum=is_drum)
        for beat in range(bars * beats):
            track.notes.append(Note(beat * 480, 480, rng.randint(36, 46) if is_drum else rng.randint(45, 76), 80))
        score.tracks.append(track)
    return score


@pytest.fixture(scope="module")
def varied(tiny_models, tmp_path_factory):
    """(an untrained MidiLM on the codec `prepare` writes for six varied pieces, the prepare report)."""
    from transformers import AutoModelForCausalLM

    from midillm.model.runtime import add_music_tokens
    from midillm.tokenization.dataset import PrepareConfig, prepare

    midi = tmp_path_factory.mktemp("varied-midi")
    for index in range(len(VARIED_PARTS)):
        varied_piece(index).dump_midi(midi / f"piece{index}.mid")
    out = tmp_path_factory.mktemp("varied-data")
    report = prepare(PrepareConfig(source=str(midi), out=str(out), base_model=str(tiny_models["tied"]),
                                   seq_len=256, num_workers=1), log=lambda *_: None)
    codec = MusicCodec.from_pretrained(out / "codec")
    model = AutoModelForCausalLM.from_pretrained(tiny_models["tied"], dtype=torch.float32)
    add_music_tokens(model, codec)
    # A context of 1024: the caption budget (a quarter) holds every caption whole.
    return MidiLM(model, codec, dtype=torch.float32, context_length=1024), report, out


def test_the_profile_keeps_the_train_pieces_own_captions_without_titles(varied):
    from symusic import Score

    from midillm.tokenization.caption import score_caption, without_title
    from midillm.tokenization.prepared import PreparedData
    from midillm.tokenization.tonality import in_common_key

    lm, _, out = varied
    # The list of pieces is in prepare.json only (prepare returns the totals).
    train = [piece for piece in PreparedData(out).read_report()["pieces"] if piece["split"] == "train"]
    # Each piece as its rows have it: moved to the common key (C major or C minor), its caption saying so.
    own = {without_title(lm.codec.caption(*in_common_key(Score(piece["path"]), piece["metadata"])[:2])) for piece in train}
    captions = lm.codec.corpus.captions
    assert len(train) >= 3
    assert set(captions) == own  # each exactly a train piece's caption, no held-out piece's
    assert set(captions.values()) == {1}  # each piece its own


def test_caption_sample_drops_titles_and_duplicates_in_a_seeded_order():
    from midillm.tokenization.profile import caption_sample

    untitled = ["Parts: Soprano, Alto, Tenor, Bass\n"] * 10 + ["Parts: Horn, Soprano, Alto, Tenor, Bass\n"] * 3 + [
        f"Parts: Part {index}\n" for index in range(5)]
    captions = [f"Title: Piece {index}\n{caption}" for index, caption in enumerate(untitled)]
    everything = caption_sample(captions)
    assert everything == {caption: untitled.count(caption) for caption in untitled}  # titles out, counted
    three = caption_sample(captions, size=3)
    # The most common first, with their counts; then one of the ties, the same one every time.
    assert list(three.values()) == [10, 3, 1] and list(three)[:2] == untitled[:1] + untitled[10:11]
    assert three == caption_sample(captions, size=3) and list(three)[2].startswith("Parts: Part ")


def test_generation_without_text_is_prompted_with_one_of_them_by_seed(varied, monkeypatch):
    from midillm.decoding.request import MusicRequest
    from midillm.tokenization.caption import INSTRUMENTS, caption_field, caption_ids, programs_listed

    lm, _, _ = varied
    codec = lm.codec
    seen = []
    constraints = lm.constraints

    def spy(text=None, *arguments, **keywords):
        made = constraints(text, *arguments, **keywords)
        seen.append((text, made.allowed_programs))
        return made

    monkeypatch.setattr(lm, "constraints", spy)
    drawn = set()
    for seed in range(6):
        seen.clear()
        [ids] = lm.generate_ids(1, settings=SamplingSettings(max_new_tokens=30), seed=seed)
        caption = lm.default_text(None, seed)
        assert caption in codec.corpus.captions
        head = ids[:ids.index(codec.music_start_id)]
        # The prompt is that caption, whole, as a training row starts with its piece's caption.
        assert head == caption_ids(codec.lm_tokenizer, caption, lm.context_length)
        assert codec.lm_tokenizer.decode(head).strip() == caption.strip()
        # The constraints read the same caption: only its instruments may play.
        programs = set(programs_listed(caption_field(caption, INSTRUMENTS)))
        assert seen == [(caption, programs)]
        played = {-1 if track.is_drum else track.program for track in codec.decode(ids).tracks if track.note_num()}
        assert played <= programs
        drawn.add(caption)
        # Through the request path (the command, the pipeline, the studio): the same caption.
        seen.clear()
        [sample] = lm.run(MusicRequest(seed=seed, sampling={"max_new_tokens": 30}))
        assert sample.ids[:len(head)] == head and seen[0][0] == caption
    assert len(drawn) >= 2  # different seeds, different pieces' captions


def test_a_codec_saved_before_the_caption_sample_loads_and_falls_back(varied, tmp_path):
    import json
    import shutil

    from midillm.tokenization.codec import CODEC_CONFIG_FILE

    lm, _, out = varied
    old = tmp_path / "codec"
    shutil.copytree(out / "codec", old)
    config = json.loads((old / CODEC_CONFIG_FILE).read_text())
    del config["corpus"]["captions"]
    (old / CODEC_CONFIG_FILE).write_text(json.dumps(config))
    codec = MusicCodec.from_pretrained(old)
    assert codec.corpus.captions == {} and codec.corpus.caption == lm.codec.corpus.caption
    old_lm = MidiLM(lm.model, codec, dtype=torch.float32, context_length=1024)
    assert {old_lm.default_text(None, seed) for seed in range(4)} == {codec.corpus.caption}
    assert old_lm.default_text("Tempo: 90 BPM", 3) == "Tempo: 90 BPM"
    [ids] = old_lm.generate_ids(1, settings=SamplingSettings(max_new_tokens=4), seed=1)
    assert codec.lm_tokenizer.decode(ids[:ids.index(codec.music_start_id)]).strip() == codec.corpus.caption.strip()
