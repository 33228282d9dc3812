"""The onsets layout written straight from each part's notes (issue 27: `prepare` at scale).

The general path (`MusicCodec._onset_bars`) asks miditok for each part's REMI tokens, then
splits them by bar and onset, drops the lengths of held notes, orders each onset's notes, merges
the parts and cuts the result into note units: Python over every token of every part, about
0.4 s for a Lakh-sized file (7,500 notes, docs/scale.md). For the settings `prepare` builds
(REMI, programs in one stream, metres and tempos; no rests, chords,
pedals, pitch bends, control changes, key signatures or attribute controls) the same units
follow from the notes themselves: miditok's own `preprocess_score` still quantizes times,
durations, velocities and tempos, and this writes the units from its note arrays.

`tests/test_onsets.py` holds both paths to the same units on the Bach chorales, the band
test files and Lakh-sized band pieces, in both onset times and with an infill's cut. A tokenizer
with other settings, or a metre that changes off a bar line (miditok then writes the metre
inside a bar), takes the general path: `onset_units` returns None.
"""

from __future__ import annotations

import numpy as np
from miditok.utils import compute_ticks_per_beat, get_score_ticks_per_beat
from symusic import Score

from .metre import bar_end_after, bar_length

# Parts: `<Part_k>` opens part k's notes at an onset (codec-level tokens, not miditok's).
PART = "Part"
# The notes struck at one onset (by one program) are written highest first: a canonical order,
# so the model learns "lower than the last one, or move on" (a chord ends at its bass, and no
# pitch is struck twice), and the grammar can enforce it. miditok's own order (by duration, then
# pitch) carries nothing. Codecs saved before this order existed keep theirs (None).
PITCH_DESCENDING = "pitch-descending"
# An onset's time as a move from the bar's last onset (`codec.ONSET_TIMES`: "shift").
SHIFT = "Shift"


def time_token(position: int, previous: int, onset_time: str) -> str:
    """The token that moves time to `position` of the bar from `previous` (the bar's last onset,
    0 at its start): `Shift_k`, or with `onset_time` "position" REMI's `Position_k`."""
    return f"{SHIFT}_{position - previous}" if onset_time == "shift" else f"Position_{position}"


def writes_directly(tokenizer) -> bool:
    """Whether `onset_units` can write this tokenizer's onsets layout without miditok's encoder."""
    config = tokenizer.config
    extra = config.additional_params
    return (type(tokenizer).__name__ == "REMI" and config.use_programs and config.one_token_stream_for_programs
            and config.use_time_signatures and config.use_tempos
            and not (config.use_rests or config.use_chords or config.use_sustain_pedals or config.use_pitch_bends
                     or config.use_control_changes or config.use_key_signatures or config.use_pitch_intervals
                     or tokenizer.attribute_controls or extra.get("use_bar_end_tokens")
                     or extra.get("add_trailing_bars") or extra.get("max_bar_embedding") is not None))


