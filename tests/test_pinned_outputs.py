"""The exact outputs of fixed-seed `generate`, `infill`, `accompany` and `arrange`, pinned.

A restructuring must not change what the sampler writes: the same model, codec, music and seed
give the same token ids, note for note. Each case below runs one public `MidiLM` call on an
untrained, seeded model (no training: training results differ across CPUs) in float32 and
compares its output with `tests/data/pinned_outputs.json` exactly. `generate_ids` returns the
sampled ids themselves; the calls that return scores (`generate`, `infill`, `accompany`,
`arrange`) are pinned as the codec's ids of each written score plus its notes, tracks, metres
and tempos. Both layouts (onsets, bars) run every case: they take different task plans.

What a case depends on is built here or in conftest.py (`tiny_models`: the tiny tokenizer and
the seeded 2-layer Llama): the codec comes from `prepare` on chorale-like pieces written by this
module, the model is the tiny Llama with the codec's new rows added as training adds them.
Moving code may change the imports below; it must never need new expected values.

Only for a deliberate change of behaviour (a new sampler, a new codec version), rewrite the file:

    MIDILLM_REPIN=1 .venv/bin/python -m pytest tests/test_pinned_outputs.py

Each case then rewrites its entry and skips, saying so; review the diff of the JSON file and
commit it with the change that explains it.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch
from symusic import Note, Score, Tempo, TimeSignature, Track

PINNED = Path(__file__).parent / "data" / "pinned_outputs.json"
REPIN = os.environ.get("MIDILLM_REPIN") == "1"

VOICES = (("Soprano", 64, 79), ("Alto", 57, 72), ("Tenor", 50, 65), ("Bass", 38, 55))


def chorale(seed: int, bars: int) -> Score:
    """Four named voices (one program, like the chorales) in 4/4, each a seeded random walk of
    quarters, eighths and halves in its own range."""
    rng = random.Random(seed)
    tpq = 480
    score = Score(tpq)
    score.tempos.append(Tempo(0, 90.0))
    score.time_signatures.append(TimeSignature(0, 4, 4))
    for name, low, high in VOICES:
        track = Track(name=name, program=52)
        time = 0
        while time < bars * 4 * tpq:
            duration = min(rng.choice([tpq, tpq, tpq // 2, 2 * tpq]), bars * 4 * tpq - time)
            track.notes.append(Note(time, duration, rng.randint(low, high), 80))
            time += duration
        score.tracks.append(track)
    return score


@pytest.fixture(scope="module")
def given_music(tmp_path_factory) -> Path:
    """The music that infill, accompany and arrange work on: a piece not in the training data."""
    path = tmp_path_factory.mktemp("pinned-input") / "given.mid"
    chorale(seed=100, bars=3).dump_midi(path)
    return path


@pytest.fixture(scope="module", params=["onsets", "bars"])
def untrained_lm(request, tiny_models, tmp_path_factory):
    """An untrained MidiLM as a bundle would hold it before training: the codec `prepare` writes
    (corpus profile, compounds, all four tasks), the base model with the new rows `train` adds."""
    from transformers import AutoModelForCausalLM

    from midillm.decoding.generate import MidiLM
    from midillm.decoding.request import SamplingSettings
    from midillm.model.runtime import add_music_tokens
    from midillm.tokenization.codec import MusicCodec
    from midillm.tokenization.dataset import PrepareConfig, prepare

    midi = tmp_path_factory.mktemp("pinned-corpus")
    for seed in range(8):
        chorale(seed, bars=8).dump_midi(midi / f"chorale{seed}.mid")
    out = tmp_path_factory.mktemp(f"pinned-data-{request.param}")
    report = prepare(PrepareConfig(source=str(midi), out=str(out), base_model=str(tiny_models["tied"]),
                                   layout=request.param, seq_len=256, num_workers=1,
                                   # The pins guard the code paths across refactors; the common key
                                   # (the default since 2026-12-05) moves the music and is tested
                                   # in test_tonality.py.
                                   common_key=False), log=lambda *_: None)
    assert report["tasks"] == ["continue", "infill", "accompany", "arrange"]
    codec = MusicCodec.from_pretrained(out / "codec")
    assert codec.layout == request.param
    model = AutoModelForCausalLM.from_pretrained(tiny_models["tied"], dtype=torch.float32)
    add_music_tokens(model, codec)
    # The sampling the outputs were pinned with, held fixed: a change of a layout's default
    # temperature is a deliberate change of behaviour, not what this test guards.
    return MidiLM(model, codec, dtype=torch.float32, sampling=SamplingSettings(temperature=0.7))


def notes(score: Score) -> dict:
    """The score as plain data: resolution, metres, tempos, and per track its identity and notes."""
    return {
        "ticks_per_quarter": score.ticks_per_quarter,
        "time_signatures": [[s.time, s.numerator, s.denominator] for s in score.time_signatures],
        "tempos": [[t.time, round(t.qpm, 3)] for t in score.tempos],
        "tracks": [[track.name, track.program, track.is_drum,
                    [[n.time, n.duration, n.pitch, n.velocity] for n in track.notes]]
                   for track in score.tracks],
    }


def scores_output(lm, scores: list[Score]) -> list[dict]:
    """Scores as their token ids (the codec's encoding of each written score) and their notes."""
    return [{"ids": lm.codec.encode(score), "score": notes(score)} for score in scores]


# Each case: one public call with its own seed and settings.
CASES = ("generate_ids", "generate_prompted", "infill", "accompany", "arrange")


def run_case(lm, music: Path, case: str) -> list[dict]:
    """The case's output as plain data: token ids per sample (and the notes of written scores)."""
    from midillm.decoding.generate import SamplingSettings

    if case == "generate_ids":  # constrained, the corpus's caption: what `midillm generate` does
        return [{"ids": ids} for ids in lm.generate_ids(num_samples=2, seed=7,
                                                         settings=SamplingSettings(max_new_tokens=40))]
    if case == "generate_prompted":  # a MIDI prompt continued, sampling settings changed, no constraints
        scores = lm.generate(num_samples=1, prompt=music, seed=5, max_new_tokens=30, temperature=0.9,
                             top_k=20, constrain=False)
    elif case == "infill":
        scores = lm.infill(music, "2-2", num_samples=2, seed=1, max_new_tokens=40)
    elif case == "accompany":
        scores = lm.accompany(music, ["Soprano"], num_samples=1, seed=2, max_new_tokens=40)
    else:  # in the bars layout this untrained model opens each next bar at once: the melody alone
        scores = lm.arrange(music, "Instruments: Violin, Cello", tracks=["Soprano"], num_samples=1, seed=4,
                            max_new_tokens=40)
    return scores_output(lm, scores)


def load_pinned() -> dict:
    return json.loads(PINNED.read_text()) if PINNED.is_file() else {}


@pytest.mark.parametrize("case", CASES)
def test_fixed_seed_outputs_are_the_pinned_ones(untrained_lm, given_music, case):
    key = f"{untrained_lm.codec.layout}/{case}"
    # Through JSON and back: tuples become lists, as in the file.
    got = json.loads(json.dumps(run_case(untrained_lm, given_music, case)))
    assert got and all(sample.get("ids") for sample in got)
    if REPIN:
        pinned = load_pinned()
        pinned[key] = got
        PINNED.parent.mkdir(exist_ok=True)
        # One line per sample: a behaviour change shows as the samples it changed.
        PINNED.write_text("{\n" + ",\n".join(
            f"{json.dumps(name)}: [\n" + ",\n".join(json.dumps(sample) for sample in samples) + "]"
            for name, samples in sorted(pinned.items())) + "\n}\n")
        pytest.skip(f"MIDILLM_REPIN=1: rewrote {PINNED.name}[{key}]")
    pinned = load_pinned()
    assert key in pinned, f"{key} is not pinned; run with MIDILLM_REPIN=1 once, deliberately"
    expected = pinned[key]
    assert len(got) == len(expected)
    for index, (sample, want) in enumerate(zip(got, expected)):
        # The first differing token says where the behaviour changed.
        first = next((i for i, (a, b) in enumerate(zip(sample["ids"], want["ids"])) if a != b),
                     min(len(sample["ids"]), len(want["ids"])))
        assert sample["ids"] == want["ids"], (
            f"{key} sample {index}: ids differ from position {first} "
            f"(got {sample['ids'][first:first + 8]}, pinned {want['ids'][first:first + 8]})")
        assert sample == want, f"{key} sample {index}: same ids but a different score"


def test_every_pinned_case_is_still_run():
    """A pinned entry no case produces any more would silently stop being checked."""
    expected_keys = {f"{layout}/{case}" for layout in ("onsets", "bars") for case in CASES}
    assert set(load_pinned()) == expected_keys
