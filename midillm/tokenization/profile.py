"""What a corpus allows: measured once by `prepare`, kept in the codec, read by the grammar and eval.

A listener judges a generated piece against the music it imitates: no onset with more notes
than the corpus has, no instrument it never uses, time that moves about as it does there, an
ending. `CorpusProfile` holds those facts (from the train split only) and the tokenizer settings
they imply: a velocity that never changes and a program that never changes between notes carry
no information, so they get no tokens; the time grid and the longest duration follow the corpus,
so held notes and fast ornaments keep their length.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
from symusic import Score

from .caption import DENSITY, DENSITY_BINS, DRUMS, part_names, typical_caption, with_fields, without_title
from .metre import bar_length
from .roles import track_role
from .voice_leading import parallel_motion

# Candidate grids, in positions per beat: the smallest that holds (almost) every onset and
# duration of the corpus wins. 12 and 24 hold triplets.
GRID_CANDIDATES = (4, 8, 12, 16, 24)
# Share of onsets / durations a grid must hold exactly to be chosen.
GRID_COVERAGE = 0.995
# The cap on notes per onset ignores the rarest 1% of onsets: in the 410 chorales a few doubled
# instrumental parts reach 15 notes at once, while 94% of onsets have at most 4 and 99% at most 8.
ONSET_QUANTILE = 0.99
# Durations below 12 beats keep the default fine bins; longer ones get one bin per beat up to
# the corpus's longest note (organ points, held final chords).
LONG_DURATION_BEATS = 12
# A part that rests longer than this (beats) between two notes of one pitch did not stay on it.
SAME_PITCH_MAX_REST_BEATS = 2.0
MAX_DURATION_BEATS = 128
# Loudness levels a note's velocity is rounded to where a corpus's velocities vary (miditok's
# `num_velocities`; its default, 32, before 2026-12-06). A band corpus's notes vary in part,
# pitch, length and velocity, so each extra level splits the note compounds further: with 32,
# 63% of the band tunes' notes were one token each (docs/bands.md, "Fewer loudness levels").
VELOCITY_LEVELS = 8
# A part's longest rest and its notes per beat are judged against the train parts of its role,
# ignoring the rarest 1% at each end (a track that only plays the intro of one tune).
PART_QUANTILE = 0.99
# A part's notes per beat are judged on a sample, about eight bars, so the corpus's are measured
# on excerpts of that length: a band tune's guitar that sits out half the tune plays twice its
# whole-tune rate where it plays. Measured over whole tunes, 53 of 160 real 8-bar band excerpts
# (leave-one-out, scripts/sanity_calibration.py) were denser or sparser than their role allows.
# At most DENSITY_EXCERPTS per piece, spread over it, so a 900-bar tune weighs as a 60-bar one.
DENSITY_EXCERPT_BARS = 8
DENSITY_EXCERPTS = 8
# A program's pitch range is its General MIDI family's (eight programs: pianos, basses, reeds...)
# in the corpus: a band corpus plays a program in a tune or two, so the program's own range is
# that tune's. Judged leave-one-out on 41 real band tunes (scripts/sanity_calibration.py), 34
# had a note outside the others' range for its program, 15 outside its family's.
PROGRAMS_PER_FAMILY = 8
# The share of a piece's notes that may lie outside those ranges: leave-one-out, 7 of the 41
# tunes had more than 1% of their notes outside their family's range, and a part written in
# another instrument's register (a bass line an octave up) is far more than 1% of a piece.
OUT_OF_RANGE_SHARE = 0.01
# The train pieces' own captions (titles left out) the profile keeps as default prompts: the
# most common ones, ties in an order drawn with a fixed seed, so that `prepare` stays reproducible.
DEFAULT_CAPTIONS = 64
# How far the corpus's parts avoid parallel fifths and octaves is measured on its first pieces
# with two pitched parts or more (music21's quartets cost about 40 ms a chorale, 125 ms a band
# tune): enough to tell a chorale corpus from a band's, a bounded cost on any corpus.
VOICE_LEADING_PIECES = 64
# A corpus whose parts move in parallel fifths or octaves on fewer moves than this avoids them,
# and strict voice leading is its default: forbidding what the corpus rarely does costs its music
# little. Measured per move between two parts: Bach's chorales 0.018 (their first 64 pieces) to
# 0.036 (120), colla parte doublings of the instruments included (their four voices alone:
# 0.004); 20 band game tunes 0.42, where doubling a line in octaves is the habit.
AVOIDS_PARALLELS_BELOW = 0.05
# The same measure for each count of pitched parts, on up to this many pieces of each count (and
# this many pieces in all): a corpus's habit depends on how many parts play. The chorales' four
# voices move in parallel on 0.002 of their moves; with five to nine parts (trumpets, timpani and
# strings doubling the voices colla parte) on 0.06-0.08, and a request for eight parts kept to
# four-voice rules by the first met a dead end on a third of its steps (docs/benchmarks.md).
VOICE_LEADING_PIECES_PER_COUNT = 32
VOICE_LEADING_PIECES_MOST = 256
# A count of parts measured on fewer pieces than this is judged with the pieces of the next counts
# up (more parts double more): the chorales' one nine-part piece with their 12-, 14- and 15-part ones.
VOICE_LEADING_PIECES_LEAST = 3
DEFAULT_CAPTIONS_SEED = 0


@dataclass
class CorpusProfile:
    """Facts about the train pieces that tokenization, the grammar and the sanity check use."""

    pieces: int = field(default=0, metadata={"help": "Pieces measured (the train split)."})
    notes: int = field(default=0, metadata={"help": "Notes in those pieces."})
    velocities: list[int] = field(default_factory=list, metadata={"help": "Distinct note velocities."})
    programs: dict[int, int] = field(default_factory=dict, metadata={
        "help": "Program (-1 = drums) -> pieces that play it."})
    pitch_ranges: dict[int, list[int]] = field(default_factory=dict, metadata={
        "help": "Program -> [lowest, highest] pitch it plays."})
    time_signatures: dict[str, int] = field(default_factory=dict, metadata={
        "help": "Time signature ('4/4') -> how many times it occurs."})
    notes_per_onset: dict[int, int] = field(default_factory=dict, metadata={
        "help": "Histogram: notes struck at one onset (all tracks) -> onsets."})
    max_unison: int = field(default=1, metadata={
        "help": "The most times one program strikes one pitch at one onset (voices in unison), 99% of pieces."})
    max_notes_per_onset: int = field(default=0, metadata={
        "help": "The most notes at one onset, ignoring the rarest 1% of onsets: the sampler's cap on every onset."})
    excerpt_max_notes_per_onset: int = field(default=0, metadata={
        "help": f"The most notes at one onset of a {DENSITY_EXCERPT_BARS}-bar excerpt, ignoring the rarest 1% of "
                f"the train pieces' excerpts (`excerpts`): what sanity judges a sample's most crowded onset by, a "
                f"sample being about an excerpt long; 0: not measured (judged by `max_notes_per_onset`)."})
    mean_notes_per_onset: float = field(default=0.0, metadata={"help": "Mean notes struck at one onset."})
    max_programs_per_piece: int = field(default=0, metadata={"help": "The most programs one piece plays."})
    max_parts: int = field(default=0, metadata={
        "help": "The most played tracks (parts) one piece has; 0: not measured."})
    part_ranges: dict[str, list[int]] = field(default_factory=dict, metadata={
        "help": "Part name -> [lowest, highest] pitch of the parts of that name (a chorale's Bass)."})
    max_gap_beats: float = field(default=0.0, metadata={
        "help": "Longest time without a new onset inside a piece (99th percentile over pieces), in beats."})
    max_same_pitch_beats: float = field(default=0.0, metadata={
        "help": "Longest stretch one part stays on one pitch, held or struck again (99th percentile over "
                "pieces), in beats; 0: not measured."})
    positions_per_beat: int = field(default=8, metadata={
        "help": "Time grid that holds the corpus's onsets, in steps per beat of the finest metre (miditok's beat)."})
    max_duration_beats: float = field(default=0.0, metadata={
        "help": "Longest note, in beats of its piece's metre (miditok's beat: an eighth in 6/8)."})
    bars: list[int] = field(default_factory=list, metadata={
        "help": "Bars per piece: [shortest, median, longest]."})
    music_tokens: list[int] = field(default_factory=list, metadata={
        "help": "Music tokens per piece after tokenization: [median, 95th percentile, longest]."})
    caption: str = field(default="", metadata={
        "help": "A caption typical of the corpus (each field's most common value, so it may describe no "
                "piece): the neutral context retrieval embeds under and accompaniments take their style "
                "from; the default prompt only of a codec saved before `captions`."})
    role_rest_beats: dict[str, float] = field(default_factory=dict, metadata={
        "help": "Role (`roles.part_role`: Drums, Bass, Piano...) -> the longest a part of that role is silent in "
                "its piece, in beats (99th percentile over the train parts; `part_activity`); empty: not measured."})
    role_notes_per_beat: dict[str, list[float]] = field(default_factory=dict, metadata={
        "help": f"Role -> [low, high] notes per beat of a part of that role in {DENSITY_EXCERPT_BARS}-bar excerpts "
                f"of its piece (`excerpts`; 1st and 99th percentiles over the train parts' excerpts, before "
                f"2026-12-06 over whole pieces); empty: not measured."})
    captions: dict[str, int] = field(default_factory=dict, metadata={
        "help": f"A train piece's own caption (title left out) -> how many train pieces have it, for the "
                f"{DEFAULT_CAPTIONS} most common: the default prompts, one drawn per request by its seed "
                "in proportion to these counts."})
    parallels_per_move: float | None = field(default=None, metadata={
        "help": f"Parallel fifths and octaves per move between two parts (`voice_leading.parallel_motion`) in "
                f"the first {VOICE_LEADING_PIECES} train pieces with two pitched parts or more; None: not "
                "measured (no such piece, or a profile from before 2026-12-05)."})
    parallels_by_parts: dict[int, list[int]] = field(default_factory=dict, metadata={
        "help": f"Count of pitched parts -> [pieces, moves, parallel fifths and octaves] in the train pieces with "
                f"that many (up to {VOICE_LEADING_PIECES_PER_COUNT} of each): where strict voice leading is the "
                "default for a request of that many parts; empty: not measured (a profile from before 2026-12-06)."})
    density_edges: list[float] = field(default_factory=list, metadata={
        "help": "Notes per beat per part (`piece_density`) of the train pieces at their thirds: a caption's "
                "Density is sparse below the first, dense from the second, medium between; empty: not measured "
                "(a profile from before 2026-12-05, or pieces all alike)."})
    keys: dict[str, int] = field(default_factory=dict, metadata={
        "help": "The train pieces' own keys (\"G major\") -> how many pieces are in each, measured before "
                "`prepare --common-key` moved them to C: what a request without a key is written in, "
                "drawn by its seed in proportion to these counts."})

    # ------------------------------------------------------------------------ derived facts

    @property
    def constant_velocity(self) -> bool:
        return len(self.velocities) <= 1

    @property
    def avoids_parallels(self) -> bool:
        """Whether the corpus's parts avoid parallel fifths and octaves (`AVOIDS_PARALLELS_BELOW`):
        then strict voice leading is a request's default."""
        return self.parallels_per_move is not None and self.parallels_per_move < AVOIDS_PARALLELS_BELOW

    def avoids_parallels_with(self, parts: int | None) -> bool:
        """Whether the corpus's pieces of this many pitched parts avoid parallels: strict voice
        leading's default for a request of `parts` parts. The count can only take strictness
        away from a corpus that avoids them as a whole (`avoids_parallels`): a band's few
        three-part tunes do not make its file-ordered parts voices listed from the top down. A
        count measured on too few pieces is pooled with the next counts up
        (`VOICE_LEADING_PIECES_LEAST`); one above every count measured (or None: unknown) is
        the whole corpus's habit."""
        if not self.avoids_parallels:
            return False
        pieces = moves = parallels = 0
        for count in sorted(count for count in self.parallels_by_parts if parts is not None and count >= parts):
            if pieces >= VOICE_LEADING_PIECES_LEAST:
                break
            counted = self.parallels_by_parts[count]
            pieces, moves, parallels = pieces + counted[0], moves + counted[1], parallels + counted[2]
        if not moves:
            return True
        return parallels / moves < AVOIDS_PARALLELS_BELOW

    def pitch_range(self, program: int) -> tuple[int, int] | None:
        """The pitches the corpus gives `program` (-1: drums): the lowest and highest its General
        MIDI family plays in the corpus (`PROGRAMS_PER_FAMILY`); None where no program of the
        family plays."""
        family = [bounds for other, bounds in self.pitch_ranges.items()
                  if (other == program if program < 0 or other < 0
                      else other // PROGRAMS_PER_FAMILY == program // PROGRAMS_PER_FAMILY)]
        if not family:
            return None
        return min(low for low, _ in family), max(high for _, high in family)

    def density_of(self, score: Score) -> str | None:
        """The piece's Density bin against this corpus's thirds (`density_edges`); None where
        they were not measured or the piece has no notes."""
        density = piece_density(score)
        if not self.density_edges or density is None:
            return None
        return density_bin(density, self.density_edges)

    @property
    def program_list(self) -> list[int]:
        return sorted(self.programs)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> CorpusProfile:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        profile = cls(**known)
        # JSON turns int keys into strings.
        profile.programs = {int(key): value for key, value in profile.programs.items()}
        profile.pitch_ranges = {int(key): list(value) for key, value in profile.pitch_ranges.items()}
        profile.notes_per_onset = {int(key): value for key, value in profile.notes_per_onset.items()}
        profile.parallels_by_parts = {int(key): list(value) for key, value in profile.parallels_by_parts.items()}
        return profile


def played_tracks(score: Score):
    """(program, notes as a numpy record array) for each track with notes; drums are -1."""
    for track in score.tracks:
        if track.note_num():
            yield (DRUMS if track.is_drum else int(track.program)), track.notes.numpy()


def first_bars(score: Score, bars: int) -> Score:
    """The score up to the end of its `bars`-th bar (metre from its first time signature)."""
    quarters = score.to("quarter")
    if len(quarters.time_signatures):
        signature = quarters.time_signatures[0]
        length = bar_length(signature.numerator, signature.denominator)
    else:
        length = 4.0
    first_onset = min((track.notes[0].time for track in quarters.tracks if len(track.notes)), default=0.0)
    end = (int(first_onset // length) + bars) * length
    ticks = score.to("tick")
    return ticks.clip(0, int(round(end * ticks.tpq)), clip_end=True)


def excerpts(score: Score, bars: int, count: int) -> Iterator[tuple[int, Score]]:
    """Up to `count` excerpts of `bars` bars (metre from the first time signature), spread evenly
    from the bar of the first onset to the end: (the excerpt's index among the piece's
    `bars`-bar windows, the excerpt as a tick score starting at 0, notes cut at its end).
    Excerpts without a note are skipped."""
    quarters = score.to("quarter")
    signature = quarters.time_signatures[0] if len(quarters.time_signatures) else None
    length = bar_length(signature.numerator, signature.denominator) if signature else 4.0
    first = min((track.notes[0].time for track in quarters.tracks if len(track.notes)), default=0.0)
    start_bar, total_bars = int(first // length), int(quarters.end() // length) + 1
    windows = max(1, (total_bars - start_bar) // bars)
    taken = min(count, windows)
    chosen = sorted({round(i * (windows - 1) / max(taken - 1, 1)) for i in range(taken)})
    ticks = score.to("tick")
    for window in chosen:
        begin = int(round((start_bar + window * bars) * length * ticks.tpq))
        end = int(round((start_bar + (window + 1) * bars) * length * ticks.tpq))
        excerpt = ticks.clip(begin, end, clip_end=True).shift_time(-begin)
        if any(track.note_num() for track in excerpt.tracks):
            yield window, excerpt


def longest_same_pitch_beats(score: Score) -> float:
    """The longest stretch, in beats (quarter notes), in which one part stays on one pitch: a run
    of its consecutive notes (by onset, highest first) on that pitch, held or struck again, from
    the first one's onset to the last one's end. A rest longer than `SAME_PITCH_MAX_REST_BEATS`
    ends a run (a part that falls silent and comes back on its pitch has not stuck). Drum parts
    are left out: a drum repeats its hit.

    A voice stuck on one note for thirty bars passes every other check (notes per onset, gaps,
    ranges); this is the measure that catches it. On the 410 chorales: median 5 beats, 99th
    percentile 16.5, longest 22."""
    longest = 0.0
    for track in score.tracks:
        if track.is_drum or not track.note_num():
            continue
        notes = track.notes.numpy()
        order = np.lexsort((-notes["pitch"].astype(np.int64), notes["time"]))
        pitch = notes["pitch"][order]
        starts = notes["time"][order].astype(np.int64)
        ends = starts + notes["duration"][order].astype(np.int64)
        sounding_until = np.maximum.accumulate(ends)
        breaks = (np.diff(pitch) != 0) | (starts[1:] - sounding_until[:-1]
                                          > SAME_PITCH_MAX_REST_BEATS * score.ticks_per_quarter)
        run_starts = np.concatenate([[0], np.flatnonzero(breaks) + 1])
        run_ends = np.maximum.reduceat(ends, run_starts)
        longest = max(longest, float((run_ends - starts[run_starts]).max()) / score.ticks_per_quarter)
    return longest


def part_activity(score: Score) -> list[tuple[str, float, float]]:
    """Each played track as a listener of a band hears it: (its role, the longest it is silent,
    in beats, its notes per beat). The piece runs from its first onset to the end of its last
    note, any part's; a part is silent before its first note, between the end of what it sounds
    and its next onset, and after its last note. Drums, held notes and chords alike: a part
    sounds while any of its notes does."""
    tracks = [track for track in score.tracks if track.note_num()]
    if not tracks:
        return []
    tpq = score.ticks_per_quarter
    arrays = [track.notes.numpy() for track in tracks]
    start = min(int(notes["time"].min()) for notes in arrays)
    end = max(int((notes["time"] + notes["duration"]).max()) for notes in arrays)
    beats = max(end - start, 1) / tpq
    activity = []
    for track, notes in zip(tracks, arrays):
        order = np.argsort(notes["time"], kind="stable")
        onsets = notes["time"][order].astype(np.int64)
        sounding_until = np.maximum.accumulate((notes["time"] + notes["duration"])[order].astype(np.int64))
        silences = np.concatenate([[onsets[0] - start], onsets[1:] - sounding_until[:-1], [end - sounding_until[-1]]])
        activity.append((track_role(track), float(max(int(silences.max()), 0)) / tpq, len(onsets) / beats))
    return activity


def piece_density(score: Score) -> float | None:
    """How busy a piece is: notes per beat (quarter note) of each played part, over the piece
    (`part_activity`), averaged over its parts, so that a four-part and a seven-part chorale in
    quarter notes read alike. None for a piece without notes."""
    activity = part_activity(score)
    return float(np.mean([density for _, _, density in activity])) if activity else None


def density_bin(density: float, edges: list[float]) -> str:
    """One of `caption.DENSITY_BINS` for notes per beat per part: sparse below edges[0], dense
    from edges[1], medium between."""
    return DENSITY_BINS[int(np.searchsorted(edges, density, side="right"))]


def density_edges(densities: list[float]) -> list[float]:
    """The thirds of the pieces' densities: each bin holds a third of the pieces. None (an
    empty list) where the pieces are all alike (a corpus of block chords in quarter notes): a
    Density line would say the same of every piece."""
    edges = [round(float(edge), 4) for edge in np.quantile(densities, [1 / 3, 2 / 3])] if densities else []
    return edges if edges and edges[0] < edges[1] else []


def _grid_for(ticks: np.ndarray, ticks_per_quarter: int) -> int:
    """The coarsest candidate grid (positions per beat) that holds GRID_COVERAGE of these times."""
    for grid in GRID_CANDIDATES:
        if ticks_per_quarter % grid:
            continue
        step = ticks_per_quarter // grid
        if ticks.size == 0 or np.mean(ticks % step == 0) >= GRID_COVERAGE:
            return grid
    return GRID_CANDIDATES[-1]


def measure_corpus(scores: Iterable[Score], captions: Iterable[str] = ()) -> CorpusProfile:
    """Measure the pieces (symusic Scores) and their captions into a `CorpusProfile`: the
    captions (one per piece, in order) are kept with each piece's Density line added. The
    captions are read after the scores, so a caller may write them while its scores are read
    (`prepare` reads each file once)."""
    velocities: set[int] = set()
    programs: Counter = Counter()
    pitch_low: dict[int, int] = {}
    pitch_high: dict[int, int] = {}
    time_signatures: Counter = Counter()
    onset_histogram: Counter = Counter()
    programs_per_piece: list[int] = []
    parts_per_piece: list[int] = []
    part_low: dict[str, int] = {}
    part_high: dict[str, int] = {}
    unisons: list[int] = []
    gaps: list[float] = []
    same_pitch: list[float] = []
    role_rests: dict[str, list[float]] = {}
    role_densities: dict[str, list[float]] = {}
    excerpt_crowding: list[int] = []  # each excerpt's most notes at one onset
    bars: list[int] = []
    grids: Counter = Counter()
    max_duration = 0.0
    pieces = notes = 0
    voice_leading_pieces = moves = parallels = 0
    by_parts: dict[int, list[int]] = {}  # pitched parts -> [pieces, moves, parallels]
    densities: list[float | None] = []  # each piece's notes per beat per part, in the captions' order
    for score in scores:
        tpq = score.ticks_per_quarter
        # miditok counts durations in beats of the metre (eighths in 6/8, halves in 2/2).
        beats_per_quarter = max([signature.denominator for signature in score.time_signatures] or [4]) / 4
        piece_programs = set()
        onsets: Counter = Counter()
        struck: Counter = Counter()
        times = []
        for program, array in played_tracks(score):
            piece_programs.add(program)
            velocities.update(np.unique(array["velocity"]).tolist())
            pitches = array["pitch"]
            pitch_low[program] = min(pitch_low.get(program, 127), int(pitches.min()))
            pitch_high[program] = max(pitch_high.get(program, 0), int(pitches.max()))
            onsets.update(array["time"].tolist())
            struck.update(zip([program] * len(pitches), array["time"].tolist(), pitches.tolist()))
            times.append(array["time"])
            times.append(array["duration"])
            max_duration = max(max_duration, float(array["duration"].max()) / tpq * beats_per_quarter)
            notes += len(array["time"])
        if not onsets:
            densities.append(None)
            continue
        pieces += 1
        for program in piece_programs:
            programs[program] += 1
        programs_per_piece.append(len(piece_programs))
        parts_per_piece.append(sum(1 for track in score.tracks if track.note_num()))
        for name, track in zip(part_names(score), [track for track in score.tracks if track.note_num()]):
            if track.is_drum:
                continue
            pitches = track.notes.numpy()["pitch"]
            part_low[name] = min(part_low.get(name, 127), int(pitches.min()))
            part_high[name] = max(part_high.get(name, 0), int(pitches.max()))
        unisons.append(max(struck.values()))
        onset_histogram.update(onsets.values())
        ordered = sorted(onsets)
        steps = np.diff([0] + ordered) / tpq if ordered else np.zeros(0)
        gaps.append(float(steps.max()) if steps.size else 0.0)
        same_pitch.append(longest_same_pitch_beats(score))
        pitched = sum(1 for track in score.tracks if track.note_num() and not track.is_drum)
        counted = by_parts.setdefault(pitched, [0, 0, 0]) if pitched >= 2 else None
        overall = counted is not None and voice_leading_pieces < VOICE_LEADING_PIECES
        if overall or counted is not None and counted[0] < VOICE_LEADING_PIECES_PER_COUNT and \
                sum(count[0] for count in by_parts.values()) < VOICE_LEADING_PIECES_MOST:
            motion = parallel_motion(score)
            if overall:
                voice_leading_pieces += 1
                moves += motion["moves"]
                parallels += motion["parallels"]
            if counted[0] < VOICE_LEADING_PIECES_PER_COUNT:
                counted[0] += 1
                counted[1] += motion["moves"]
                counted[2] += motion["parallels"]
        activity = part_activity(score)
        for role, rest, _ in activity:
            role_rests.setdefault(role, []).append(rest)
        for _, excerpt in excerpts(score, DENSITY_EXCERPT_BARS, DENSITY_EXCERPTS):
            for role, _, density in part_activity(excerpt):
                role_densities.setdefault(role, []).append(density)
            excerpt_crowding.append(int(np.unique(np.concatenate(
                [notes["time"] for _, notes in played_tracks(excerpt)]), return_counts=True)[1].max()))
        densities.append(float(np.mean([density for _, _, density in activity])))  # = piece_density(score)
        signatures = list(score.time_signatures) or []
        for signature in signatures:
            time_signatures[f"{signature.numerator}/{signature.denominator}"] += 1
        if not signatures:
            time_signatures["4/4"] += 1
        beats_per_bar = bar_length(signatures[0].numerator, signatures[0].denominator) if signatures else 4
        bars.append(max(1, math.ceil(score.end() / tpq / beats_per_bar)))
        grids[_grid_for(np.concatenate(times), tpq)] += 1
    if not pieces:
        raise ValueError("no notes to measure in the corpus")

    # Each caption says its piece's Density against the corpus's thirds, known once all are measured.
    edges = density_edges([density for density in densities if density is not None])
    captions = list(captions)
    if edges and captions:
        captions = [with_fields(caption, {DENSITY: density_bin(density, edges) if density is not None else None})
                    for caption, density in zip(captions, densities)]
    counts = np.array(sorted(onset_histogram.elements()))
    # A grid in steps per quarter note -> miditok's positions per beat, where a beat is the
    # metre's denominator: a half note in 2/2 needs twice the quarter's steps.
    smallest_denominator = min([4] + [int(signature.split("/")[1]) for signature in time_signatures])
    # The grid that holds GRID_COVERAGE of the pieces' own best grids.
    grid_order = sorted(grids)
    covered, positions_per_beat = 0, grid_order[-1]
    for grid in grid_order:
        covered += grids[grid]
        if covered >= GRID_COVERAGE * pieces:
            positions_per_beat = grid
            break
    return CorpusProfile(
        pieces=pieces,
        notes=notes,
        velocities=sorted(int(value) for value in velocities),
        programs={int(program): count for program, count in sorted(programs.items())},
        pitch_ranges={program: [pitch_low[program], pitch_high[program]] for program in sorted(pitch_low)},
        time_signatures=dict(time_signatures.most_common()),
        notes_per_onset={int(size): count for size, count in sorted(onset_histogram.items())},
        max_notes_per_onset=int(np.quantile(counts, ONSET_QUANTILE, method="higher")),
        excerpt_max_notes_per_onset=int(np.quantile(excerpt_crowding, ONSET_QUANTILE, method="higher")),
        max_unison=int(np.quantile(unisons, 0.99, method="higher")),
        mean_notes_per_onset=round(float(counts.mean()), 4),
        max_programs_per_piece=max(programs_per_piece),
        max_parts=max(parts_per_piece),
        part_ranges={name: [part_low[name], part_high[name]] for name in sorted(part_low)},
        max_gap_beats=round(float(np.quantile(gaps, 0.99, method="higher")), 4),
        max_same_pitch_beats=round(float(np.quantile(same_pitch, 0.99, method="higher")), 4),
        positions_per_beat=max(1, positions_per_beat * 4 // smallest_denominator),
        max_duration_beats=round(max_duration, 4),
        bars=[min(bars), int(np.median(bars)), max(bars)],
        role_rest_beats={role: round(float(np.quantile(rests, PART_QUANTILE, method="higher")), 4)
                         for role, rests in sorted(role_rests.items())},
        role_notes_per_beat={role: [round(float(np.quantile(densities, 1 - PART_QUANTILE, method="lower")), 4),
                                    round(float(np.quantile(densities, PART_QUANTILE, method="higher")), 4)]
                             for role, densities in sorted(role_densities.items())},
        caption=typical_caption(captions),
        captions=caption_sample(captions),
        density_edges=edges,
        parallels_per_move=round(parallels / moves, 4) if moves else None,
        parallels_by_parts={count: counted for count, counted in sorted(by_parts.items()) if counted[1]},
    )


def caption_sample(captions: Iterable[str], size: int = DEFAULT_CAPTIONS,
                   seed: int = DEFAULT_CAPTIONS_SEED) -> dict[str, int]:
    """These captions without their titles -> how many of them read so, for the `size` most
    common (ties in a seeded random order): prompts a real piece had (its parts, instruments,
    key and metre agree with each other), unlike the typical caption, whose fields are each the
    most common on their own. The counts keep the corpus's proportions: 88% of the 379 train
    chorales are SATB, but only 41 of the 64 kept distinct captions are, so a draw that ignored
    the counts would prompt for horns, trumpets and continuo three times as often as Bach wrote them."""
    counts = Counter(without_title(caption) for caption in captions)
    counts.pop("", None)
    distinct = list(counts)
    random.Random(seed).shuffle(distinct)
    distinct.sort(key=lambda caption: -counts[caption])  # stable: ties keep the seeded order
    return {caption: counts[caption] for caption in distinct[:size]}


def tokenizer_settings(profile: CorpusProfile | None) -> dict:
    """miditok `TokenizerConfig` settings that follow the corpus (empty without a profile)."""
    if profile is None:
        return {}
    grid = profile.positions_per_beat
    longest = min(MAX_DURATION_BEATS, max(LONG_DURATION_BEATS, math.ceil(profile.max_duration_beats)))
    beat_res = {(0, 4): grid, (4, LONG_DURATION_BEATS): min(grid, 4)}
    if longest > LONG_DURATION_BEATS:
        beat_res[(LONG_DURATION_BEATS, longest)] = 1
    signatures: dict[int, set[int]] = {}
    for signature in list(profile.time_signatures) + ["4/4"]:
        numerator, denominator = (int(part) for part in signature.split("/"))
        signatures.setdefault(denominator, set()).add(numerator)
    return dict(
        use_velocities=not profile.constant_velocity,
        num_velocities=VELOCITY_LEVELS,
        program_changes=True,
        beat_res=beat_res,
        time_signature_range={denominator: sorted(numerators) for denominator, numerators in signatures.items()},
    )