class _Bars:
    """The bar grid of a preprocessed score: metre sections, each starting on a bar line."""

    def __init__(self, score: Score, positions_per_beat: int):
        signatures = [(signature.time, signature.numerator, signature.denominator)
                      for signature in score.time_signatures]
        self.signatures = signatures
        self.starts = np.array([time for time, _, _ in signatures], dtype=np.int64)
        self.bar_ticks, self.position_ticks, self.bars_before = [], [], [0]
        # A grid whose beats do not fill a bar exactly (ticks per quarter not divisible by the
        # denominator) is left to miditok's own encoder.
        whole_beats = True
        for index, (time, numerator, denominator) in enumerate(signatures):
            beat = compute_ticks_per_beat(denominator, score.ticks_per_quarter)  # miditok's, for its positions
            self.bar_ticks.append(int(bar_length(numerator, denominator, score.ticks_per_quarter)))
            self.position_ticks.append(beat // positions_per_beat)
            whole_beats = whole_beats and beat * numerator == self.bar_ticks[-1]
            if index + 1 < len(signatures):
                span = signatures[index + 1][0] - time
                self.bars_before.append(self.bars_before[-1] + span // max(self.bar_ticks[-1], 1))
        self.aligned = (bool(signatures) and signatures[0][0] == 0 and whole_beats
                        and min(self.bar_ticks + self.position_ticks) > 0
                        and all(later[0] > earlier[0] and (later[0] - earlier[0]) % self.bar_ticks[index] == 0
                                for index, (earlier, later) in enumerate(zip(signatures, signatures[1:]))))

    def place(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bar index and position in the bar of each tick."""
        section = np.searchsorted(self.starts, times, side="right") - 1
        bar_ticks = np.asarray(self.bar_ticks)[section]
        into = times - self.starts[section]
        bars = np.asarray(self.bars_before)[section] + into // bar_ticks
        positions = (into % bar_ticks) // np.asarray(self.position_ticks)[section]
        return bars, positions

    def start(self, bar: int) -> int:
        """The tick where bar `bar` (from 0) starts."""
        section = int(np.searchsorted(self.bars_before, bar, side="right") - 1)
        return int(self.starts[section] + (bar - self.bars_before[section]) * self.bar_ticks[section])

    def metre_token(self, bar: int) -> str:
        section = int(np.searchsorted(self.bars_before, bar, side="right") - 1)
        _, numerator, denominator = self.signatures[section]
        return f"TimeSig_{numerator}/{denominator}"


def onset_units(tokenizer, parts: list[Score], note_order: str | None, onset_time: str,
                lengths_before: int | None = None, numbers: list[int] | None = None) -> list[list[tuple[str, ...]]] | None:
    """The onsets layout of these parts (`codec.part_scores`), bar by bar, as note units
    (`codec.note_units`), each onset's time written as `onset_time` says, each part opened by
    `<Part_k>` with k its entry of `numbers` (rising; default 0, 1, 2...): the same units as the
    general path. None where this path does not cover the score."""
    numbers = list(range(len(parts))) if numbers is None else numbers
    prepared = [tokenizer.preprocess_score(part) for part in parts]
    if not prepared or any(len(score.tracks) != 1 for score in prepared):
        return None
    grid = _Bars(prepared[0], tokenizer.config.max_num_pos_per_beat)
    if not grid.aligned or any(score.ticks_per_quarter != prepared[0].ticks_per_quarter
                               or [(s.time, s.numerator, s.denominator) for s in score.time_signatures] != grid.signatures
                               for score in prepared):
        return None
    notes = [score.tracks[0].notes.numpy() for score in prepared]
    if not any(len(part["time"]) for part in notes):
        return []
    last_onset = max(int(part["time"].max()) for part in notes if len(part["time"]))
    piece_end = bar_end_after(grid.signatures, tokenizer.time_division, last_onset)
    last_metre_bar = int(grid.place(grid.starts[-1:])[0][0])

    # slots[bar][position]: the units at that onset, parts rising; part 0's tempos first.
    slots: dict[int, dict[int, list[tuple[str, ...]]]] = {}
    bars_of_part = []
    tempos = prepared[0].tempos
    tempo_bars, tempo_positions = grid.place(np.array([tempo.time for tempo in tempos], dtype=np.int64))
    if len(set(zip(tempo_bars.tolist(), tempo_positions.tolist()))) < len(tempos):
        return None  # two tempos on one position: miditok's order there is not worth copying
    for tempo, bar, position in zip(tempos, tempo_bars.tolist(), tempo_positions.tolist()):
        slots.setdefault(bar, {}).setdefault(position, []).append((f"Tempo_{round(tempo.tempo, 2)}",))
    last_tempo_bar = int(tempo_bars.max()) if len(tempos) else 0

    for number, (score, arrays) in enumerate(zip(prepared, notes)):
        track = score.tracks[0]
        program = -1 if track.is_drum else track.program
        times = arrays["time"].astype(np.int64)
        ends = times + arrays["duration"].astype(np.int64)
        pitches = arrays["pitch"].astype(np.int64)
        bars, positions = grid.place(times)
        part_bars = 1 + max(last_metre_bar, int(bars.max()) if len(times) else 0,
                            last_tempo_bar if number == 0 else 0)
        bars_of_part.append(part_bars)
        if not len(times):
            continue
        # Held notes: a note that lasts exactly to its part's next onset (the last onset's: to
        # the piece's end) is written without its length; with a cut, not across it.
        onsets = np.unique(times)
        following = np.append(onsets[1:], piece_end)[np.searchsorted(onsets, times)]
        held = ends == following
        if lengths_before is not None and lengths_before < part_bars:
            cut = grid.start(lengths_before)
            held &= ~((times < cut) & (cut <= following))
        # miditok's order (by onset, stable); the canonical one puts each onset's notes highest
        # first, except with a program token before every note, which keeps each note apart
        # (and every length written: the decoder could not tell a program change from a part).
        program_changes = tokenizer.config.program_changes
        if not program_changes and len(times) > 1:
            held[:] = False
        order = np.lexsort((-pitches, times)) if note_order == PITCH_DESCENDING and program_changes \
            else np.argsort(times, kind="stable")

        # Each note's unit: its pitch, velocity, and length unless it is held.
        pitch_type = "PitchDrum" if track.is_drum and tokenizer.config.use_pitchdrum_tokens else "Pitch"
        columns = [[f"{pitch_type}_{pitch}" for pitch in pitches[order].tolist()]]
        if not program_changes:
            columns.insert(0, [f"Program_{program}"] * len(order))
        if tokenizer.config.use_velocities:
            columns.append([f"Velocity_{velocity}" for velocity in arrays["velocity"][order].tolist()])
        units = list(zip(*columns))
        if program in tokenizer.config.use_note_duration_programs:
            # The Duration token as miditok names a length at the beats of its metre section.
            names = tokenizer._tpb_ticks_to_tokens
            beat_sections = get_score_ticks_per_beat(score)
            beat_ticks = beat_sections[np.searchsorted(beat_sections[:, 0], times[order], side="right"), 1]
            units = [unit if is_held else unit + ("Duration_" + names[beat][length],)
                     for unit, is_held, beat, length in zip(units, held[order].tolist(), beat_ticks.tolist(),
                                                            arrays["duration"][order].tolist())]
        # Each onset (tick) of the part opens with its part token, the part's first with its
        # program; two ticks on one position stay two runs, as miditok writes them.
        firsts = np.flatnonzero(np.diff(times[order], prepend=-1))
        opening = (f"{PART}_{numbers[number]}",)
        group_bars, group_positions = bars[order[firsts]].tolist(), positions[order[firsts]].tolist()
        firsts = firsts.tolist()
        for rank, (first, last) in enumerate(zip(firsts, firsts[1:] + [len(units)])):
            head = opening + (f"Program_{program}",) if rank == 0 and program_changes else opening
            slot = slots.setdefault(group_bars[rank], {}).setdefault(group_positions[rank], [])
            slot.append(head + units[first])
            slot.extend(units[first + 1:last])

    units_of_bars, metre = [], None
    for bar in range(max(bars_of_part)):
        units: list[tuple[str, ...]] = [("Bar_None",)]
        if bar < bars_of_part[0]:
            written = grid.metre_token(bar)
            if written != metre:
                units.append((written,))
            metre = written
        previous = 0
        for position, slot in sorted(slots.get(bar, {}).items()):
            time = time_token(position, previous, onset_time)
            previous = position
            if slot[0][0].startswith(PART):
                units.append((time,) + slot[0])
                units.extend(slot[1:])
            else:
                units.append((time,))
                units.extend(slot)
        units_of_bars.append(units)
    return units_of_bars
