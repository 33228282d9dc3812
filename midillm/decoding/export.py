"""Export a `symusic.Score` to the files people open: MIDI, MusicXML, WAV and a piano-roll PNG.

Every writer takes a score in any time unit (tick, quarter or second) and fails with an
`ExportError` whose message is one line a user can act on.

- MIDI is symusic's own writer.
- MusicXML goes through music21: the MIDI bytes are parsed with music21's own quantisation
  (16ths and triplet 8ths), which is what turns performance timing into readable notation.
- WAV is rendered with TinySoundFont (`tinysoundfont`, installed with `--no-deps` because
  its only dependency, pyaudio, is for live playback) and the General MIDI SoundFont that
  `pretty_midi` ships. symusic's own synthesizer is not used: under NumPy 2.4 its `render`
  fails to return the audio array.
- PNG is a matplotlib piano roll drawn on a bare Agg figure (no pyplot global state).
"""

from __future__ import annotations

import importlib.util
import os
import wave
from pathlib import Path

import numpy as np
from symusic import Score
from symusic.core import ScoreTick

from midillm.tokenization.caption import DRUMS, instrument_name
from midillm.tokenization.metre import bar_length

__all__ = ["FORMATS", "ExportError", "parse_formats", "export_score", "to_midi_bytes",
           "write_midi", "write_musicxml", "write_wav", "write_png", "find_soundfont"]

FORMATS = ("mid", "musicxml", "wav", "png")
_ALIASES = {"midi": "mid", "xml": "musicxml"}

# music21's quantisation grid: a quarter divided in 4 (16ths) and in 3 (triplet 8ths).
QUARTER_LENGTH_DIVISORS = (4, 3)
# Seconds of audio kept after the last note ends, so release tails are not cut off.
WAV_TAIL_SECONDS = 1.0
SOUNDFONT_NAME = "TimGM6mb.sf2"
SOUNDFONT_ENV = "MIDILLM_SOUNDFONT"
DRUM_CHANNEL = 9
_MELODIC_CHANNELS = [c for c in range(16) if c != DRUM_CHANNEL]


class ExportError(Exception):
    """An export failed; the message is one line meant for the user."""


def parse_formats(text: str) -> list[str]:
    """'mid,musicxml' -> ['mid', 'musicxml']; case, spaces, dots and repeats are forgiven."""
    formats: list[str] = []
    for item in str(text).split(","):
        name = item.strip().lower().lstrip(".")
        if not name:
            continue
        name = _ALIASES.get(name, name)
        if name not in FORMATS:
            raise ExportError(f"unknown export format {item.strip()!r}; "
                              f"choose from {', '.join(FORMATS)}")
        if name not in formats:
            formats.append(name)
    if not formats:
        raise ExportError(f"no export format given; choose from {', '.join(FORMATS)}")
    return formats


def export_score(score: Score, path_stem: Path, formats: list[str]) -> dict[str, Path]:
    """Write `path_stem.<format>` for each format; returns format -> path written."""
    formats = parse_formats(",".join(formats))
    path_stem = Path(path_stem)
    writers = {"mid": write_midi, "musicxml": write_musicxml, "wav": write_wav, "png": write_png}
    written: dict[str, Path] = {}
    for fmt in formats:
        # Not with_suffix: a stem such as "sample.0" would lose its ".0".
        path = path_stem.parent / f"{path_stem.name}.{fmt}"
        writers[fmt](score, path)
        written[fmt] = path
    return written


# ---------------------------------------------------------------------------------------------
# MIDI


def _as_tick(score: Score) -> ScoreTick:
    return score if isinstance(score, ScoreTick) else score.to("tick")


def to_midi_bytes(score: Score) -> bytes:
    """The score as a Standard MIDI File, in memory."""
    return bytes(_as_tick(score).dumps_midi())


def write_midi(score: Score, path: Path) -> Path:
    path = _prepare(path)
    try:
        path.write_bytes(to_midi_bytes(score))
    except OSError as error:
        raise ExportError(f"cannot write {path}: {error.strerror or error}") from error
    return path


