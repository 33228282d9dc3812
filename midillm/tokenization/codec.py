"""`MusicCodec`: symbolic music <-> token ids of a pretrained language model.

Two stages. A miditok tokenizer (REMI by default, optionally compressed with music BPE) turns a
score into *music tokens*; each music token is then one new, readably named LM token, so the
language model sees e.g. `<Pitch_60>` or, for a BPE merge, `<Position_0+Pitch_60+Velocity_63>`.
An optional caption (composer, title, key, metre, tempo, instruments; `midillm.tokenization.caption`)
precedes the music as ordinary LM text, and `<music>` / `</music>` delimit the music.

Parts (REMI): a score's tracks keep their identity. Each played track is one *part*, tokenized
on its own, and the music is written bar by bar, part by part: `<Part_0> bar of part 0 <Part_1>
bar of part 1 ... <Part_0> next bar ...`. Part 0 opens every bar (possibly empty), other parts
appear where they play. The caption's "Parts:" line names them in that order; each part's own
Program token (its first note) says its instrument. One voice's line stays contiguous within a
bar, and a part can be given (kept exactly) while the others are written.

Tasks besides continuation (their row layouts: `midillm.tokenization.rows`): *infill* rows put
`<gap>` for each missing bar where the bars were, then `<fill>` and the missing bars (the
fill-in-the-middle layout of code models), and *accompany* rows put the given parts first
(parts 0..k-1) where parts are numbered in order; numbered by role (`part_numbering`), the given
parts keep their numbers and the continuation rows teach it.

`render="text"` is the baseline the design measures against: music tokens are written as plain
text ("Bar_None Position_0 Pitch_60 ...") through the LM's own tokenizer, with no new rows
besides the two delimiters.
"""

from __future__ import annotations

import json
import warnings
from importlib.metadata import version as installed_version
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import miditok
from miditok import TokenizerConfig, TokSequence
from symusic import Note, Score

from midillm.version import __version__

from .base_model import DEFAULT_BASE_MODEL, load_lm_tokenizer
from .caption import (DRUMS, INSTRUMENTS, PARTS, caption_field, caption_fields, caption_ids, instrument_name,
                      instruments_value, listed_names, names_in_caption, part_names, part_programs_listed,
                      pitch_name, score_caption, with_fields)
from .metre import bar_end_after, end_of_bars
from .onsets import PART, PITCH_DESCENDING, SHIFT, onset_units, time_token, writes_directly
from .profile import CorpusProfile, tokenizer_settings
from .roles import ROLE_ORDER, caption_role, role_part_numbers, track_role
from .rows import flat, music_row
from .tonality import COMMON_KEYS, FIRST_COMMON_KEYS, in_common_key

TOKENIZATIONS = ("REMI", "TSD", "MIDILike", "Structured", "MMM", "PerTok")
RENDERS = ("tokens", "text")
MUSIC_START = "<music>"
MUSIC_END = "</music>"

# The token types that start a note and carry its pitch in the codec's streams (the grammar's
# `STRIKE_TYPES` add the note-on types of the other tokenizations).
NOTE_TYPES = ("Pitch", "PitchDrum")

# Parts (`onsets.PART`): codec-level tokens (not miditok's); each part's own tokens are miditok's.
MAX_PARTS = 16
GAP = "<gap>"    # one per missing bar in an infill prompt
FILL = "<fill>"  # the missing bars follow
# Tokens of a part's bar that belong to the whole score: kept in part 0, copied into the others.
SCORE_META_TYPES = ("TimeSig", "Tempo")
# How parts are laid out. "bars": bar by bar, part by part (`<Part_k>` opens part k's bar; a
# chord's notes stand 10-40 tokens apart). "onsets": one stream in time order, each onset's
# notes together, parts rising, each part's notes at the onset after its `<Part_k>`; with the
# codec's note compounds (`train_compounds`) a note is one LM position, so harmony is local.
LAYOUTS = ("bars", "onsets")
# How a piece's parts are numbered. "order": 0, 1, 2... as the score lists its tracks (a chorale's
# Soprano, Alto, Tenor, Bass). "role": by what each part plays (`roles.role_part_numbers`: Lead
# 0 ... Bass 13, Drums 14), so one token means one kind of part in every piece; parts then come in
# that order (in the caption, the onsets and the decoded score). Onsets layout only.
PART_NUMBERINGS = ("order", "role")
DEFAULT_LAYOUT = "onsets"
# When an onset of the onsets layout falls. "position": REMI's `Position_k`, its place in the bar
# (k steps of `max_num_pos_per_beat` a beat from the bar line). "shift": `Shift_k`, k steps after
# the bar's last onset (the bar's first onset: after the bar line). A move of one beat is then one
# token wherever the bar stands: the model trained with positions had not learned where in the
# bar it was (0.13 of its mass went to positions at or before the current one, which the grammar
# refuses) and its music moved at half Bach's pace (docs/benchmarks.md, 2026-12-05). The tokens
# themselves are written by `onsets.time_token`.
ONSET_TIMES = ("position", "shift")
DEFAULT_ONSET_TIME = "shift"
# A note compound merges one note's tokens (its part, program, pitch, velocity, duration) into
# one LM token; kept when it occurs at least this often in the train split.
COMPOUND_MIN_COUNT = 2
DEFAULT_COMPOUND_VOCAB = 4096
# `prepare --compound-coverage`: keep the compounds only when they write at least this share of
# the train sample's notes as one token each; 0, the default, keeps them always. Measured both
# ways (docs/bands.md, "Note compounds on band music"): the chorales (99% whole) learn more per
# step with them (6.30 bits per note against 6.77, 50 steps); a band corpus (63% whole) learns
# more per step without them (24.43 against 25.23 at 100 steps) but its samples were no saner and
# struck fewer chords on the beat (6% against 12%), at 2.2x the positions per note.
DEFAULT_COMPOUND_COVERAGE = 0.0
# `_lm_ids_of_units` remembers this many units' ids (a Lakh-sized file has ~2,000 distinct ones).
UNIT_CACHE_SIZE = 200_000
# Token types that start a note unit in the onsets layout.
_UNIT_START_TYPES = (PART, "Program", "Pitch", "PitchDrum")

CODEC_CONFIG_FILE = "midillm_codec.json"
MUSIC_TOKENIZER_FILE = "music_tokenizer.json"
# Bump when the saved layout or the meaning of saved ids changes.
# 2: the onsets layout and note compounds; 3: an onset's Position may share a compound with its
# first note (a reader of 2 would not know which part such a row names); 4: an onset's time may be
# a `Shift` from the last onset (`onset_time`).
# 5: parts may be numbered by role (`part_numbering` "role": `<Part_13>` is the bass).
CODEC_FORMAT_VERSION = 5
MIDITOK_VERSION = installed_version("miditok")


class CodecVersionError(ValueError):
    """A saved codec this installation cannot read faithfully."""


def build_music_tokenizer(tokenization: str = "REMI", profile: CorpusProfile | None = None) -> miditok.MusicTokenizer:
    """A miditok tokenizer set up for real multi-track General MIDI music.

    All 128 programs plus drums in one token stream, tempo and time-signature changes, the
    full MIDI pitch range (the default 21-108 silently drops notes of real files) and the
    time signatures found in real scores (2/2, 3/2, 4/2 and compound metres included).
    With a corpus `profile`, what carries no information there is dropped (a constant velocity,
    a program token before every note) and the time grid, longest duration and metres follow
    the corpus.
    """
    if tokenization not in TOKENIZATIONS:
        raise ValueError(
            f"unknown tokenization {tokenization!r}; choose one of {', '.join(TOKENIZATIONS)}"
        )
    settings = dict(
        use_programs=True,
        one_token_stream_for_programs=True,
        programs=list(range(-1, 128)),
        use_tempos=True,
        use_time_signatures=True,
        pitch_range=(0, 127),
        drums_pitch_range=(0, 127),
        time_signature_range={1: [1, 2, 3, 4], 2: list(range(1, 9)), 4: list(range(1, 13)),
                              8: list(range(1, 19)), 16: list(range(1, 25))},
        encode_ids_split="bar",
    )
    adaptive = tokenizer_settings(profile)
    if tokenization not in ("REMI", "TSD", "MIDILike"):
        # Only these write program changes in one stream; the others keep a program per note.
        adaptive.pop("program_changes", None)
    if tokenization == "PerTok":
        adaptive = {}  # PerTok has its own time model (see below)
    settings.update(adaptive)
    if tokenization == "MMM":
        settings["base_tokenizer"] = "REMI"
    if tokenization == "PerTok":
        # PerTok reads the microtiming settings even when microtiming is off.
        settings.update(ticks_per_quarter=480, use_microtiming=False, use_position_toks=True, use_tempos=False,
                        max_microtiming_shift=0.125, num_microtiming_bins=30)
    with warnings.catch_warnings():
        # Structured and MMM switch off what they do not support and warn about it.
        warnings.simplefilter("ignore")
        return getattr(miditok, tokenization)(TokenizerConfig(**settings))


