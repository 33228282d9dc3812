"""Sampling: every sample decodes without token errors, prompts are kept, settings are checked."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import train_tiny_bundle
from midillm import MusicCodec
from midillm.decoding.generate import MidiLM, SamplingSettings
from midillm.tokenization.roundtrip import note_keys


@pytest.fixture(scope="module")
def codec(tiny_lm_tokenizer_path, bach_midi_files):
    from transformers import AutoTokenizer

    codec = MusicCodec.create(lm_tokenizer=AutoTokenizer.from_pretrained(tiny_lm_tokenizer_path))
    codec.train_bpe(bach_midi_files[:20], 900)
    return codec


@pytest.fixture(scope="module")
def untrained_lm(codec):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(codec.lm_tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=128)
    return MidiLM(LlamaForCausalLM(config), codec, dtype=torch.float32)


def token_errors(codec, ids):
    base = [codec.music_tokenizer.vocab[token] for token in codec.music_tokens(ids)]
    return codec.music_tokenizer.tokens_errors(base) if base else 0.0


def test_twenty_untrained_samples_all_decode_without_token_errors(untrained_lm):
    samples = untrained_lm.generate_ids(num_samples=20, settings=SamplingSettings(max_new_tokens=150), seed=3)
    assert len(samples) == 20
    for ids in samples:
        assert token_errors(untrained_lm.codec, ids) == 0
        assert untrained_lm.codec.decode(ids).note_num() >= 0
    assert sum(untrained_lm.codec.decode(ids).note_num() > 0 for ids in samples) >= 15


def test_generation_past_the_context_slides_the_window(untrained_lm):
    # Context 128, 300 new tokens: the window slides at least twice.
    [ids] = untrained_lm.generate_ids(settings=SamplingSettings(max_new_tokens=300), seed=1)
    assert token_errors(untrained_lm.codec, ids) == 0


def test_same_seed_same_samples(untrained_lm):
    first = untrained_lm.generate_ids(num_samples=2, settings=SamplingSettings(max_new_tokens=40), seed=5)
    again = untrained_lm.generate_ids(num_samples=2, settings=SamplingSettings(max_new_tokens=40), seed=5)
    assert first == again


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
    with pytest.raises(FileNotFoundError, match="prompt file not found"):
        untrained_lm.generate_ids(prompt=tmp_path / "nope.mid")


def test_folder_that_is_not_a_bundle_is_reported(tmp_path):
    from midillm.decoding.generate import BundleError

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
def trained_bundle(tiny_models, tiny_data, tmp_path_factory):
    return train_tiny_bundle(tiny_models["tied"], tiny_data, tmp_path_factory.mktemp("bundle"), max_steps=30)


def test_twenty_samples_from_a_trained_bundle_all_decode(trained_bundle):
    model = MidiLM.from_pretrained(trained_bundle, dtype=torch.float32)
    samples = model.generate_ids(num_samples=20, settings=SamplingSettings(max_new_tokens=120), seed=0)
    for ids in samples:
        assert token_errors(model.codec, ids) == 0
    assert all(model.codec.decode(ids).note_num() > 0 for ids in samples)


def test_saved_bundle_gives_the_same_tokens_for_the_same_seed(trained_bundle):
    first = MidiLM.from_pretrained(trained_bundle, dtype=torch.float32)
    again = MidiLM.from_pretrained(trained_bundle, dtype=torch.float32)
    settings = SamplingSettings(max_new_tokens=60)
    assert first.generate_ids(3, settings=settings, seed=11) == again.generate_ids(3, settings=settings, seed=11)


def test_generate_command_writes_every_format(trained_bundle, tmp_path, capsys):
    from symusic import Score

    from midillm.cli import main

    out = tmp_path / "samples"
    assert main(["generate", str(trained_bundle), "--out", str(out), "-n", "2", "--max-new-tokens", "80",
                 "--formats", "mid,musicxml,wav,png"]) == 0
    for index in range(2):
        for suffix in ("mid", "musicxml", "wav", "png"):
            assert (out / f"sample-{index:03d}.{suffix}").is_file()
        assert Score(str(out / f"sample-{index:03d}.mid")).note_num() > 0