# ---------------------------------------------------------------------------------------------
# MusicXML


def write_musicxml(score: Score, path: Path) -> Path:
    """Quantise with music21 (MIDI import, divisors 4 and 3) and write MusicXML."""
    from music21 import meter, note, stream
    from music21.midi.translate import midiStringToStream

    path = _prepare(path)
    try:
        if _note_count(score) == 0:
            # music21 refuses a MIDI file without tracks; an empty bar is the honest score.
            m21 = stream.Score([stream.Part([meter.TimeSignature("4/4"), note.Rest(quarterLength=4)])])
        else:
            m21 = midiStringToStream(to_midi_bytes(score), quantizePost=True,
                                     quarterLengthDivisors=QUARTER_LENGTH_DIVISORS)
        m21.write("musicxml", fp=str(path))
    except OSError as error:
        raise ExportError(f"cannot write {path}: {error.strerror or error}") from error
    except Exception as error:  # music21 raises many kinds; the user needs one line
        raise ExportError(f"MusicXML export failed: {_one_line(error)}") from error
    return path


# ---------------------------------------------------------------------------------------------
# WAV


def find_soundfont() -> Path:
    """The General MIDI SoundFont: $MIDILLM_SOUNDFONT, else the one pretty_midi ships."""
    override = os.environ.get(SOUNDFONT_ENV)
    if override:
        if not Path(override).is_file():
            raise ExportError(f"{SOUNDFONT_ENV}={override} is not a file")
        return Path(override)
    # find_spec, not import: the file is all we need, and importing pretty_midi is slow.
    spec = importlib.util.find_spec("pretty_midi")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / SOUNDFONT_NAME
        if candidate.is_file():
            return candidate
    raise ExportError(f"WAV export needs a General MIDI SoundFont: pip install pretty_midi "
                      f"(it ships {SOUNDFONT_NAME}) or set {SOUNDFONT_ENV}")


def _synth_class():
    try:
        from tinysoundfont import Synth
    except ImportError as error:
        raise ExportError("WAV export needs tinysoundfont: "
                          "pip install --no-deps tinysoundfont") from error
    return Synth


def render_audio(score: Score, sample_rate: int = 22050,
                 soundfont: Path | None = None) -> np.ndarray:
    """Stereo float32 audio, shape (frames, 2), of the score plus a short release tail."""
    synth_class = _synth_class()
    soundfont = Path(soundfont) if soundfont else find_soundfont()
    seconds = score.to("second")
    frames = int(round((max(seconds.end(), 0.0) + WAV_TAIL_SECONDS) * sample_rate))
    audio = np.zeros((frames, 2), dtype=np.float32)
    tracks = [track for track in seconds.tracks if len(track.notes)]
    drums = [track for track in tracks if track.is_drum]
    melodic = [track for track in tracks if not track.is_drum]
    # One synth has 16 channels; a score with more melodic tracks is rendered in passes and mixed.
    size = len(_MELODIC_CHANNELS)
    passes = [melodic[i:i + size] for i in range(0, len(melodic), size)] or [[]]
    for index, group in enumerate(passes):
        if not group and not (index == 0 and drums):
            continue
        audio += _render_pass(synth_class, soundfont, group, drums if index == 0 else [],
                              sample_rate, frames)
    peak = float(np.abs(audio).max()) if frames else 0.0
    if peak > 0.99:  # many voices at once can exceed full scale: scale down rather than clip
        audio *= 0.99 / peak
    return audio