def note_order_by_pitch(tokens: list[str]) -> list[int]:
    """The permutation that puts each run of notes at one onset (and one program) highest first.

    A note is its Pitch token and the Velocity / Duration tokens after it; anything else (time,
    a program change, tempo, metre) ends the run. Notes of equal pitch keep their order.
    """
    order, run, note = [], [], None

    def flush():
        run.sort(key=lambda group: -int(tokens[group[0]].split("_")[1]))
        order.extend(index for group in run for index in group)
        run.clear()

    for index, token in enumerate(tokens):
        kind = token.split("_", 1)[0]
        if kind in NOTE_TYPES:
            note = [index]
            run.append(note)
        elif note is not None and kind in ("Velocity", "Duration"):
            note.append(index)
        else:
            flush()
            note = None
            order.append(index)
    flush()
    return order


def order_notes_by_pitch(tokens: list[str]) -> list[str]:
    """`tokens` in the canonical note order (see `note_order_by_pitch`)."""
    return [tokens[index] for index in note_order_by_pitch(tokens)]


def part_scores(score: Score) -> list[Score]:
    """One single-track score per played track (in score order), each with the score's time
    signatures (so bars line up) and part 0 with its tempos. Tracks past `MAX_PARTS` join the
    part of the same program (else the last part): rare, and no note is lost."""
    played = [track for track in score.tracks if track.note_num()]
    parts: list[Score] = []
    for track in played:
        if len(parts) < MAX_PARTS:
            part = Score(score.ticks_per_quarter)
            part.time_signatures = score.time_signatures.copy()
            if not parts:
                part.tempos = score.tempos.copy()
            part.tracks.append(track.copy())
            parts.append(part)
            continue
        host = next((part for part in parts if part.tracks[0].program == track.program
                     and part.tracks[0].is_drum == track.is_drum), parts[-1])
        host.tracks[0].notes.extend(track.notes)
        host.tracks[0].notes.sort()
    return parts


