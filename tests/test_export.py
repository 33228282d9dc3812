"""Export: every file a score is written to opens again in its own reader, with the music in it."""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from symusic import Note, Score, Tempo, TimeSignature, Track

from midillm.decoding.export import (FORMATS, ExportError, export_score, parse_formats,
                                     render_audio, to_midi_bytes, write_midi, write_musicxml,
                                     write_png, write_wav)

TPQ = 480


def band_score() -> Score:
    """Piano chords, bass and drums; 4 bars of 4/4 at 100 bpm, then 3 bars of 3/4 at 140 bpm."""
    score = Score(TPQ)
    change = 4 * 4 * TPQ
    score.tempos.extend([Tempo(0, 100.0), Tempo(change, 140.0)])
    score.time_signatures.extend([TimeSignature(0, 4, 4), TimeSignature(change, 3, 4)])
    beats = list(range(0, change, TPQ)) + list(range(change, change + 3 * 3 * TPQ, TPQ))
    piano = Track(name="piano", program=0)
    bass = Track(name="bass", program=33)
    drums = Track(name="drums", program=0, is_drum=True)
    for i, beat in enumerate(beats):
        root = 48 + (i // 4) % 5
        piano.notes.extend([Note(beat, TPQ, root + 12 + d, 80) for d in (0, 4, 7)])
        bass.notes.append(Note(beat, TPQ // 2, root - 12, 96))
        drums.notes.extend([Note(beat, TPQ // 4, 36 if i % 2 == 0 else 38, 100),
                            Note(beat + TPQ // 2, TPQ // 4, 42, 70)])
    score.tracks.extend([piano, bass, drums])
    return score


def note_tuples(score: Score) -> list[list[tuple]]:
    return [sorted((n.time, n.duration, n.pitch, n.velocity) for n in track.notes)
            for track in score.tracks]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Score, dict[str, Path]]:
    score = band_score()
    stem = tmp_path_factory.mktemp("export") / "sample.0"  # the ".0" must survive
    return score, export_score(score, stem, list(FORMATS))


def test_parse_formats():
    assert parse_formats("mid,musicxml") == ["mid", "musicxml"]
    assert parse_formats(" MID, .png ,midi,, wav") == ["mid", "png", "wav"]
    assert parse_formats(",".join(FORMATS)) == list(FORMATS)
    with pytest.raises(ExportError, match="mid, musicxml, wav, png") as info:
        parse_formats("mid,mp3")
    assert "mp3" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ExportError):
        parse_formats(" , ")


def test_export_score_writes_each_format(exported, tmp_path):
    _, paths = exported
    assert list(paths) == list(FORMATS)
    for fmt, path in paths.items():
        assert path.name == f"sample.0.{fmt}" and path.stat().st_size > 0
    with pytest.raises(ExportError, match="unknown export format"):
        export_score(band_score(), tmp_path / "x", ["mid", "ogg"])
    assert not (tmp_path / "x.mid").exists()  # formats are checked before anything is written


def test_midi_reopens_with_same_notes(exported):
    score, paths = exported
    back = Score(paths["mid"])
    assert note_tuples(back) == note_tuples(score)
    assert [(t.program, t.is_drum) for t in back.tracks] == [(0, False), (33, False), (0, True)]
    assert [(ts.time, ts.numerator, ts.denominator) for ts in back.time_signatures] == \
        [(0, 4, 4), (4 * 4 * TPQ, 3, 4)]
    assert [round(t.qpm) for t in back.tempos] == [100, 140]
    assert to_midi_bytes(score) == paths["mid"].read_bytes()


def test_midi_from_other_time_units(tmp_path):
    score = band_score()
    for unit in ("quarter", "second"):
        path = write_midi(score.to(unit), tmp_path / f"{unit}.mid")
        back = Score(path)
        assert [len(t.notes) for t in back.tracks] == [len(t.notes) for t in score.tracks]
        assert [n.pitch for n in back.tracks[0].notes] == [n.pitch for n in score.tracks[0].notes]


def test_musicxml_reopens_in_music21(exported):
    from music21 import converter, meter

    score, paths = exported
    parsed = converter.parse(paths["musicxml"])
    notes = parsed.flatten().notes
    assert len(notes) > 0
    assert len(parsed.parts) == 3
    signatures = {ts.ratioString for ts in parsed.recurse().getElementsByClass(meter.TimeSignature)}
    assert {"4/4", "3/4"} <= signatures
    pitches = {p.midi for n in notes if hasattr(n, "pitches") for p in n.pitches}
    piano_pitches = {n.pitch for n in score.tracks[0].notes}
    assert piano_pitches <= pitches


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 2
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return data.reshape(-1, 2).astype(np.float64) / 32768.0, wav.getframerate()


def test_wav_is_audible_and_as_long_as_the_score(exported):
    score, paths = exported
    audio, rate = read_wav(paths["wav"])
    assert rate == 22050
    seconds = score.to("second").end()
    assert seconds == pytest.approx(4 * 4 * 60 / 100 + 3 * 3 * 60 / 140, abs=0.01)
    assert seconds <= len(audio) / rate <= seconds + 1.5  # plus a short release tail
    assert np.sqrt(np.mean(audio ** 2)) > 0.01
    assert np.abs(audio).max() < 1.0
    # Sound in the 3/4 section too: the tempo map reached the renderer.
    tail = audio[int((seconds - 2) * rate):int(seconds * rate)]
    assert np.sqrt(np.mean(tail ** 2)) > 0.005


def test_wav_honours_programs_and_drums(tmp_path):
    def single(program: int, is_drum: bool) -> np.ndarray:
        score = Score(TPQ)
        track = Track(program=program, is_drum=is_drum)
        track.notes.extend(Note(i * TPQ, TPQ // 2, 38, 100) for i in range(4))
        score.tracks.append(track)
        return render_audio(score, sample_rate=16000)

    piano, bass, snare = single(0, False), single(33, False), single(0, True)
    for audio in (piano, bass, snare):
        assert np.sqrt(np.mean(audio ** 2)) > 0.005
    assert np.abs(piano - bass).mean() > 1e-3
    assert np.abs(piano - snare).mean() > 1e-3
    path = write_wav(band_score(), tmp_path / "sr.wav", sample_rate=16000)
    assert read_wav(path)[1] == 16000


def test_wav_with_more_tracks_than_midi_channels(tmp_path):
    score = Score(TPQ)
    for index in range(18):  # more melodic tracks than the 15 non-drum channels
        track = Track(program=index * 5)
        # All start together except the last, which plays alone from 4 s (8 beats at 120 bpm).
        track.notes.append(Note(8 * TPQ if index == 17 else 0, TPQ, 60 + index, 90))
        score.tracks.append(track)
    audio, rate = read_wav(write_wav(score, tmp_path / "many.wav"))
    rms = lambda a, b: np.sqrt(np.mean(audio[int(a * rate):int(b * rate)] ** 2))  # noqa: E731
    assert rms(0.0, 0.4) > 0.01
    assert rms(4.05, 4.4) > 10 * rms(3.6, 3.95)


def test_png_has_the_requested_size(exported, tmp_path):
    from matplotlib.image import imread

    _, paths = exported
    assert imread(paths["png"]).shape[:2] == (400, 1200)
    image = imread(write_png(band_score(), tmp_path / "roll.png", width=800, height=300))
    assert image.shape[:2] == (300, 800)
    assert image[..., :3].std() > 0.05  # something was drawn


def test_empty_score_still_exports(tmp_path):
    from matplotlib.image import imread

    empty = Score(TPQ)
    paths = export_score(empty, tmp_path / "empty", ["mid", "png"])
    assert sum(len(t.notes) for t in Score(paths["mid"]).tracks) == 0
    assert imread(paths["png"]).shape[:2] == (400, 1200)
    # The other two formats give valid, empty files rather than crashing a batch.
    write_musicxml(empty, tmp_path / "empty.musicxml")
    audio, _ = read_wav(write_wav(empty, tmp_path / "empty.wav"))
    assert np.abs(audio).max() == 0


def test_missing_synth_or_soundfont_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tinysoundfont", None)  # import now raises ImportError
    with pytest.raises(ExportError, match=r"pip install --no-deps tinysoundfont"):
        write_wav(band_score(), tmp_path / "a.wav")
    monkeypatch.delitem(sys.modules, "tinysoundfont")
    monkeypatch.setenv("MIDILLM_SOUNDFONT", str(tmp_path / "missing.sf2"))
    with pytest.raises(ExportError, match="MIDILLM_SOUNDFONT") as info:
        write_wav(band_score(), tmp_path / "b.wav")
    assert "\n" not in str(info.value)
    monkeypatch.delenv("MIDILLM_SOUNDFONT")
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ExportError, match="pip install pretty_midi"):
        write_wav(band_score(), tmp_path / "c.wav")