def _render_pass(synth_class, soundfont: Path, melodic, drums, sample_rate: int,
                 frames: int) -> np.ndarray:
    synth = synth_class(samplerate=sample_rate)
    try:
        sfid = synth.sfload(str(soundfont))
    except Exception as error:
        raise ExportError(f"cannot load SoundFont {soundfont}: {_one_line(error)}") from error
    # Events as (frame, order, kind, channel, a, b); at one frame: controls, then note-offs,
    # then note-ons, so a repeated pitch is re-struck and a new volume applies to its note.
    events: list[tuple[int, int, int, int, int, int]] = []
    for channel, track in zip(_MELODIC_CHANNELS, melodic):
        _select(synth, channel, sfid, 0, track.program, False)
        _track_events(events, track, channel, sample_rate)
    if drums:
        # GM drum kits live in bank 128; the kit number is the track's program.
        _select(synth, DRUM_CHANNEL, sfid, 128, drums[0].program, True)
        for track in drums:
            _track_events(events, track, DRUM_CHANNEL, sample_rate)
    events.sort()

    buffer = memoryview(bytearray(frames * 2 * 4))  # stereo float32
    position = 0
    for frame, _order, kind, channel, a, b in events:
        frame = min(frame, frames)
        if frame > position:  # render the whole block between two events in one call
            synth.generate_simple(frame - position, buffer=buffer[position * 8:frame * 8])
            position = frame
        if kind == 2:
            synth.noteon(channel, a, b)
        elif kind == 1:
            synth.noteoff(channel, a)
        elif kind == 0:
            synth.control_change(channel, a, b)
        else:
            synth.pitchbend(channel, a)
    if frames > position:
        synth.generate_simple(frames - position, buffer=buffer[position * 8:frames * 8])
    return np.frombuffer(buffer, dtype=np.float32).reshape(frames, 2).copy()


def _select(synth, channel: int, sfid: int, bank: int, program: int, is_drums: bool) -> None:
    try:
        synth.program_select(channel, sfid, bank, program, is_drums)
    except RuntimeError:  # preset missing from this SoundFont: fall back to its first one
        synth.program_select(channel, sfid, bank, 0, is_drums)