def split_bar_by_onset(bar: list[str]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """One part's REMI bar -> (its head: bar line and metre, [(position, the tokens there)])."""
    head, onsets = [], []
    for token in bar:
        kind, _, value = token.partition("_")
        if kind == "Position":
            onsets.append((int(value), []))
        elif onsets:
            onsets[-1][1].append(token)
        else:
            head.append(token)
    return head, onsets


def interleave_part_bars(part_bars: list[list[list[str]]], onset_time: str = "position",
                         numbers: list[int] | None = None) -> list[list[str]]:
    """Each part's REMI bars (part 0 with the metre and tempo) -> the onsets layout, bar by bar:
    `Bar [TimeSig] Position [Tempo] <Part_k> notes of part k... <Part_m> ... Position ...`.

    A part's tokens at one onset stay as miditok wrote them (its program change, its notes
    highest first); parts come in rising order. The metre is written where it changes (miditok
    repeats it after every bar line: a position a bar that says nothing). With `onset_time`
    "shift" each onset's time is its distance from the bar's last onset (`Shift_k`). Part k's
    token is `<Part_numbers[k]>` (default k)."""
    numbers = list(range(len(part_bars))) if numbers is None else numbers
    bars, metre = [], []
    for index in range(max((len(bars_of_part) for bars_of_part in part_bars), default=0)):
        at_position: dict[int, list[str]] = {}
        head = None
        for number, bars_of_part in enumerate(part_bars):
            if index >= len(bars_of_part):
                continue
            part_head, onsets = split_bar_by_onset(bars_of_part[index])
            if number == 0:
                head = part_head
            for position, tokens in onsets:
                meta = [token for token in tokens if token.split("_", 1)[0] == "Tempo"]
                music = [token for token in tokens if token.split("_", 1)[0] != "Tempo"]
                slot = at_position.setdefault(position, [])
                slot[:0] = meta if number == 0 else []
                if music:
                    slot += [f"{PART}_{numbers[number]}"] + music
        head = head or ["Bar_None"]
        written = [token for token in head if token.startswith("TimeSig_")]
        if written == metre:
            head = [token for token in head if not token.startswith("TimeSig_")]
        metre = written or metre
        bar, previous = list(head), 0
        for position in sorted(at_position):
            bar += [time_token(position, previous, onset_time)] + at_position[position]
            previous = position
        bars.append(bar)
    return bars


def is_onset_time(token: str) -> bool:
    """A `Position` or `Shift`: the token that opens an onset of the onsets layout."""
    return token.startswith(("Position_", SHIFT + "_"))


def with_absolute_positions(tokens: list[str]) -> list[str]:
    """Onsets-layout tokens with each `Shift_k` made the `Position` it reaches (miditok's own)."""
    absolute, position = [], 0
    for token in tokens:
        kind, _, value = token.partition("_")
        if kind == "Bar":
            position = 0
        elif kind == SHIFT:
            position += int(value)
            token = f"Position_{position}"
        elif kind == "Position":
            position = int(value)
        absolute.append(token)
    return absolute


def note_units(tokens: list[str]) -> list[list[str]]:
    """Base tokens of the onsets layout -> units: one note (from its part token, program change
    or pitch up to its duration, which a held note leaves out) or one other token. An onset's
    time (`Position` or `Shift`) and its first note (the `<Part_k>` right after it) are one unit, so that where a
    compound covers it, time and the first note cost one LM position. Note compounds never
    cross a unit."""
    units: list[list[str]] = []
    has_pitch = False
    for token in tokens:
        kind = token.split("_", 1)[0]
        last = units[-1] if units else None
        if last is not None and len(last) == 1 and is_onset_time(last[0]) and kind == PART:
            last.append(token)  # the onset's time, then its first note
            continue
        continues = last is not None and last[-1].split("_", 1)[0] != "Duration" and (
            (kind in NOTE_TYPES and not has_pitch) or (kind == "Program" and not has_pitch)
            or (kind in ("Velocity", "Duration") and has_pitch))
        if continues and (last[0].split("_", 1)[0] in _UNIT_START_TYPES or len(last) > 1):
            last.append(token)
        else:
            units.append([token])
            has_pitch = False
        has_pitch = has_pitch or kind in NOTE_TYPES
    return units


def describe_music_token(token: str, layout: str = "bars", positions_per_beat: int = 12) -> str:
    """Plain words for one base music token; its new LM row starts from their embedding."""
    token_type, _, value = token.partition("_")
    if token_type == SHIFT:
        beats = int(value) / positions_per_beat
        return "at the start of the bar" if not beats else f"{beats:g} beats later"
    if token_type == PART:
        if layout == "onsets":
            return f"part number {int(value) + 1} voice plays"
        return f"new bar of part number {int(value) + 1} voice"
    if token_type in ("Pitch", "NoteOn", "NoteOff", "PitchDrum") and value.lstrip("-").isdigit():
        words = {"Pitch": "note", "NoteOn": "note on", "NoteOff": "note off",
                 "PitchDrum": "drum note"}[token_type]
        return f"{words} {pitch_name(int(value))}"
    if token_type == "Program" and value.lstrip("-").isdigit():
        program = int(value)
        return "drums" if program < 0 else f"instrument {instrument_name(program)}"
    if token_type == "Bar":
        return "new bar"
    if token_type == "Position":
        return f"position {value} in the bar"
    if token_type == "Duration":
        return f"duration {value.replace('.', ' ')} beats"
    if token_type == "TimeShift":
        return f"time shift {value.replace('.', ' ')} beats"
    if token_type == "Velocity":
        return f"velocity {value} loudness"
    if token_type == "Tempo":
        return f"tempo {value} beats per minute"
    if token_type == "TimeSig":
        return f"time signature {value}"
    return f"{token_type.lower()} {value}".strip()


class MusicCodec:
    """Scores <-> LM token ids. Build with `MusicCodec.create`, then `train_bpe` if wanted.

    Args:
        music_tokenizer: the miditok tokenizer (possibly BPE-trained).
        lm_tokenizer: the base LM's tokenizer; the codec adds its tokens to it.
        render: "tokens" (one new LM token per music token) or "text" (plain-text baseline).
        captions: put a caption from the metadata before the music.
        base_model: the base model the LM tokenizer came from, recorded for later stages.
        corpus: what the training corpus allows (`prepare` measures it); the grammar's corpus
            constraints, the default caption and the sanity check read it. None: unknown.
        note_order: `PITCH_DESCENDING` (notes at one onset highest first, enforced by the
            grammar) or None (miditok's order; codecs saved before the canonical order).
        parts: write tracks as parts (see the module's docstring); REMI only. Codecs saved
            before parts existed have False: one stream, tracks of one program merge.
        tasks: what the training rows taught besides continuation (`prepare` sets it); a
            model refuses the tasks it never saw.
        layout: how parts are laid out, "onsets" or "bars" (see `LAYOUTS`); codecs saved before
            layouts existed are "bars".
        compounds: the note compounds (each a tuple of base tokens, one LM token) of the onsets
            layout, learned by `train_compounds`.
        common_key: the training pieces were moved to the common key of their mode
            (`tonality.in_common_key`): music given to the model is moved there first, and what it
            writes is moved to the asked key afterwards. Codecs saved before it: False.
        common_minor_key: where minor pieces were moved ("A minor"; codecs saved before the
            relative minor: "C minor"). `common_keys` gives both modes'.
        onset_time: how the onsets layout says when an onset falls, "shift" (from the bar's last
            onset) or "position" (in the bar; codecs saved before shifts). See `ONSET_TIMES`.
    """

    def __init__(self, music_tokenizer, lm_tokenizer, render: str = "tokens",
                 captions: bool = True, base_model: str = DEFAULT_BASE_MODEL,
                 corpus: CorpusProfile | None = None, note_order: str | None = PITCH_DESCENDING,
                 parts: bool | None = None, tasks: tuple[str, ...] = ("continue",),
                 layout: str = "bars", compounds: list[tuple[str, ...]] | None = None,
                 common_key: bool = False, common_minor_key: str = COMMON_KEYS[True],
                 onset_time: str = "position", part_numbering: str = "order"):
        if render not in RENDERS:
            raise ValueError(f"unknown render {render!r}; choose one of {', '.join(RENDERS)}")
        self.music_tokenizer = music_tokenizer
        self.lm_tokenizer = lm_tokenizer
        self.render = render
        self.captions = captions
        self.base_model = base_model
        self.corpus = corpus
        has_pitches = any(token.split("_", 1)[0] in NOTE_TYPES for token in music_tokenizer.vocab)
        self.note_order = note_order if has_pitches else None
        bars_and_one_stream = "Bar_None" in music_tokenizer.vocab and music_tokenizer.one_token_stream \
            and type(music_tokenizer).__name__ == "REMI"
        self.parts = bars_and_one_stream if parts is None else (bool(parts) and bars_and_one_stream)
        self.tasks = tuple(tasks)
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        self.layout = layout if self.parts else "bars"
        if self.layout == "onsets" and (render != "tokens" or music_tokenizer.is_trained):
            raise ValueError("the onsets layout needs render='tokens' and no music BPE (it has note compounds)")
        if onset_time not in ONSET_TIMES:
            raise ValueError(f"unknown onset time {onset_time!r}; choose one of {', '.join(ONSET_TIMES)}")
        self.onset_time = onset_time if self.layout == "onsets" else "position"
        if part_numbering not in PART_NUMBERINGS:
            raise ValueError(f"unknown part numbering {part_numbering!r}; choose one of {', '.join(PART_NUMBERINGS)}")
        self.part_numbering = part_numbering if self.layout == "onsets" else "order"
        self.compounds = [tuple(compound) for compound in (compounds or [])] if self.layout == "onsets" else []
        self.common_key = bool(common_key)
        self.common_minor_key = common_minor_key
        self._register_lm_tokens()

    @property
    def common_keys(self) -> dict[bool, str]:
        """The key pieces of each mode (minor: True) were moved to when `common_key` is set."""
        return {False: COMMON_KEYS[False], True: self.common_minor_key}

    def in_training_key(self, score: Score) -> Score:
        """The score as the training pieces were: moved to the common key of its mode when the
        codec has one, else as it is (teacher forcing and embeddings read music this way)."""
        return in_common_key(score, keys=self.common_keys)[0] if self.common_key else score

    # ----------------------------------------------------------------------------- building

    @classmethod
    def create(cls, tokenization: str = "REMI", lm_tokenizer=None, render: str = "tokens",
               captions: bool = True, base_model: str = DEFAULT_BASE_MODEL,
               corpus: CorpusProfile | None = None, parts: bool = True,
               layout: str = DEFAULT_LAYOUT, adapt_to_corpus: bool = True,
               tasks: tuple[str, ...] = ("continue",), common_key: bool = False,
               onset_time: str = DEFAULT_ONSET_TIME, part_numbering: str = "order") -> MusicCodec:
        """A new, untrained codec; `lm_tokenizer` defaults to the base model's own. With a
        `corpus` profile the music tokens follow that corpus (see `build_music_tokenizer`) unless
        `adapt_to_corpus` is False; the codec keeps the profile either way (the grammar and eval
        read it). The onsets layout needs parts, REMI and the tokens render; elsewhere it falls
        back to bars. `tasks`: what its rows will teach; tasks on given music need parts, so a
        codec without them keeps only "continue"."""
        if lm_tokenizer is None:
            lm_tokenizer = load_lm_tokenizer(base_model)
        if tokenization != "REMI" or render != "tokens":
            layout = "bars"
        codec = cls(build_music_tokenizer(tokenization, corpus if adapt_to_corpus else None), lm_tokenizer, render,
                    captions, base_model, corpus, parts=parts, layout=layout, common_key=common_key,
                    onset_time=onset_time, part_numbering=part_numbering)
        codec.tasks = tuple(task for task in tasks if task == "continue" or codec.parts)
        return codec

    def train_compounds(self, scores, vocab_size: int = DEFAULT_COMPOUND_VOCAB,
                        min_count: int = COMPOUND_MIN_COUNT, min_coverage: float = 0.0) -> float:
        """Learn the note compounds of the onsets layout: the `vocab_size` commonest whole notes
        of these scores (part, program change, pitch, velocity, duration as one token), an
        onset's first note with its time (`Position` or `Shift`), and, for a part's further notes at one onset and
        for rarer notes, their pitch-to-duration tails.
        A note no compound covers is written token by token, so nothing is ever lost.

        Returns the share of these scores' notes the compounds write as one token each; below
        `min_coverage` none are kept (see `DEFAULT_COMPOUND_COVERAGE`)."""
        if self.layout != "onsets":
            return 0.0
        counts: Counter = Counter()
        whole_notes: Counter = Counter()
        for score in scores:
            if not isinstance(score, Score):
                score = Score(str(score))
            for bar in self._onset_bar_units(score):
                for unit in bar:
                    if len(unit) < 2:
                        continue
                    counts[unit] += 1
                    whole_notes[unit] += 1
                    if is_onset_time(unit[0]) and len(unit) > 2:
                        counts[tuple(unit[1:])] += 1  # the same note where its onset's time is rarer
                    pitch_at = next((index for index, token in enumerate(unit)
                                     if token.split("_", 1)[0] in NOTE_TYPES), 0)
                    if pitch_at > 0 and len(unit) - pitch_at >= 2:
                        counts[tuple(unit[pitch_at:])] += 1
        common = [unit for unit, count in counts.most_common(vocab_size) if count >= min_count]
        notes = sum(whole_notes.values())
        coverage = sum(whole_notes[unit] for unit in common) / notes if notes else 0.0
        self.compounds = sorted(common, key=lambda unit: (len(unit), unit)) if coverage >= min_coverage else []
        self._register_lm_tokens()
        return coverage

    def train_bpe(self, midi_paths: list[Path], vocab_size: int, scores: list[Score] | None = None) -> None:
        """Learn music BPE merges on these files (ignored by the text render, which has none).
        With parts, the merges are learned on the parts, as they are tokenized, of `scores`
        (the files already read, in the same order) where given."""
        if self.render == "text" or vocab_size <= len(self.music_tokenizer.vocab):
            return
        if self.layout == "onsets":
            raise ValueError("music BPE needs the bars layout (layout=bars); the onsets layout merges "
                             "each note into one token instead")
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            files = [Path(path) for path in midi_paths]
            if self.parts:
                split = []
                for index, path in enumerate(files):
                    score = scores[index] if scores is not None else Score(str(path))
                    for number, part in enumerate(part_scores(score)):
                        split.append(Path(folder) / f"{index}-{number}.mid")
                        part.dump_midi(split[-1])
                files = split
            self.music_tokenizer.train(vocab_size=vocab_size, model="BPE", files_paths=files)
        self._register_lm_tokens()

    def _register_lm_tokens(self) -> None:
        """Give every music token its LM token (adding any that the LM tokenizer lacks)."""
        self.lm_tokenizer.add_special_tokens(
            {"extra_special_tokens": [MUSIC_START, MUSIC_END] + ([GAP, FILL] if self.parts else [])},
            replace_extra_special_tokens=False,
        )
        self.music_start_id = self.lm_tokenizer.convert_tokens_to_ids(MUSIC_START)
        self.music_end_id = self.lm_tokenizer.convert_tokens_to_ids(MUSIC_END)
        self.gap_id = self.lm_tokenizer.convert_tokens_to_ids(GAP) if self.parts else None
        self.fill_id = self.lm_tokenizer.convert_tokens_to_ids(FILL) if self.parts else None
        # The base tokens that each music id stands for: one for a base token, several for a
        # BPE merge. The grammar, the chunker and the descriptions all read this.
        tokenizer = self.music_tokenizer
        if tokenizer.is_trained:
            model = tokenizer._model
            parts = [tokenizer._vocab_learned_bytes_to_tokens[model.id_to_token(music_id)]
                     for music_id in range(model.get_vocab_size())]
        else:
            inverse = {music_id: token for token, music_id in tokenizer.vocab.items()}
            parts = [[inverse[music_id]] for music_id in range(len(inverse))]
        # Part tokens are music ids past miditok's vocabulary: rows the model writes like any other.
        self.first_part_music_id = len(parts)
        if self.parts:
            parts = parts + [[f"{PART}_{number}"] for number in range(MAX_PARTS)]
        # Shifts (onsets layout, `onset_time="shift"`): one per Position of miditok's, a move of
        # that many steps; they follow the part tokens.
        self.first_shift_music_id = len(parts)
        if self.onset_time == "shift":
            positions = sorted(int(token.split("_")[1]) for token in tokenizer.vocab if token.startswith("Position_"))
            parts = parts + [[f"{SHIFT}_{steps}"] for steps in positions]
        # Note compounds (onsets layout) follow the part tokens: one id per whole note.
        self.first_compound_music_id = len(parts)
        parts = parts + [list(compound) for compound in getattr(self, "compounds", [])]
        self._compound_music_ids = {tuple(tokens): music_id for music_id, tokens in enumerate(parts)
                                    if music_id >= self.first_compound_music_id}
        self._longest_compound = max((len(tokens) for tokens in self._compound_music_ids), default=1)
        self._single_music_ids = {tokens[0]: music_id for music_id, tokens in enumerate(parts) if len(tokens) == 1}
        self._unit_lm_ids: dict[tuple[str, ...], list[int]] = {}  # `_lm_ids_of_units`' lookups
        # Whether `_onset_bar_units` may write the layout from the notes (the tokenizer's settings
        # decide it, once).
        self._direct_layout = writes_directly(tokenizer)
        # What a held note (onsets layout) carries into miditok's decoder until its length is known.
        self._stand_in_duration = next((token for token in tokenizer.vocab if token.startswith("Duration_")), None)
        self.music_token_parts: list[list[str]] = parts
        self._music_to_lm: dict[int, int] = {}
        if self.render == "text":
            return
        # Padding never occurs inside a piece; every other token (MMM's track and fill markers
        # included) does, so each gets its LM row.
        # BPE may also learn ids that stand for no token at all (miditok's word-boundary
        # marker); they carry nothing, so they get no row and are dropped when encoding.
        names = {music_id: "<" + "+".join(tokens) + ">" for music_id, tokens in enumerate(parts)
                 if (music_id != tokenizer.pad_token_id or music_id >= self.first_part_music_id) and tokens}
        self.lm_tokenizer.add_tokens(list(names.values()))
        self._music_to_lm = {music_id: self.lm_tokenizer.convert_tokens_to_ids(name)
                             for music_id, name in names.items()}
        self._lm_to_music = {lm_id: music_id for music_id, lm_id in self._music_to_lm.items()}

    # ----------------------------------------------------------------------------- properties

    @property
    def music_lm_ids(self) -> list[int]:
        """LM ids that generation may produce: every music token, then the end of music.

        In the text render these are the LM's whole vocabulary (music is ordinary text).
        """
        if self.render == "text":
            return list(range(len(self.lm_tokenizer)))
        # Two music ids can stand for the same base tokens (BPE may learn a token that decodes to
        # one base token, e.g. a bar line with miditok's word-boundary marker); they share a row.
        return sorted(set(self._music_to_lm.values())) + [self.music_end_id]

    def lm_id_of_music_id(self, music_id: int) -> int:
        return self._music_to_lm[music_id]

    def music_id_of_lm_id(self, lm_id: int) -> int | None:
        return self._lm_to_music.get(lm_id) if self.render == "tokens" else None

    def part_lm_id(self, number: int) -> int:
        """The LM id of `<Part_number>` (tokens render)."""
        return self._music_to_lm[self.first_part_music_id + number]

    def part_ids(self, number: int) -> list[int]:
        """The LM ids that open part `number`'s bar: its one token, or in the text render its words."""
        if self.render == "text":
            return self.lm_tokenizer(f" {PART}_{number}", add_special_tokens=False).input_ids
        return [self.part_lm_id(number)]

    def part_of_lm_id(self, lm_id: int) -> int | None:
        """The part number a `<Part_k>` id stands for (None for any other id)."""
        music_id = self._lm_to_music.get(lm_id) if self.render == "tokens" else None
        if music_id is None or music_id < self.first_part_music_id or not self.parts:
            return None
        return music_id - self.first_part_music_id

    def parts_in_bars(self, bars: list[list[int]]) -> list[set[int]] | None:
        """The part numbers that play in each bar of `encode_bars` (a `<Part_k>` alone or inside a
        note compound); None where the codec has no numbered parts in its own tokens (no parts,
        or the text render)."""
        if not self.parts or self.render != "tokens":
            return None
        prefix = PART + "_"
        numbers_of: dict[int, set[int]] = {}
        played = []
        for bar in bars:
            numbers = set()
            for lm_id in bar:
                if lm_id not in numbers_of:
                    music_id = self._lm_to_music.get(lm_id)
                    tokens = self.music_token_parts[music_id] if music_id is not None else []
                    numbers_of[lm_id] = {int(token[len(prefix):]) for token in tokens
                                         if token.startswith(prefix) and token[len(prefix):].isdigit()}
                numbers |= numbers_of[lm_id]
            played.append(numbers)
        return played

    def lm_ids_of_base_tokens(self, tokens: list[str]) -> list[int]:
        """LM ids for a sequence of base music tokens, one id each (no BPE merging)."""
        single = self._single_music_ids
        unknown = [token for token in tokens if token not in single]
        if unknown:
            raise ValueError(f"the codec has no token {unknown[0]!r}")
        if self.render == "text":
            return self.lm_tokenizer(" " + " ".join(tokens), add_special_tokens=False).input_ids
        return [self._music_to_lm[single[token]] for token in tokens]

    def opening_tokens(self, time_signature: str | None = None, tempo: float | None = None) -> list[str]:
        """Base tokens that open a piece in this metre and tempo (REMI-style tokenizations)."""
        vocab = self.music_tokenizer.vocab
        if "Bar_None" not in vocab or "Position_0" not in vocab:
            raise ValueError(f"forcing a time signature or tempo needs a tokenization with bars and "
                             f"positions (REMI, MMM), not {type(self.music_tokenizer).__name__}")
        tokens = ["Bar_None"]
        if time_signature:
            if f"TimeSig_{time_signature}" not in vocab:
                raise ValueError(f"time signature {time_signature} is not in the codec's vocabulary")
            tokens.append(f"TimeSig_{time_signature}")
        tokens.append(time_token(0, 0, self.onset_time))
        if tempo:
            tempos = [float(token.split("_")[1]) for token in vocab if token.startswith("Tempo_")]
            if not tempos:
                raise ValueError("this codec has no tempo tokens")
            nearest = min(tempos, key=lambda value: abs(value - tempo))
            tokens.append(next(token for token in vocab if token.startswith("Tempo_")
                               and float(token.split("_")[1]) == nearest))
        return tokens

    def new_token_descriptions(self) -> dict[int, str]:
        """LM id -> plain-text description, for every token the codec added to the LM."""
        descriptions = {self.music_start_id: "start of the music score",
                        self.music_end_id: "end of the music score"}
        if self.parts:
            descriptions[self.gap_id] = "a missing bar of music, to be filled in later"
            descriptions[self.fill_id] = "now the missing bars of music that fill the gap"
        for music_id, lm_id in self._music_to_lm.items():
            descriptions[lm_id] = ", ".join(
                describe_music_token(token, self.layout, self.music_tokenizer.config.max_num_pos_per_beat)
                for token in self.music_token_parts[music_id])
        return descriptions

    # ----------------------------------------------------------------------------- encoding

    def caption(self, score: Score, metadata: Mapping[str, str] | None = None) -> str:
        """A short text from what is known: metadata first, then what the score itself says,
        its Density against the corpus's thirds included where the corpus measured them."""
        score = self.in_part_order(score)
        return score_caption(score, metadata, self.corpus.density_of(score) if self.corpus is not None else None)

    def caption_ids(self, score: Score, metadata: Mapping[str, str] | None = None) -> list[int]:
        if not self.captions:
            return []
        return caption_ids(self.lm_tokenizer, self.caption(score, metadata))

    def part_numbers(self, names: list[str], programs: list[int | None] | None = None) -> list[int]:
        """The `<Part_k>` number of each part a caption lists (its name and, where known, its
        program; -1: drums): 0, 1, 2... in order, or with `part_numbering` "role" by what each
        plays (`roles.caption_role`, `roles.role_part_numbers`). Past `MAX_PARTS` parts the
        last ones share the last number, as `part_scores` merges such tracks."""
        if self.part_numbering != "role":
            return list(range(len(names)))
        programs = list(programs) if programs is not None and len(programs) == len(names) else [None] * len(names)
        roles = [caption_role(name, program) for name, program in zip(names, programs)]
        numbers = role_part_numbers(roles[:MAX_PARTS], MAX_PARTS)
        return numbers + numbers[-1:] * (len(roles) - len(numbers))

    def caption_numbers(self, text: str | None) -> list[int]:
        """`part_numbers` of the parts a caption's "Parts:" line names (its "Instruments:" line,
        one per part, says what each plays)."""
        names = names_in_caption(text)
        programs = part_programs_listed(caption_field(text, INSTRUMENTS))
        return self.part_numbers(names, programs if len(programs) == len(names) else None)

    def caption_part_numbers(self, text: str | None) -> dict[int, str]:
        """Part number -> its name, for the parts a caption's "Parts:" line names."""
        return dict(zip(self.caption_numbers(text), names_in_caption(text)))

    def caption_in_part_order(self, text: str | None) -> tuple[str | None, list[int] | None]:
        """A caption with its "Parts:" and "Instruments:" lines in the order the codec writes
        parts (with role numbering: Lead first, Bass and Drums last), as the training captions
        have them, and where it moved them, the order (new place -> place in `text`); None
        where nothing moved."""
        if self.part_numbering != "role" or not text:
            return text, None
        fields = caption_fields(text)
        names = listed_names(fields.get(PARTS, ""))
        programs = part_programs_listed(fields.get(INSTRUMENTS, ""))
        count = len(names) or len(programs)
        if count < 2 or None in programs or (names and programs and len(programs) not in (1, len(names))):
            return text, None
        names_or_roles = names or [""] * count
        each = programs if len(programs) == count else [None] * count
        roles = [caption_role(name, program) for name, program in zip(names_or_roles, each)]
        order = sorted(range(count), key=lambda index: ROLE_ORDER.index(roles[index]))
        if order == list(range(count)):
            return text, None
        values = {}
        if names:
            values[PARTS] = ", ".join(names[index] for index in order)
        if len(programs) == count:
            values[INSTRUMENTS] = instruments_value(programs[index] for index in order)
        return with_fields(text, values), order

    def in_part_order(self, score: Score) -> Score:
        """The score's played tracks in the order the codec numbers its parts: as they are, or
        with role numbering by role (Lead first, Bass and Drums last; one role's tracks as the
        score lists them). Captions and music are written from this order."""
        return self.ordered_parts(score)[0] if self.part_numbering == "role" else score

    def score_part_numbers(self, score: Score) -> dict[int, str]:
        """Part number -> name (`caption.part_names`) of a score's parts, as the codec writes them."""
        _, names, numbers = self.ordered_parts(score)
        return dict(zip(numbers, names))

    def ordered_parts(self, score: Score) -> tuple[Score, list[str], list[int]]:
        """`in_part_order` of the score, with its parts' names and numbers in that order (the
        names and roles read once: `prepare` asks for them for every piece)."""
        names = part_names(score)
        if self.part_numbering != "role":
            return score, names, list(range(len(names)))
        played = [track for track in score.tracks if track.note_num()]
        programs = [DRUMS if track.is_drum else track.program for track in played]
        roles = [caption_role(name, program) for name, program in zip(names, programs)]
        order = sorted(range(len(played)), key=lambda index: ROLE_ORDER.index(roles[index]))
        names, programs = [names[index] for index in order], [programs[index] for index in order]
        numbers = self.part_numbers(names, programs)
        if order == list(range(len(played))) and len(played) == len(score.tracks):
            return score, names, numbers
        ordered = Score(score.ticks_per_quarter)
        ordered.time_signatures = score.time_signatures.copy()
        ordered.tempos = score.tempos.copy()
        ordered.key_signatures = score.key_signatures.copy()
        ordered.markers = score.markers.copy()
        ordered.tracks = [played[index].copy() for index in order]
        return ordered, names, numbers

    def _numbered_parts(self, score: Score, numbers: list[int] | None = None) -> tuple[list[Score], list[int]]:
        """`part_scores` of a score in part order, and the `<Part_k>` number of each (`numbers`:
        the played tracks' numbers, rising, as the score lists them: the score is taken as it is)."""
        if numbers is not None:
            parts = part_scores(score)
            if len(numbers) < len(parts) or any(later <= earlier for earlier, later in zip(numbers, numbers[1:])):
                raise ValueError(f"part numbers {numbers} for {len(parts)} parts: one each, rising")
            return parts, list(numbers[:len(parts)])
        if self.part_numbering != "role":
            parts = part_scores(score)
            return parts, list(range(len(parts)))
        score, _, numbers = self.ordered_parts(score)
        parts = part_scores(score)
        return parts, sorted(set(numbers))[:len(parts)]

    def encode_bars(self, score: Score | str | Path, lengths_before: int | None = None,
                    numbers: list[int] | None = None) -> list[list[int]]:
        """The music of a score as LM ids, bar by bar (music BPE never crosses a bar line).
        With parts, each bar holds each part's bar behind its `<Part_k>` (part 0 always).
        `lengths_before` (onsets layout): notes held into that bar (counted from 0) keep their
        written length, for music that will be cut there (an infill's gap). `numbers` (onsets
        layout): each played track's `<Part_k>`, rising, in place of the codec's own numbering
        (the given parts of an accompaniment, numbered among all the parts of the piece)."""
        if not isinstance(score, Score):
            score = Score(str(score))
        if not self.parts:
            return self._stream_bars(score)
        if self.layout == "onsets":
            return [self._lm_ids_of_units(bar) for bar in self._onset_bar_units(score, lengths_before, numbers)]
        part_bars = [self._stream_bars(part, keep_score_meta=number == 0)
                     for number, part in enumerate(part_scores(score))] or [[]]
        note_ids = self._note_lm_ids()
        # Part 0 past its last note still opens each bar, with the metre as miditok writes it.
        metres = [token for token in self.music_tokens([self.music_start_id] + [lm_id for bar in part_bars[0]
                                                                               for lm_id in bar])
                  if token.startswith("TimeSig_")]
        empty_bar = self.lm_ids_of_base_tokens(["Bar_None"] + metres[-1:])
        bars = []
        for index in range(max(len(bars_of_part) for bars_of_part in part_bars)):
            bar = []
            for number, bars_of_part in enumerate(part_bars):
                segment = bars_of_part[index] if index < len(bars_of_part) else []
                if number == 0 or any(lm_id in note_ids for lm_id in segment):
                    bar += self.part_ids(number) + (segment or empty_bar)
            bars.append(bar)
        return bars

    def _onset_bar_units(self, score: Score, lengths_before: int | None = None,
                         numbers: list[int] | None = None) -> list[list[tuple[str, ...]]]:
        """The onsets layout of `score`, bar by bar, as note units (`note_units`): written
        straight from the notes where `onsets.writes_directly` covers the tokenizer (the same
        units, about ten times faster), else from miditok's tokens (`_onset_bars`)."""
        if self._direct_layout:
            parts, part_numbers = self._numbered_parts(score, numbers)
            units = onset_units(self.music_tokenizer, parts, self.note_order, self.onset_time,
                                lengths_before, part_numbers)
            if units is not None:
                return units
        return [[tuple(unit) for unit in note_units(bar)] for bar in self._onset_bars(score, lengths_before, numbers)]

    def _onset_bars(self, score: Score, lengths_before: int | None = None,
                    numbers: list[int] | None = None) -> list[list[str]]:
        """The base tokens of `score` in the onsets layout, bar by bar, from miditok's tokens.

        A note that lasts until its part's next onset (or, the part's last, to the end of the
        piece's last bar) is *held*: it is written without its duration, which the decoder gives
        back. A voice line is then a chain of pitches, and the model never has to work out how
        long a note must be for the next one to follow it without a gap."""
        encoded = []
        parts, numbers = self._numbered_parts(score, numbers)
        for number, part in enumerate(parts):
            sequence = self.music_tokenizer.encode(part, encode_ids=False)
            tokens, events = list(sequence.tokens), list(sequence.events)
            if self.note_order == PITCH_DESCENDING:
                order = note_order_by_pitch(tokens)
                tokens, events = [tokens[index] for index in order], [events[index] for index in order]
            encoded.append((number, tokens, events))
        onsets = [event.time for _, tokens, events in encoded for token, event in zip(tokens, events)
                  if token.split("_", 1)[0] in NOTE_TYPES]
        if not onsets:
            return []
        metres = [(event.time, *map(int, token.split("_", 1)[1].split("/")))
                  for token, event in zip(encoded[0][1], encoded[0][2]) if token.startswith("TimeSig_")]
        piece_end = bar_end_after(metres, self.music_tokenizer.time_division, max(onsets))
        part_bars = []
        for number, tokens, events in encoded:
            bar_starts = [event.time for token, event in zip(tokens, events) if token == "Bar_None"]
            cut = bar_starts[lengths_before] if lengths_before is not None and lengths_before < len(bar_starts) else None
            held = self._held_notes(tokens, events, piece_end, cut)
            bars: list[list[str]] = []
            skip_duration = False
            for index, token in enumerate(tokens):
                kind = token.split("_", 1)[0]
                if token == "Bar_None" or not bars:
                    bars.append([])
                if kind in NOTE_TYPES:
                    skip_duration = index in held
                elif kind == "Duration" and skip_duration:
                    skip_duration = False
                    continue
                if number == 0 or kind not in SCORE_META_TYPES:
                    bars[-1].append(token)
            part_bars.append(bars)
        return interleave_part_bars(part_bars, self.onset_time, numbers)

    @staticmethod
    def _held_notes(tokens: list[str], events: list, piece_end: int, cut: int | None = None) -> set[int]:
        """Indexes of the pitch tokens whose note ends exactly at its part's next onset (the last
        onset's notes: at `piece_end`) and has a part with one program throughout; with `cut`,
        not the notes before it whose next onset is at or after it."""
        if sum(token.startswith("Program_") for token in tokens) > 1:
            return set()  # a program change inside the part: the decoder splits it, so keep every length
        pitches = [index for index, token in enumerate(tokens) if token.split("_", 1)[0] in NOTE_TYPES]
        times = sorted({events[index].time for index in pitches})
        following = {time: later for time, later in zip(times, times[1:] + [piece_end])}
        return {index for index in pitches if events[index].desc == following[events[index].time]
                and not (cut is not None and events[index].time < cut <= following[events[index].time])}

    def lm_ids_of_onset_tokens(self, tokens: list[str]) -> list[int]:
        """Base tokens of the onsets layout -> LM ids: each note as its longest compound (the
        whole note where the codec has it), the rest token by token."""
        return self._lm_ids_of_units([tuple(unit) for unit in note_units(tokens)])

    def _lm_ids_of_units(self, units: list[tuple[str, ...]]) -> list[int]:
        """Note units -> LM ids (see `lm_ids_of_onset_tokens`). A corpus repeats its units
        (the same note at the same shift), so each unit's ids are looked up once."""
        ids = []
        known = self._unit_lm_ids
        if len(known) > UNIT_CACHE_SIZE:
            known.clear()
        for unit in units:
            cached = known.get(unit)
            if cached is None:
                cached = known[unit] = self._lm_ids_of_unit(unit)
            ids.extend(cached)
        return ids

    def _lm_ids_of_unit(self, unit: tuple[str, ...]) -> list[int]:
        """One unit's LM ids: its longest compounds, greedily from its start."""
        ids, start = [], 0
        while start < len(unit):
            for end in range(min(len(unit), start + self._longest_compound), start, -1):
                music_id = self._compound_music_ids.get(unit[start:end]) if end - start > 1 else \
                    self._single_music_ids.get(unit[start])
                if music_id is not None:
                    ids.append(self._music_to_lm[music_id])
                    start = end
                    break
            else:
                raise ValueError(f"the codec has no token {unit[start]!r}")
        return ids

    def _note_lm_ids(self) -> set[int]:
        """LM ids whose tokens strike a note (text render: the words' ids are not per token)."""
        if self.render == "text":
            return set(self.lm_tokenizer(" Pitch", add_special_tokens=False).input_ids)
        return {lm_id for music_id, lm_id in self._music_to_lm.items()
                if any(token.split("_", 1)[0] in NOTE_TYPES for token in self.music_token_parts[music_id])}

    def _stream_bars(self, score: Score, keep_score_meta: bool = True) -> list[list[int]]:
        """One miditok stream of `score`, in LM ids, bar by bar. Without `keep_score_meta` the
        metre and tempo tokens are left out (parts after the first: they are part 0's)."""
        sequence: TokSequence = self.music_tokenizer.encode(score, encode_ids=False)
        order = list(range(len(sequence.tokens)))
        if self.note_order == PITCH_DESCENDING:
            order = note_order_by_pitch(sequence.tokens)
        if not keep_score_meta:
            order = [index for index in order if sequence.tokens[index].split("_", 1)[0] not in SCORE_META_TYPES]
        count = len(sequence.tokens)
        if len(order) != count or order != sorted(order):
            # Reorder tokens, ids and events alike: miditok splits bars by the events' times.
            for name in ("tokens", "ids", "events"):
                values = getattr(sequence, name)
                if values is not None and len(values) == count:
                    setattr(sequence, name, [values[index] for index in order])
            if sequence.bytes and len(sequence.bytes) == count:
                sequence.bytes = "".join(sequence.bytes[index] for index in order)
        bar_lengths = [len(bar) for bar in sequence.split_per_bars()]
        if sum(bar_lengths) != len(sequence.tokens):
            bar_lengths = [len(sequence.tokens)]
        if self.render == "text":
            bars, start = [], 0
            for length in bar_lengths:
                text = " " + " ".join(sequence.tokens[start:start + length])
                bars.append(self.lm_tokenizer(text, add_special_tokens=False).input_ids)
                start += length
            return bars
        if self.music_tokenizer.is_trained:
            self.music_tokenizer.encode_token_ids(sequence)
        bars, current, covered, bar_index = [], [], 0, 0
        for music_id in sequence.ids:
            if music_id not in self._music_to_lm:
                continue
            current.append(self._music_to_lm[music_id])
            covered += len(self.music_token_parts[music_id])
            if covered >= bar_lengths[bar_index]:
                bars.append(current)
                current, covered = [], covered - bar_lengths[bar_index]
                bar_index = min(bar_index + 1, len(bar_lengths) - 1)
        if current:
            bars.append(current)
        return bars

    def encode(self, score: Score | str | Path, metadata: Mapping[str, str] | None = None) -> list[int]:
        """Score or MIDI path -> LM ids: [caption] <music> music... </music>."""
        if not isinstance(score, Score):
            score = Score(str(score))
        return music_row(self.caption_ids(score, metadata), flat(self.encode_bars(score)), self.music_start_id,
                         self.music_end_id)

    # ----------------------------------------------------------------------------- decoding

    def music_part(self, ids: list[int]) -> list[int]:
        """The ids between the last `<music>` (or infill's `<fill>`) and the following `</music>`
        (or the end)."""
        ids = [int(lm_id) for lm_id in ids]
        for start in (self.music_start_id, self.fill_id if self.parts else None):
            if start is not None and start in ids:
                ids = ids[len(ids) - ids[::-1].index(start):]
        if self.music_end_id in ids:
            ids = ids[:ids.index(self.music_end_id)]
        return ids

    def music_tokens(self, ids: list[int]) -> list[str]:
        """LM ids -> the base music tokens they stand for (captions and unknown ids dropped)."""
        music = self.music_part(ids)
        if self.render == "text":
            words = self.lm_tokenizer.decode(music).split()
            return [word for word in words if word in self.music_tokenizer.vocab
                    or (self.parts and word.startswith(PART + "_") and word[len(PART) + 1:].isdigit())]
        tokens = []
        for lm_id in music:
            music_id = self._lm_to_music.get(lm_id)
            if music_id is not None:
                tokens.extend(self.music_token_parts[music_id])
        return tokens

    def decode(self, ids: list[int], names: list[str] | dict[int, str] | None = None,
               whole_bars: bool = False) -> Score:
        """LM ids -> symusic Score. Captions, delimiters and non-music ids are ignored, but for
        the caption's "Parts:" and "Instruments:" lines, which name the parts (`names` overrides
        them: a list in part order, or part number -> name). `whole_bars` (a new piece, onsets
        layout): music that never reached `</music>` ends at its last bar line (`_whole_bars`);
        never for music that continues given music, whose last bar may be the user's."""
        tokens = self.music_tokens(ids)
        if not tokens:
            return Score(self.music_tokenizer.time_division)
        kept_bars = None
        if whole_bars and self.layout == "onsets" and not self._music_ended(ids):
            tokens, kept_bars = self._whole_bars(tokens)
        if self.parts:
            if names is None:
                names = self.caption_part_numbers(self._caption_text(ids))
            elif not isinstance(names, dict):
                names = dict(zip(self.part_numbers(list(names)), names))
            score = self._decode_parts(tokens, names)
        else:
            score = self._decode_stream(tokens)
        if kept_bars is not None:  # nothing sounds past the last bar line kept
            metres = [(signature.time, signature.numerator, signature.denominator) for signature in score.time_signatures]
            cut = end_of_bars(metres, score.ticks_per_quarter, kept_bars)
            for track in score.tracks:
                for note in track.notes:
                    if note.time + note.duration > cut:
                        note.duration = cut - note.time
        if self.corpus is not None and self.corpus.constant_velocity and self.corpus.velocities \
                and not self.music_tokenizer.config.use_velocities:
            # The velocity had no token because the corpus never changes it: give it back.
            for track in score.tracks:
                for note in track.notes:
                    note.velocity = self.corpus.velocities[0]
        return score

    def _music_ended(self, ids: list[int]) -> bool:
        """Whether the music of `ids` (after its last `<music>` or `<fill>`) reached `</music>`."""
        ids = [int(lm_id) for lm_id in ids]
        for start in (self.music_start_id, self.fill_id if self.parts else None):
            if start is not None and start in ids:
                ids = ids[len(ids) - ids[::-1].index(start):]
        return self.music_end_id in ids

    @staticmethod
    def _whole_bars(tokens: list[str]) -> tuple[list[str], int | None]:
        """Music that never reached its end (the token budget ran out) without its unfinished
        last bar: (its tokens up to its last bar line, the bars kept); as it is (None) where no
        whole bar with a note would remain. The last onset's held notes then sound to that bar
        line, as the sampler counted them: the corpus constraints check each part's notes per
        beat whenever time moves on, a bar line included, while a piece cut mid-bar rang its
        last notes to the bar's end, past where the sampler had counted (docs/bands.md, session 25)."""
        bar_lines = [index for index, token in enumerate(tokens) if token == "Bar_None"]
        if len(bar_lines) < 2:
            return tokens, None
        kept = tokens[:bar_lines[-1]]
        if not any(token.split("_", 1)[0] in NOTE_TYPES for token in kept):
            return tokens, None
        return kept, len(bar_lines) - 1

    def _decode_stream(self, tokens: list[str]) -> Score:
        base_vocab = self.music_tokenizer.vocab
        return self.music_tokenizer.decode([base_vocab[token] for token in tokens if token in base_vocab])

    def _caption_text(self, ids: list[int]) -> str:
        ids = [int(lm_id) for lm_id in ids]
        if self.music_start_id not in ids:
            return ""
        return self.lm_tokenizer.decode(ids[:ids.index(self.music_start_id)], skip_special_tokens=True)

    def part_streams(self, tokens: list[str]) -> dict[int, list[str]]:
        """Part-by-part base tokens -> each part's own miditok stream (a bar line for every bar it
        skips, part 0's metre in each of its bars, no metre or tempo of its own)."""
        if self.layout == "onsets":
            return self._onset_part_streams(tokens)
        bars: list[dict[int, list[str]]] = []
        current = None
        for token in tokens:
            kind, _, value = token.partition("_")
            if kind == PART:
                number = int(value)
                if number == 0 or not bars or number in bars[-1]:
                    bars.append({})
                current = bars[-1].setdefault(number, [])
            else:
                if current is None:  # music before any part token: part 0's first bar
                    bars.append({})
                    current = bars[-1].setdefault(0, [])
                current.append(token)

        def with_bar_line(segment):
            return segment if segment and segment[0] == "Bar_None" else ["Bar_None"] + (segment or [])

        # The metre that opens part 0's bar (miditok writes it right after the bar line).
        score_meta = [[token for token in with_bar_line(bar.get(0))[1:2] if token.startswith("TimeSig_")]
                      for bar in bars]
        streams = {}
        for number in sorted({number for bar in bars for number in bar}):
            stream = []
            for bar, meta in zip(bars, score_meta):
                segment = with_bar_line(bar.get(number))
                if number:
                    segment = [segment[0]] + meta + [token for token in segment[1:]
                                                     if token.split("_", 1)[0] not in SCORE_META_TYPES]
                stream += segment
            streams[number] = stream
        return streams

    def _onset_part_streams(self, tokens: list[str]) -> dict[int, list[str]]:
        return self._onset_part_streams_and_held(tokens)[0]

    def _with_durations(self, stream: list[str]) -> tuple[list[str], list[bool]]:
        """A part's stream with a stand-in duration after each held note (which miditok needs to
        decode it), and per note in stream order whether it was held."""
        stand_in = self._stand_in_duration
        with_velocity = self.music_tokenizer.config.use_velocities
        completed, held = [], []
        for index, token in enumerate(stream):
            kind = token.split("_", 1)[0]
            following = stream[index + 1].split("_", 1)[0] if index + 1 < len(stream) else ""
            if kind in NOTE_TYPES and with_velocity and following != "Velocity":
                continue  # a note cut off before its velocity (the sample ran out of tokens)
            completed.append(token)
            if kind in NOTE_TYPES or kind == "Velocity":
                if kind in NOTE_TYPES:
                    held.append(False)
                if following not in ("Velocity", "Duration") and stand_in:  # the note ends without a length
                    completed.append(stand_in)
                    if held:  # (the grammar puts a pitch before any velocity)
                        held[-1] = True
        return completed, held

    def _onset_part_streams_and_held(self, tokens: list[str]) -> tuple[dict[int, list[str]], dict[int, list[bool]]]:
        """Onsets-layout base tokens -> each part's miditok stream: every bar with the metre in
        force (the last one written), each of the part's onsets as `Position` and its tokens;
        tempos go to part 0."""
        bars: list[tuple[list[str], dict[int, dict[int, list[str]]]]] = []
        position, part, metre = 0, 0, []
        for token in with_absolute_positions(tokens):
            kind, _, value = token.partition("_")
            if kind == "Bar" or not bars:
                bars.append((["Bar_None"], {}))
                position, part = 0, 0
                if kind == "Bar":
                    continue
            head, onsets = bars[-1]
            if kind == "TimeSig":
                head[1:] = [token]
            elif kind == "Position":
                position, part = int(value), 0
            elif kind == PART:
                part = int(value)
                onsets.setdefault(part, {}).setdefault(position, [])
            elif kind == "Tempo":
                onsets.setdefault(0, {}).setdefault(position, []).insert(0, token)
            else:
                onsets.setdefault(part, {}).setdefault(position, []).append(token)
        metre = []
        for head, _ in bars:  # a bar that writes no metre keeps the one before
            if len(head) == 1:
                head += metre
            metre = head[1:]
        streams: dict[int, list[str]] = {}
        for number in sorted({number for _, onsets in bars for number in onsets}):
            stream = []
            for head, onsets in bars:
                stream += head
                for at, onset_tokens in sorted(onsets.get(number, {}).items()):
                    if onset_tokens:
                        stream += [f"Position_{at}"] + onset_tokens
            streams[number] = stream
        held = {}
        for number in streams:
            streams[number], held[number] = self._with_durations(streams[number])
        return streams, held

    @staticmethod
    def _give_back_held_lengths(merged: Score, tracks: list, held_by_track: list) -> None:
        """A held note lasts until its part's next onset; the last onset's, to the end of the bar
        that holds the piece's last onset (the rule `_held_notes` wrote them by)."""
        onsets = [note.time for track in tracks for note in track.notes]
        metres = [(signature.time, signature.numerator, signature.denominator) for signature in merged.time_signatures]
        piece_end = bar_end_after(metres, merged.ticks_per_quarter, max(onsets))
        for track, held in zip(tracks, held_by_track):
            if not held or len(held) != len(track.notes):
                if track.notes:
                    track.notes.sort()
                continue
            # Plain values first: symusic's notes are views into the track, gone once it is cleared.
            notes = [(note.time, note.duration, note.pitch, note.velocity) for note in track.notes]
            times = sorted({time for time, _, _, _ in notes})
            following = {time: later for time, later in zip(times, times[1:] + [max(piece_end, times[-1] + 1)])}
            track.notes.clear()
            for (time, duration, pitch, velocity), is_held in zip(notes, held):
                track.notes.append(Note(time, following[time] - time if is_held else duration, pitch, velocity))
            track.notes.sort()

    def token_errors(self, ids: list[int]) -> float:
        """miditok's share of token errors in the music of `ids` (the worst part's, with parts)."""
        tokens = self.music_tokens(ids)
        streams = self.part_streams(tokens) if self.parts else {0: tokens}
        vocab = self.music_tokenizer.vocab
        return max([self.music_tokenizer.tokens_errors([vocab[token] for token in stream])
                    for stream in streams.values() if stream] or [0.0])

    def _decode_parts(self, tokens: list[str], names: dict[int, str]) -> Score:
        """Part-by-part bars -> one track per part, on part 0's metre and tempo, named by `names`
        (part number -> name; with role numbering a part it does not name is named by its role)."""
        merged = None
        tracks, held_by_track = [], []
        streams, held = self._onset_part_streams_and_held(tokens) if self.layout == "onsets" else \
            (self.part_streams(tokens), {})
        for number, stream in streams.items():
            decoded = self._decode_stream(stream)
            if merged is None:
                merged = Score(decoded.ticks_per_quarter)
                merged.time_signatures = decoded.time_signatures.copy()
                merged.tempos = decoded.tempos.copy()
                merged.key_signatures = decoded.key_signatures.copy()
            played = [track for track in decoded.tracks if track.note_num()]
            if not played:
                continue
            track = played[0].copy()
            # miditok writes a track's notes in token order, the order of the held flags; a part
            # with a program change decodes to several tracks, and keeps its written lengths.
            held_by_track.append(held.get(number) if len(played) == 1 else None)
            for other in played[1:]:  # a program change inside a part: one track, its first program
                track.notes.extend(other.notes)
            if held_by_track[-1] is None:
                track.notes.sort()
            if number in names:
                track.name = names[number]
            elif self.part_numbering == "role":
                track.name = track_role(track)
            tracks.append(track)
        if any(held_by_track):
            self._give_back_held_lengths(merged, tracks, held_by_track)
        merged = merged or Score(self.music_tokenizer.time_division)
        for track in tracks:
            merged.tracks.append(track)
        return merged

    # ----------------------------------------------------------------------------- saving

    def save_pretrained(self, path: str | Path) -> None:
        """Write the LM tokenizer (with the added tokens), the music tokenizer and the codec config."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.lm_tokenizer.save_pretrained(path)
        self.music_tokenizer.save(path / MUSIC_TOKENIZER_FILE)
        config = {
            "format_version": CODEC_FORMAT_VERSION,
            "midillm_version": __version__,
            "miditok_version": MIDITOK_VERSION,
            "tokenization": type(self.music_tokenizer).__name__,
            "render": self.render,
            "captions": self.captions,
            "base_model": self.base_model,
            "music_vocab_size": len(self.music_token_parts),
            "music_to_lm": {str(music_id): lm_id for music_id, lm_id in self._music_to_lm.items()},
            "corpus": self.corpus.to_dict() if self.corpus is not None else None,
            "note_order": self.note_order,
            "parts": self.parts,
            "tasks": list(self.tasks),
            "layout": self.layout,
            "compounds": [list(compound) for compound in self.compounds],
            "common_key": self.common_key,
            "common_minor_key": self.common_minor_key,
            "onset_time": self.onset_time,
            "part_numbering": self.part_numbering,
        }
        (path / CODEC_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> MusicCodec:
        """Load a codec written by `save_pretrained`; refuse one this version cannot read."""
        path = Path(path)
        config_file = path / CODEC_CONFIG_FILE
        if not config_file.is_file():
            raise FileNotFoundError(f"{path} holds no midillm codec ({CODEC_CONFIG_FILE} missing)")
        config = json.loads(config_file.read_text())
        check_codec_versions(config)
        music_tokenizer = getattr(miditok, config["tokenization"])(
            params=path / MUSIC_TOKENIZER_FILE)
        corpus = CorpusProfile.from_dict(config["corpus"]) if config.get("corpus") else None
        codec = cls(music_tokenizer, _load_lm_tokenizer(path), config["render"],
                    config["captions"], config["base_model"], corpus, note_order=config.get("note_order"),
                    parts=config.get("parts", False), tasks=tuple(config.get("tasks") or ("continue",)),
                    layout=config.get("layout", "bars"), compounds=config.get("compounds"),
                    common_key=config.get("common_key", False),
                    common_minor_key=config.get("common_minor_key", FIRST_COMMON_KEYS[True]),
                    onset_time=config.get("onset_time", "position"),
                    part_numbering=config.get("part_numbering", "order"))
        saved = {int(music_id): lm_id for music_id, lm_id in config["music_to_lm"].items()}
        if saved != codec._music_to_lm:
            raise CodecVersionError(
                f"{path}: the saved token mapping does not match the saved tokenizers "
                "(files edited or mixed from different codecs)")
        return codec


def check_codec_versions(config: dict) -> None:
    """Fail with one clear line when a saved codec's ids would mean something else here."""
    written_by = f"midillm {config.get('midillm_version', '?')} with miditok {config.get('miditok_version', '?')}"
    if config.get("format_version", 0) > CODEC_FORMAT_VERSION:
        raise CodecVersionError(
            f"this codec was written by {written_by} in format {config.get('format_version')}; "
            f"midillm {__version__} reads format {CODEC_FORMAT_VERSION} at most: upgrade midillm")
    saved_major = str(config.get("miditok_version", "0")).split(".")[0]
    if saved_major != MIDITOK_VERSION.split(".")[0]:
        raise CodecVersionError(
            f"this codec was written by {written_by}, but miditok {MIDITOK_VERSION} is "
            f"installed and tokenizes differently: install miditok=={config.get('miditok_version')}")


def _load_lm_tokenizer(path: Path):
    """The LM tokenizer saved beside the codec. A bundle folder also holds the Hub's config.json
    (model type `midillm`, with remote code for `trust_remote_code` users): the tokenizer needs
    none of it, and transformers would otherwise ask on the terminal whether to run that code
    and warn about the model type. The tokenizer is the same either way."""
    from transformers import AutoTokenizer
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    finally:
        logging.set_verbosity(verbosity)
