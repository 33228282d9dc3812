"""Audio -> notes (Basic Pitch on onnxruntime) -> a Score on a beat grid (librosa tempo).

A transcription comes in seconds; the codec thinks in beats. `transcribe` estimates the tempo
(or takes a known one), anchors beat 0 on the first note, quantises onsets and durations to
`grid` steps per beat and writes the tempo and a 4/4 metre into the score, so a recorded phrase
becomes a prompt like the scores the model was trained on.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import numpy as np
from symusic import Note, Score, Tempo, TimeSignature, Track

#: What the decoder (libsndfile, through soundfile) reads here.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff")
#: Audio formats this installation cannot decode: named so the user gets a precise line.
UNREADABLE_SUFFIXES = (".m4a", ".aac", ".mp4", ".wma", ".opus", ".webm", ".amr", ".ape", ".alac")
#: The longest recording taken: a prompt is a phrase, and longer takes cost memory and minutes.
MAX_AUDIO_SECONDS = 300.0
#: Peak level under which a recording counts as silent (about -60 dBFS).
SILENCE_PEAK = 1e-3
TICKS_PER_QUARTER = 480
SAMPLE_RATE = 22050  # Basic Pitch's rate


class AudioError(ValueError):
    """A recording that cannot be used; the message is one line naming the file and why."""


def is_audio_path(path) -> bool:
    """Whether `path` (str / Path) names an audio file by its suffix (readable here or not)."""
    if not isinstance(path, (str, Path)):
        return False
    return Path(path).suffix.lower() in AUDIO_SUFFIXES + UNREADABLE_SUFFIXES


def check_audio(path: str | Path) -> float:
    """Cheap checks before any decoding: the file exists, is an audio format read here, is not
    empty and not longer than MAX_AUDIO_SECONDS. Returns its length in seconds."""
    import soundfile

    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    if suffix in UNREADABLE_SUFFIXES:
        raise AudioError(f"{path}: cannot decode {suffix[1:]} audio here; convert it to wav, flac, ogg or mp3")
    if suffix not in AUDIO_SUFFIXES:
        raise AudioError(f"{path}: not an audio file (expected {', '.join(AUDIO_SUFFIXES)})")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    try:
        info = soundfile.info(str(path))
    except Exception:
        raise AudioError(f"{path}: not audio (the decoder cannot read it as {suffix[1:]})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(f"{path}: empty recording (no samples)")
    seconds = info.frames / info.samplerate
    if seconds > MAX_AUDIO_SECONDS:
        raise AudioError(f"{path}: {seconds:.0f} s long; the limit is {MAX_AUDIO_SECONDS:.0f} s (cut it first)")
    return seconds


def load_audio(path: str | Path) -> np.ndarray:
    """Mono float32 at 22050 Hz, after `check_audio`; a silent recording is refused."""
    import soundfile

    check_audio(path)
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception:
        raise AudioError(f"{path}: not audio (the decoder cannot read it)") from None
    mono = data.mean(axis=1)
    if mono.size == 0:
        raise AudioError(f"{path}: empty recording (no samples)")
    if not np.isfinite(mono).all() or float(np.abs(mono).max()) < SILENCE_PEAK:
        raise AudioError(f"{path}: silent (peak below -60 dBFS), nothing to transcribe")
    if rate != SAMPLE_RATE:
        import librosa

        mono = librosa.resample(mono, orig_sr=rate, target_sr=SAMPLE_RATE)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _quiet_import(name: str):
    """Import a Basic Pitch module without its warnings about optional back-ends (TF, CoreML...)."""
    import importlib

    try:
        import resampy  # noqa: F401  (Basic Pitch imports it for sonification only)
    except ImportError:
        # resampy < 0.4.3 (Basic Pitch's pin) needs pkg_resources, gone from new setuptools;
        # transcription never resamples with it, so a stand-in that refuses to be used does.
        import sys
        import types

        stand_in = types.ModuleType("resampy")

        def resample(*_args, **_kwargs):
            raise AudioError("resampy is not importable here (sonification is not supported)")

        stand_in.resample = resample
        sys.modules["resampy"] = stand_in
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        return importlib.import_module(name)
    finally:
        logging.disable(previous)


@lru_cache(maxsize=1)
def _session():
    try:
        import onnxruntime
        constants = _quiet_import("basic_pitch.constants")
        package = _quiet_import("basic_pitch")
    except ImportError as error:
        raise AudioError("audio transcription needs basic-pitch and onnxruntime: "
                         "pip install --no-deps basic-pitch==0.4.0 && pip install onnxruntime librosa "
                         f"mir_eval resampy scikit-learn soundfile ({error.name} is missing)") from None
    model = Path(package.__file__).parent / "saved_models" / "icassp_2022" / "nmp.onnx"
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"]), constants


def model_output(audio: np.ndarray) -> dict[str, np.ndarray]:
    """Basic Pitch's frame, onset and contour activations for mono 22050 Hz audio."""
    session, constants = _session()
    inference = _quiet_import("basic_pitch.inference")
    overlap_frames = 30
    overlap = overlap_frames * constants.FFT_HOP
    hop = constants.AUDIO_N_SAMPLES - overlap
    padded = np.concatenate([np.zeros(overlap // 2, dtype=np.float32), audio])
    windows = np.stack([window for window, _ in inference.window_audio_file(padded, hop)])
    outputs = {"note": [], "onset": [], "contour": []}
    names = ["StatefulPartitionedCall:1", "StatefulPartitionedCall:2", "StatefulPartitionedCall:0"]
    for start in range(0, len(windows), 8):
        batch = windows[start:start + 8].astype(np.float32)
        for key, value in zip(outputs, session.run(names, {"serving_default_input_2:0": batch})):
            outputs[key].append(value)
    return {key: inference.unwrap_output(np.concatenate(values), len(audio), overlap_frames)
            for key, values in outputs.items()}


#: Partials of a sounding note Basic Pitch may report as notes of their own (octave, twelfth...).
OVERTONE_INTERVALS = (12, 19, 24, 28, 31)


def drop_ghost_notes(events, overtone_ratio: float = 0.65, onset_ratio: float = 0.55,
                     window: float = 0.05):
    """Drop what a synthesised or recorded piano adds to Basic Pitch's output: a quiet note an
    overtone interval above a louder note sounding at its onset, and a note much quieter than
    another struck within `window` seconds. Measured on rendered melodies and chorales
    (tests/test_audio.py), this raises note F1 from 0.76 to 1.0 and from 0.87 to 0.89."""
    if not events:
        return []
    starts, ends, pitches, amplitudes = (np.array(column) for column in zip(*events))
    keep = []
    for index, (start, _end, pitch, amplitude) in enumerate(events):
        sounding = (starts <= start + window) & (ends > start)
        sounding[index] = False
        overtone = sounding & np.isin(pitch - pitches, OVERTONE_INTERVALS)
        if (overtone & (amplitude < overtone_ratio * amplitudes)).any():
            continue
        together = np.abs(starts - start) <= window
        together[index] = False
        if (together & (amplitude < onset_ratio * amplitudes)).any():
            continue
        keep.append(events[index])
    return keep


def note_events(audio: np.ndarray, onset_threshold: float = 0.6, frame_threshold: float = 0.3,
                minimum_note_ms: float = 127.7) -> list[tuple[float, float, int, float]]:
    """(start s, end s, MIDI pitch, amplitude) of each transcribed note, sorted by start;
    overtones and other ghost notes dropped (`drop_ghost_notes`)."""
    _, constants = _session()
    creation = _quiet_import("basic_pitch.note_creation")
    frames = int(round(minimum_note_ms / 1000 * constants.AUDIO_SAMPLE_RATE / constants.FFT_HOP))
    _, events = creation.model_output_to_notes(
        model_output(audio), onset_thresh=onset_threshold, frame_thresh=frame_threshold,
        min_note_len=max(frames, 1), include_pitch_bends=False, melodia_trick=True)
    return drop_ghost_notes(sorted((float(start), float(end), int(pitch), float(amplitude))
                                   for start, end, pitch, amplitude, *_ in events))


def estimate_tempo(audio: np.ndarray, onsets=(), grid: int = 4, low: float = 60.0,
                   high: float = 180.0) -> float:
    """Tempo in BPM: librosa's tempogram estimate folded by octaves into [low, high), then
    refined within 6% to the tempo that puts the transcribed `onsets` (seconds) closest to a
    1/`grid` beat grid anchored on the first one (the tempogram's bins are a few % apart)."""
    import librosa

    tempo = float(np.atleast_1d(librosa.feature.tempo(y=audio, sr=SAMPLE_RATE))[0])
    if not np.isfinite(tempo) or tempo <= 0:
        tempo = 120.0
    while tempo < low:
        tempo *= 2
    while tempo >= high:
        tempo /= 2
    onsets = np.unique(np.asarray(onsets, dtype=np.float64))
    if len(onsets) >= 4:
        offsets = onsets - onsets[0]
        candidates = tempo * np.linspace(0.94, 1.06, 241)
        steps = offsets[None, :] * candidates[:, None] / 60.0 * grid
        cost = ((steps - np.round(steps)) ** 2).mean(axis=1)
        # The least misfit; among near-equal fits, the one nearest the tempogram's estimate.
        best = cost <= cost.min() + 1e-3
        tempo = float(candidates[best][np.argmin(np.abs(candidates[best] - tempo))])
    return tempo


def codec_grid(codec) -> int:
    """Steps per beat to quantise a transcription to: the codec's finest grid, halved while it
    is above 4 (a performance is not that exact), so every onset lies on the codec's grid."""
    beat_res = codec.music_tokenizer.config.beat_res
    grid = max(int(value) for value in beat_res.values()) if beat_res else 4
    while grid > 4 and grid % 2 == 0:
        grid //= 2
    return max(grid, 1)


def transcribe(path: str | Path, tempo: float | None = None, program: int = 0, grid: int = 4,
               onset_threshold: float = 0.6, frame_threshold: float = 0.3) -> Score:
    """A recording as a Score: one track of `program`, tempo `tempo` BPM (None: estimated), 4/4,
    the first note on beat 0 and every onset and duration on a 1/`grid` beat grid."""
    if tempo is not None and not 20 <= tempo <= 400:
        raise AudioError(f"tempo must be between 20 and 400 BPM, not {tempo}")
    if not 0 <= program <= 127:
        raise AudioError(f"program must be a General MIDI program from 0 to 127, not {program}")
    if grid < 1:
        raise AudioError(f"grid must be at least 1 step per beat, not {grid}")
    audio = load_audio(path)
    events = note_events(audio, onset_threshold, frame_threshold)
    if not events:
        raise AudioError(f"{path}: no notes found in the recording")
    bpm = float(tempo) if tempo is not None else estimate_tempo(audio, [event[0] for event in events], grid)
    return notes_to_score(events, bpm, program, grid)


def notes_to_score(events, bpm: float, program: int = 0, grid: int = 4) -> Score:
    """Timed notes (seconds) on a beat grid: beat 0 at the first onset, steps of 1/grid beat."""
    anchor = min(start for start, *_ in events)
    step = TICKS_PER_QUARTER // grid if TICKS_PER_QUARTER % grid == 0 else TICKS_PER_QUARTER / grid
    beats_per_second = bpm / 60.0
    notes: dict[tuple[int, int], tuple[int, int]] = {}
    for start, end, pitch, amplitude in events:
        onset = int(round(round((start - anchor) * beats_per_second * grid) * step))
        length = int(round(max(1, round((end - start) * beats_per_second * grid)) * step))
        velocity = int(np.clip(round(amplitude * 127), 1, 127))
        key = (onset, pitch)
        if key not in notes or notes[key][0] < length:  # one note per pitch and onset
            notes[key] = (length, velocity)
    score = Score(TICKS_PER_QUARTER)
    score.tempos.append(Tempo(0, float(round(bpm, 2))))
    score.time_signatures.append(TimeSignature(0, 4, 4))
    track = Track(name="transcription", program=int(program), is_drum=False)
    for (onset, pitch), (length, velocity) in sorted(notes.items()):
        track.notes.append(Note(onset, length, pitch, velocity))
    score.tracks.append(track)
    return score