def _track_events(events: list, track, channel: int, sample_rate: int) -> None:
    notes = track.notes.numpy()
    starts = np.round(notes["time"].astype(np.float64) * sample_rate).astype(np.int64)
    ends = np.round((notes["time"].astype(np.float64) + notes["duration"]) * sample_rate)
    # A note must last at least a few milliseconds, or its off would precede its own on.
    ends = np.maximum(ends.astype(np.int64), starts + max(1, sample_rate // 200))
    pitches = notes["pitch"].astype(np.int64)
    velocities = np.clip(notes["velocity"].astype(np.int64), 1, 127)
    for start, end, pitch, velocity in zip(starts.tolist(), ends.tolist(), pitches.tolist(),
                                           velocities.tolist()):
        events.append((max(start, 0), 2, 2, channel, pitch, velocity))
        events.append((max(end, 0), 1, 1, channel, pitch, 0))
    for control in track.controls:
        events.append((max(int(round(control.time * sample_rate)), 0), 0, 0, channel,
                       int(control.number), int(control.value)))
    for bend in track.pitch_bends:
        events.append((max(int(round(bend.time * sample_rate)), 0), 0, 3, channel,
                       int(bend.value) + 8192, 0))


def write_wav(score: Score, path: Path, sample_rate: int = 22050,
              soundfont: Path | None = None) -> Path:
    """Render with the General MIDI SoundFont and write 16-bit stereo PCM."""
    audio = render_audio(score, sample_rate=sample_rate, soundfont=soundfont)
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    path = _prepare(path)
    try:
        with wave.open(str(path), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(int(sample_rate))
            out.writeframes(pcm.tobytes())
    except OSError as error:
        raise ExportError(f"cannot write {path}: {error.strerror or error}") from error
    return path


# ---------------------------------------------------------------------------------------------
# PNG


def _bar_lines(score_quarter, end: float) -> list[float]:
    """Bar starts in quarter notes, from the time signatures (4/4 where there is none)."""
    signatures = sorted((float(ts.time), ts.numerator, ts.denominator)
                        for ts in score_quarter.time_signatures)
    if not signatures or signatures[0][0] > 0:
        signatures.insert(0, (0.0, 4, 4))
    bars: list[float] = []
    for index, (start, numerator, denominator) in enumerate(signatures):
        stop = signatures[index + 1][0] if index + 1 < len(signatures) else end
        length = bar_length(numerator, denominator)
        if length <= 0:
            continue
        time = start
        while time < stop - 1e-9 and len(bars) < 100_000:
            bars.append(time)
            time += length
    bars.append(end)
    return bars


def write_png(score: Score, path: Path, width: int = 1200, height: int = 400) -> Path:
    """A piano roll: x in beats with bar lines, y in MIDI pitch, one colour per instrument."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    width, height = int(width), int(height)
    if width < 50 or height < 50:
        raise ExportError(f"PNG size {width}x{height} is too small (at least 50x50)")
    path = _prepare(path)
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, set on this figure only: pyplot's backend is untouched
    quarter = score.to("quarter")
    groups: dict[tuple[bool, int, str], list[np.ndarray]] = {}
    for track in quarter.tracks:
        if len(track.notes):
            notes = track.notes.numpy()
            # One colour per instrument, and per named part of it (a chorale's four voices).
            key = (bool(track.is_drum), 0 if track.is_drum else int(track.program), track.name.strip())
            groups.setdefault(key, []).append(np.stack(
                [notes["time"], notes["duration"], notes["pitch"].astype(np.float32)], axis=1))

    if not groups:
        fig.text(0.5, 0.5, "no notes", ha="center", va="center", fontsize=20, color="0.4")
    else:
        ax = fig.add_subplot()
        end = max(float(quarter.end()), 1.0)
        low, high = 127.0, 0.0
        colours = matplotlib.colormaps["tab10" if len(groups) <= 10 else "tab20"]
        handles = []
        # Parts in score order, drums last; the legend follows the same order.
        for index, key in enumerate(sorted(groups, key=lambda k: k[0])):
            data = np.concatenate(groups[key])
            start, duration, pitch = data[:, 0], np.maximum(data[:, 1], end / 2000), data[:, 2]
            low, high = min(low, float(pitch.min())), max(high, float(pitch.max()))
            # One polygon collection per instrument: thousands of notes draw in milliseconds.
            verts = np.stack([np.stack([start, pitch - 0.4], 1),
                              np.stack([start + duration, pitch - 0.4], 1),
                              np.stack([start + duration, pitch + 0.4], 1),
                              np.stack([start, pitch + 0.4], 1)], axis=1)
            colour = colours(index % colours.N)
            ax.add_collection(PolyCollection(verts, facecolors=colour, edgecolors="none",
                                             alpha=0.85, zorder=2))
            instrument = instrument_name(DRUMS if key[0] else key[1])
            handles.append(Patch(color=colour, label=f"{key[2]} ({instrument})" if key[2] and key[2] != instrument
                                 else instrument))
        bars = _bar_lines(quarter, end)
        for bar in bars:
            ax.axvline(bar, color="0.75", linewidth=0.6, zorder=1)
        ax.set_xlim(0, end)
        ax.set_ylim(low - 2, high + 2)
        ax.set_xlabel("beats (quarter notes)")
        ax.set_ylabel("MIDI pitch")
        # Bar numbers along the top, thinned so the labels never overlap.
        top = ax.secondary_xaxis("top")
        step = max(1, int(np.ceil(len(bars) / max(2, width // 50))))
        top.set_xticks(bars[:-1][::step], [str(i + 1) for i in range(0, len(bars) - 1, step)])
        top.tick_params(labelsize=7, length=2)
        top.set_xlabel("bar", fontsize=8)
        # Many instruments: more legend columns, never more rows than the figure is tall (a
        # legend taller than the figure squeezes the roll to nothing).
        rows_that_fit = max(1, (height - 60) // 12)
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False,
                  borderaxespad=0, ncols=int(np.ceil(len(handles) / rows_that_fit)))
    try:
        # No bbox_inches="tight": the image must be exactly width x height pixels.
        fig.savefig(str(path), format="png", dpi=dpi)
    except OSError as error:
        raise ExportError(f"cannot write {path}: {error.strerror or error}") from error
    return path


# ---------------------------------------------------------------------------------------------


def _note_count(score: Score) -> int:
    return sum(len(track.notes) for track in score.tracks)


def _prepare(path: Path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"cannot create {path.parent}: {error.strerror or error}") from error
    return path


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
