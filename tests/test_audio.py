"""Audio in: transcription accuracy, the beat grid, audio prompts, and bad recordings in one line."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from symusic import Note, Score, Tempo, TimeSignature, Track

from conftest import train_tiny_bundle

pytest.importorskip("basic_pitch")
pytest.importorskip("onnxruntime")
mir_eval = pytest.importorskip("mir_eval")

from midillm.audio import AudioError, MAX_AUDIO_SECONDS, codec_grid, transcribe  # noqa: E402
from midillm.audio.transcribe import load_audio, note_events  # noqa: E402
from midillm.decoding.export import write_wav  # noqa: E402

# A single-line piano melody: (pitch, beats); every pitch inside the tiny corpus's piano range.
MELODY = [(60, 1), (62, 1), (64, 1), (65, 1), (67, 2), (65, 1), (64, 1), (62, 2), (60, 1), (64, 1),
          (67, 1), (72, 1), (71, 1), (69, 1), (67, 2), (65, 2)]


def melody_score(bpm: float = 90.0, program: int = 0) -> Score:
    score = Score(480)
    score.tempos.append(Tempo(0, bpm))
    score.time_signatures.append(TimeSignature(0, 4, 4))
    track = Track(name="melody", program=program)
    time = 0
    for pitch, beats in MELODY:
        track.notes.append(Note(time, beats * 480 - 20, pitch, 90))
        time += beats * 480
    score.tracks.append(track)
    return score


def chorale_score() -> Score:
    from music21 import corpus
    from music21.midi.translate import streamToMidiFile

    return Score.from_midi(streamToMidiFile(corpus.parse("bach/bwv66.6")).writestr())


def note_f1(reference: Score, events) -> float:
    """mir_eval note F1: onset within 50 ms, pitch exact (offsets ignored)."""
    notes = [note for track in reference.to("second").tracks for note in track.notes]
    ref_intervals = np.array([[note.time, note.time + note.duration] for note in notes])
    ref_pitches = np.array([440.0 * 2 ** ((note.pitch - 69) / 12) for note in notes])
    est_intervals = np.array([[start, end] for start, end, *_ in events])
    est_pitches = np.array([440.0 * 2 ** ((pitch - 69) / 12) for _, _, pitch, _ in events])
    # pitch_tolerance is in cents: 1 cent is "exact" for MIDI pitches.
    _, _, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ref_intervals, ref_pitches, est_intervals, est_pitches, onset_tolerance=0.05, pitch_tolerance=1.0,
        offset_ratio=None)
    return f1


@pytest.fixture(scope="module")
def melody_wav(tmp_path_factory) -> Path:
    return write_wav(melody_score(90.0), tmp_path_factory.mktemp("audio") / "take.wav")


def test_rendered_melody_and_chorale_are_transcribed_back(melody_wav, tmp_path):
    melody = note_f1(melody_score(90.0), note_events(load_audio(melody_wav)))
    chorale = chorale_score()
    chorale_f1 = note_f1(chorale, note_events(load_audio(write_wav(chorale, tmp_path / "chorale.wav"))))
    print(f"note F1: melody {melody:.3f}, chorale {chorale_f1:.3f}")
    assert melody >= 0.9
    assert chorale_f1 >= 0.6


def test_melody_at_90_bpm_lands_on_the_beat_grid(melody_wav):
    score = transcribe(melody_wav, grid=4)
    assert abs(score.tempos[0].qpm - 90.0) <= 0.05 * 90.0
    notes = score.tracks[0].notes
    assert all(note.time % (score.ticks_per_quarter // 4) == 0 for note in notes)
    # The melody's own rhythm comes back: onsets in beats, as written.
    expected = np.cumsum([0] + [beats for _, beats in MELODY[:-1]])
    assert [note.time / score.ticks_per_quarter for note in notes] == list(expected)
    assert [note.pitch for note in notes] == [pitch for pitch, _ in MELODY]


@pytest.mark.parametrize("suffix", ["flac", "ogg", "mp3"])
def test_compressed_formats_are_read(melody_wav, tmp_path, suffix):
    import soundfile

    data, rate = soundfile.read(str(melody_wav))
    path = tmp_path / f"take.{suffix}"
    soundfile.write(str(path), data, rate)
    score = transcribe(path)
    assert abs(score.tempos[0].qpm - 90.0) <= 0.05 * 90.0
    assert abs(score.note_num() - len(MELODY)) <= 2


def test_transcribe_command_writes_midi_with_known_tempo_and_program(melody_wav, tmp_path, capsys):
    from midillm.cli import main

    out = tmp_path / "take.mid"
    assert main(["transcribe", str(melody_wav), "--out", str(out), "--tempo", "90", "--program", "40"]) == 0
    score = Score(str(out))
    assert score.tempos[0].qpm == pytest.approx(90.0, abs=0.1)
    assert score.tracks[0].program == 40 and score.note_num() == len(MELODY)
    assert "16 notes" in capsys.readouterr().out


def _write_pcm(path: Path, samples: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return path


BAD_AUDIO = {
    "not audio": (lambda folder: (folder / "notes.wav").write_text("this is not a recording\n" * 50),
                  "notes.wav", "not audio"),
    "empty": (lambda folder: (folder / "empty.wav").write_bytes(b""), "empty.wav", "empty file"),
    "silent": (lambda folder: _write_pcm(folder / "silent.wav", np.zeros(22050 * 2), 22050),
               "silent.wav", "silent"),
    "too long": (lambda folder: _write_pcm(folder / "long.wav", np.zeros(int(MAX_AUDIO_SECONDS + 1) * 4000), 4000),
                 "long.wav", f"the limit is {MAX_AUDIO_SECONDS:.0f} s"),
    "unreadable format": (lambda folder: (folder / "take.m4a").write_bytes(b"\0\0\0 ftypM4A " + bytes(500)),
                          "take.m4a", "cannot decode m4a audio"),
    "no audio suffix": (lambda folder: (folder / "take.txt").write_text("la la la"), "take.txt",
                        "not an audio file"),
}


@pytest.mark.parametrize("case", list(BAD_AUDIO))
def test_bad_audio_gives_one_line_and_writes_nothing(case, tmp_path, capsys):
    from midillm.cli import main

    make, name, message = BAD_AUDIO[case]
    make(tmp_path)
    out = tmp_path / "out" / "take.mid"
    assert main(["transcribe", str(tmp_path / name), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    error = captured.err.strip()
    assert error.startswith("midillm: error:") and message in error and "\n" not in error, error
    assert not (tmp_path / "out").exists() and not captured.out
    with pytest.raises(AudioError):
        transcribe(tmp_path / name)


@pytest.mark.parametrize("case", ["not audio", "empty", "too long", "unreadable format"])
def test_bad_audio_prompt_fails_before_the_model_loads(case, tmp_path, capsys):
    from midillm.cli import main

    make, name, message = BAD_AUDIO[case]
    make(tmp_path)
    out = tmp_path / "samples"
    # tmp_path is no bundle: the recording is refused first, in one line.
    assert main(["generate", str(tmp_path), "--out", str(out), "--prompt", str(tmp_path / name)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("midillm: error:") and message in error and "\n" not in error, error
    assert not out.exists()


@pytest.fixture(scope="module")
def audio_bundle(tiny_models, tiny_data, tmp_path_factory):
    return train_tiny_bundle(tiny_models["tied"], tiny_data, tmp_path_factory.mktemp("audio-bundle"), max_steps=10)


def test_generate_continues_a_recorded_phrase(audio_bundle, melody_wav, tmp_path, capsys):
    from midillm.cli import main
    from midillm.decoding.generate import MidiLM
    from midillm.decoding.request import SamplingSettings
    from midillm.tokenization.roundtrip import note_keys

    lm = MidiLM.from_pretrained(audio_bundle, dtype=torch.float32)
    heard = transcribe(melody_wav, grid=codec_grid(lm.codec))
    # The transcription is on the codec's grid: the codec's own quantisation leaves it as it is.
    tokenizer = lm.codec.music_tokenizer
    assert note_keys(tokenizer.preprocess_score(heard.copy())) == note_keys(heard.copy())

    [ids] = lm.generate_ids(prompt=melody_wav, settings=SamplingSettings(max_new_tokens=30), seed=1)
    prompt_ids = lm.prompt_ids(heard)
    assert lm.prompt_ids(melody_wav) == prompt_ids
    assert ids[:len(prompt_ids)] == prompt_ids  # the output begins with the transcribed phrase
    # The pipeline takes a recording's path as a prompt too.
    from transformers import pipeline

    import midillm  # noqa: F401 - registers the task
    [piped] = pipeline("midi-generation", model=lm)(str(melody_wav), max_new_tokens=30, seed=1)
    assert piped["ids"][:len(prompt_ids)] == prompt_ids

    out = tmp_path / "samples"
    assert main(["generate", str(audio_bundle), "--out", str(out), "--prompt", str(melody_wav), "-n", "1",
                 "--max-new-tokens", "30"]) == 0
    transcription = Score(str(out / "prompt-transcription.mid"))
    sample = Score(str(out / "sample-000.mid"))
    assert transcription.note_num() == len(MELODY)
    assert note_keys(tokenizer.preprocess_score(transcription)) <= note_keys(tokenizer.preprocess_score(sample))
    assert "transcribed from" in capsys.readouterr().out
