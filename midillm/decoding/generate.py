"""`MidiLM`: a fine-tuned bundle that writes music, sampled under the tokenization grammar.

The sampling loop is ours rather than `model.generate` because logits are needed over the
music rows only (a few thousand of the ~53k): the decoder's last hidden state is multiplied by
just those rows of the output matrix, which is most of the cost of a step for a small model.
The warpers (temperature, top-k, top-p, min-p, repetition penalty) are transformers' own.
"""

from __future__ import annotations

import functools
from collections import Counter
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from symusic import Score
from tqdm.auto import tqdm

from midillm.errors import first_line
from midillm.model.bundle import Bundle
from midillm.tokenization import MusicCodec
from midillm.tokenization.codec import MAX_PARTS, PART, SHIFT
from midillm.tokenization.onsets import time_token
from midillm.tokenization.caption import (DRUMS, INSTRUMENTS, KEY, PARTS, accompaniment_caption, as_written,
                                          caption_field, caption_fields, caption_ids, instrument_name,
                                          instrument_program, instruments_listed, instruments_value, names_in_caption,
                                          key_tonic, known_key, part_names, parts_agreeing, programs_listed,
                                          part_programs_listed, programs_named_in, relative_key, with_fields,
                                          write_caption)
from midillm.tokenization.roles import program_role
from midillm.tokenization.rows import filled_piece, flat, infill_prompt, music_row, reorder_parts
from midillm.tokenization.tonality import common_tonic, drawn_key, estimate_key, in_key, register_shift, shift_to

from .grammar import CorpusConstraints, GrammarLogitsProcessor, MusicGrammar
from .precision import apply_precision, model_precision, wide_weights
from .request import (MusicRequest, SamplingSettings, TaskError, parse_bar_range, part_instruments,
                      resolve_registers)


@dataclass
class Sample:
    """One piece `MidiLM.run` wrote: its score, its LM ids (None for a task on given music,
    whose score is assembled from the given bars and the written ones) and whether it ended by
    itself rather than at the token limit."""

    score: Score
    ids: list[int] | None
    ended: bool


@dataclass
class _BarPlan:
    """Bar bookkeeping of a task while sampling, one per sample.

    Infill: exactly `exact_bars` bars (no ending before, no new bar after). Accompaniment: the
    given parts are parts 0..given_parts-1; at each new bar (`<Part_0>`, which the model chooses)
    their bar is written as given, then only the other parts may be written until the next bar,
    and the piece ends with the given music.
    """

    bar_row: int
    end_row: int
    row_part: torch.Tensor              # the part each row opens (-1: none)
    exact_bars: int | None = None
    given_bars: list[list[int]] | None = None
    given_parts: int = 0
    row_metre: torch.Tensor | None = None  # infill: the metre each row writes (-1: none)
    metres: list[int] | None = None        # infill: each new bar's metre (as in row_metre), kept from the piece
    bars_done: int = 0
    part: int = -1                      # the part being written
    queue: list[int] = field(default_factory=list)  # given ids still to write, as rows
    row_has_note: torch.Tensor | None = None  # infill: rows that strike a note
    row_changes_program: torch.Tensor | None = None  # infill: rows with a program change (parts keep theirs)
    notes_in_bar: int = 0               # infill: notes struck in the bar being written

    @property
    def done(self) -> bool:
        return self.bars_done >= (self.exact_bars if self.exact_bars is not None else len(self.given_bars or []))

    def allowed_rows(self) -> torch.Tensor:
        allowed = torch.ones(len(self.row_part), dtype=torch.bool)
        allowed[self.bar_row if self.done else self.end_row] = False
        if self.metres and self.row_metre is not None:  # new bars keep the piece's metre: the bars after fit
            bar = min(max(self.bars_done - 1, 0), len(self.metres) - 1)
            allowed &= (self.row_metre < 0) | (self.row_metre == self.metres[bar])
        if self.row_changes_program is not None:
            allowed &= ~self.row_changes_program
        if self.row_has_note is not None and self.bars_done and not self.notes_in_bar:
            # An infilled bar holds music: the gap is there to be filled.
            allowed[self.bar_row] = allowed[self.end_row] = False
        if 0 <= self.part < self.given_parts:  # a given part's bar is complete: on to the others
            opens = self.row_part
            allowed &= (opens >= self.given_parts) | (opens == 0)
            allowed[self.end_row] = self.done
        return allowed

    def record(self, row: int, forced: bool) -> None:
        if int(self.row_part[row]) >= 0:
            self.part = int(self.row_part[row])
        if self.row_has_note is not None:
            self.notes_in_bar = 0 if row == self.bar_row else self.notes_in_bar + int(self.row_has_note[row])
        if not forced and row == self.bar_row:
            if self.given_bars is not None and self.bars_done < len(self.given_bars):
                self.queue = list(self.given_bars[self.bars_done][1:])  # the bar token is the chosen one
            self.bars_done += 1


    def fallback_row(self) -> int:
        """The row to write when every other is masked: the plan wins."""
        return self.end_row if self.done else self.bar_row

    def given_notes_to_come(self) -> int:
        """Bars layout: given bars come whole, before the other parts'."""
        return 0

    def given_row(self) -> tuple[int, torch.Tensor] | None:
        """A row of given music the model may choose now (none: bars are given whole)."""
        return None

    def choices(self) -> tuple[torch.Tensor, tuple[int, torch.Tensor] | None]:
        """(the rows the model may choose now, no given row: see `_OnsetPlan.choices`)."""
        return self.allowed_rows(), None

    def rest_ids(self) -> list[int]:
        """The given music not yet written (when tokens run out), as ids: what is queued of the
        bar begun, then the bars to come."""
        return list(self.queue) + [lm_id for bar in (self.given_bars or [])[self.bars_done:] for lm_id in bar]


@dataclass
class _GivenOnset:
    """One onset of the given music: where in its bar, its tempo (the given music's, never the
    model's), each given part's tokens there (its `<Part_k>` and notes; parts rising), and its
    ids as the given music wrote them (its time counted from the given onset before)."""

    position: int
    meta: tuple[str, ...]
    parts: list[tuple[int, tuple[str, ...]]]
    ids: list[int]


@dataclass
class _OnsetPlan:
    """Accompaniment in the onsets layout, one per sample. The given parts keep their numbers
    (`given_numbers`: the first ones where parts are numbered in order, wherever their roles put
    them where parts are numbered by role), and each onset's parts come in rising order, as the
    model learned them. The model moves time (a Position or Shift, a bar line) but never past an
    onset of the given music. It reaches one by the given music's own first row there (its time
    with the lowest given part's first note, a Shift counted from where the bar stands now), or,
    where a part it writes comes before the given ones, by moving time there with that part's
    first note (or alone). At the onset the given parts' notes are written as given when their
    turn comes: the model may open a part below the next given one, never one above it, and
    choosing anything that would pass it is choosing it. After the last given part only parts
    above it may join. The piece has the given music's bars and ends with it."""

    bar_row: int
    end_row: int
    row_part: torch.Tensor        # the part each row opens (-1: none)
    row_position: torch.Tensor    # the Position each row moves to (-1: none)
    row_shift: torch.Tensor       # the steps each row's Shift moves time on (-1: none)
    row_continues_part: torch.Tensor  # rows that add to the current part's notes without naming a part
    row_writes_score_meta: torch.Tensor  # rows with a metre or tempo: the given music's, never the model's
    given_bars: list[tuple[list[int], list[_GivenOnset]]]  # (bar head ids, its onsets)
    given_numbers: frozenset
    encode: Callable[[tuple[str, ...]], tuple[int, ...]]  # onsets-layout base tokens -> LM ids
    onset_time: str = "shift"
    row_of_lm_id: dict[int, int] = field(default_factory=dict)
    bars_done: int = 0
    pending: list[_GivenOnset] = field(default_factory=list)  # the current bar's given onsets to come
    at_onset: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)  # given parts still to come here
    queue: list[int] = field(default_factory=list)
    part: int = -1                # the part whose notes come now (-1: none yet at this onset)
    position: int = 0             # where the bar stands: its last onset (0: its start)

    def __post_init__(self):
        given = torch.tensor(sorted(self.given_numbers), dtype=self.row_part.dtype)
        self.opens_new = (self.row_part >= 0) & ~torch.isin(self.row_part, given)

    @property
    def done(self) -> bool:
        return self.bars_done >= len(self.given_bars) and not self.pending and not self.at_onset

    def _reaching_ids(self) -> list[int]:
        """The ids that reach the next given onset from here, with its lowest given part's notes."""
        onset = self.pending[0]
        time = time_token(onset.position, self.position, self.onset_time)
        return list(self.encode((time,) + onset.meta + (onset.parts[0][1] if onset.parts else ())))

    def _next_given_row(self) -> int:
        return self.row_of_lm_id[self._reaching_ids()[0]]

    def _part_ids(self) -> list[int]:
        """The ids of the next given part's notes at the onset reached."""
        return list(self.encode(self.at_onset[0][1]))

    def _row_targets(self) -> torch.Tensor:
        """The Position of the bar each row moves to from here (-1: none)."""
        return torch.where(self.row_shift >= 0, self.position + self.row_shift, self.row_position)

    def given_notes_to_come(self) -> int:
        """The notes the given parts will still strike at the onset reached."""
        return sum(token.startswith(("Pitch_", "PitchDrum_")) for _, tokens in self.at_onset for token in tokens)

    def _mine(self) -> torch.Tensor:
        """Rows that go on with the part now written, where it is one the model writes."""
        return self.row_continues_part if self.part >= 0 and self.part not in self.given_numbers \
            else torch.zeros_like(self.row_continues_part)

    def _choices(self) -> tuple[torch.Tensor, int | None, torch.Tensor | None]:
        """(the rows the model may choose, the given row it may choose, and the rows whose
        mass goes to that given row)."""
        targets = self._row_targets()
        stays = targets < 0
        mine = self._mine()
        if self.at_onset:  # given parts to come at this onset: below the next one, or it
            below = self.at_onset[0][0]
            allowed = (self.opens_new & (self.row_part < below) & stays) | mine
            passing = ((self.row_part >= below) & stays) | ~stays
            passing[self.bar_row] = passing[self.end_row] = True
            return allowed & ~self.row_writes_score_meta, self.row_of_lm_id[self._part_ids()[0]], passing
        allowed = ((self.opens_new & stays) | mine) & ~self.row_writes_score_meta
        moves = ~stays & ((self.row_part < 0) | self.opens_new) & ~self.row_writes_score_meta
        if not self.pending:
            allowed |= moves
            allowed[self.bar_row] = self.bars_done < len(self.given_bars)
            allowed[self.end_row] = self.done
            return allowed, None, None
        onset = self.pending[0]
        allowed |= moves & (targets < onset.position)
        there = targets == onset.position
        if not onset.meta and onset.parts:  # time moved there with a part of the model's, below the given ones
            below = onset.parts[0][0]
            allowed |= moves & there & self.opens_new & (self.row_part < below)
            if any(number not in self.given_numbers for number in range(below)):
                # or alone, for a part whose first note names its instrument (no compound holds
                # a time with a program); where no part can come below the given ones, time
                # alone is the given music's way there, in its own compound where it has one.
                allowed |= moves & there & (self.row_part < 0)
        allowed[self.bar_row] = allowed[self.end_row] = False
        return allowed, self._next_given_row(), there & ~allowed

    def choices(self) -> tuple[torch.Tensor, tuple[int, torch.Tensor] | None]:
        """(the rows the model may choose now, and the given row among them with the rows whose
        wish it stands for: reaching the next given onset, moving time there whatever note would
        come first, or the next given part's notes at this one, passing it; None: no given row).
        One reading of the plan a sampling step."""
        allowed, given, passing = self._choices()
        if given is None:
            return allowed, None
        allowed, passing = allowed.clone(), passing.clone()
        allowed[given] = passing[given] = True
        return allowed, (given, passing)

    def allowed_rows(self) -> torch.Tensor:
        return self.choices()[0]

    def given_row(self) -> tuple[int, torch.Tensor] | None:
        return self.choices()[1]

    def fallback_row(self) -> int:
        if self.at_onset:
            return self.row_of_lm_id[self._part_ids()[0]]
        if self.pending:
            return self._next_given_row()
        return self.end_row if self.done else self.bar_row

    def record(self, row: int, forced: bool) -> None:
        target = int(self._row_targets()[row])
        if not forced:
            if row == self.bar_row and self.bars_done < len(self.given_bars):
                head, onsets = self.given_bars[self.bars_done]
                self.queue, self.pending, self.at_onset = list(head[1:]), list(onsets), []
                self.bars_done += 1
            elif self.at_onset and row == self.row_of_lm_id[self._part_ids()[0]]:
                self.queue = self._part_ids()[1:]
                self.at_onset.pop(0)
            elif self.pending and (target == self.pending[0].position or row == self._next_given_row()):
                reaching = self._reaching_ids()
                onset = self.pending.pop(0)
                if onset.meta or int(self.row_part[row]) in self.given_numbers:
                    # The given music's own first row there: the rest of its first part follows.
                    self.queue, self.at_onset = reaching[1:], list(onset.parts[1:])
                else:  # time alone, or with a part of the model's: each given part in its turn
                    self.at_onset = list(onset.parts)
        if int(self.row_part[row]) >= 0:
            self.part = int(self.row_part[row])
        elif row == self.bar_row or target >= 0:
            self.part = -1
        if row == self.bar_row:
            self.position = 0
        elif target >= 0:
            self.position = target

    def rest_ids(self) -> list[int]:
        """The given music not yet written (when tokens run out): what is queued, the given
        parts still to come at this onset, the next onset from where the bar stands (the others
        follow it as given), then the bars to come."""
        ids = list(self.queue)
        for _, tokens in self.at_onset:
            ids += list(self.encode(tokens))
        if self.pending:
            ids += self._reaching_ids()
            for _, tokens in self.pending[0].parts[1:]:
                ids += list(self.encode(tokens))
        ids += [lm_id for onset in self.pending[1:] for lm_id in onset.ids]
        for head, onsets in self.given_bars[self.bars_done:]:
            ids += head + [lm_id for onset in onsets for lm_id in onset.ids]
        return ids


def _wide_while_sampling(method):
    """Int8 weights widened for the whole call when its batch is too large for the int8
    kernel (`precision.wide_weights`); nothing changes for other precisions."""
    @functools.wraps(method)
    def sampling(self, num_samples: int = 1, *args, **kwargs):
        with wide_weights(self.model, num_samples):
            return method(self, num_samples, *args, **kwargs)
    return sampling


def _pitched_parts(instruments: list[int] | None, parts, named_parts: list[str]) -> int | None:
    """How many pitched parts a new piece asks for (drums are not voices): by its instruments,
    else its count of parts, else the parts its caption names; None: unsaid."""
    if instruments:
        return sum(1 for program in instruments if program >= 0)
    if isinstance(parts, int) and parts > 0:
        return parts
    return len(named_parts) or None


class MidiLM:
    """A causal LM that knows the codec's tokens, plus the codec and its grammar."""

    def __init__(self, model, codec: MusicCodec, dtype: torch.dtype | str | None = None,
                 context_length: int | None = None, sampling: SamplingSettings | None = None):
        """`dtype`: the inference precision, "auto" (`default_precision()`: int8 weights on CPU,
        bf16 on CUDA), "fp32", "bf16", "fp16", "int8" or a torch dtype; None keeps the model as
        it is. The model is converted in place (`midillm.decoding.precision`)."""
        self.codec = codec
        # The bundle's own sampling (its generation_config.json), used where a call sets none.
        self.sampling = sampling or SamplingSettings.for_layout(codec.layout)
        self.model = apply_precision(model.eval(), dtype)
        # What the model computes in: "fp32", "bf16", "fp16" or "int8".
        self.precision = model_precision(self.model)
        self.grammar = MusicGrammar(codec)
        self.rows = torch.tensor(self.grammar.row_lm_ids, dtype=torch.long)
        # The model only ever saw rows of the training length: past it, slide the window rather
        # than ask it about positions it never learned music at.
        self.context_length = context_length or getattr(model.config, "max_position_embeddings", None) or 2048
        # One record per sample of the last `generate_ids` call: ended, new_tokens, masked_mass.
        self.last_generation: list[dict] = []

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | str | None = "auto") -> MidiLM:
        """Load a bundle (base model + adapter + codec; a folder or a Hub id), with the adapter
        merged for speed.

        `dtype`: "auto" (`midillm.decoding.precision.default_precision()`: int8 weights on CPU,
        bf16 on CUDA), "fp32", "bf16", "fp16", "int8" or a torch dtype; None: fp32 as loaded."""
        bundle = Bundle.locate(path).check()
        codec = MusicCodec.from_pretrained(bundle.path)
        return cls(bundle.load_model(codec), codec, dtype=dtype, context_length=bundle.training_context_length(),
                   sampling=SamplingSettings.from_pretrained(bundle.path, SamplingSettings.for_layout(codec.layout)))

    # ------------------------------------------------------------------------- prompts

    def prompt_ids(self, prompt: Score | str | Path | bytes | None = None, text: str | None = None,
                   time_signature: str | None = None, tempo: float | None = None) -> list[int]:
        """Caption text and/or the music of a MIDI prompt, ending where the model continues.

        A prompt path with an audio suffix (.wav, .flac, .ogg, .mp3...) is transcribed first
        (`midillm.audio.transcribe`, tempo estimated, onsets on the codec's grid).

        Without `text`, the caption is one a training piece had (`default_text`, seed 0): every
        training row starts with a caption, so a bare `<music>` is a context the model has never seen.
        Without a MIDI prompt, `time_signature` ("3/4") and `tempo` (BPM) force how the piece opens.
        """
        text = self.default_text(text)
        caption = caption_ids(self.codec.lm_tokenizer, as_written(text), self.context_length) if text else []
        music: list[int] = []
        if prompt is not None:
            music = flat(self.codec.encode_bars(self.load_score(prompt)))
        elif time_signature or tempo:
            if self.codec.parts and self.codec.layout == "bars":
                music.append(self.codec.part_lm_id(0))
            music += self.codec.lm_ids_of_base_tokens(self.codec.opening_tokens(time_signature, tempo))
        return music_row(caption, music, self.codec.music_start_id)

    def load_score(self, music: Score | str | Path | bytes) -> Score:
        """A Score from a Score, MIDI bytes, a MIDI path or a recording (transcribed onto the
        codec's grid with `midillm.audio.transcribe`)."""
        if isinstance(music, Score):
            return music
        if isinstance(music, (bytes, bytearray)):
            try:
                return Score.from_midi(bytes(music))
            except Exception as error:
                raise TaskError(f"not a MIDI file: {first_line(error)}") from error
        if not Path(music).is_file():
            raise FileNotFoundError(f"file not found: {music}")
        from midillm.audio import codec_grid, is_audio_path, transcribe

        if is_audio_path(music):
            return transcribe(music, grid=codec_grid(self.codec))
        try:
            return Score(str(music))
        except Exception as error:
            raise TaskError(f"{music} is not a readable MIDI file: {first_line(error)}") from error

    def default_text(self, text: str | None, seed: int | None = 0) -> str | None:
        """The caption to use: the given one, else (if captions were trained) one of the train
        pieces' own captions without their titles, drawn by `seed` (None: unseeded) as often as
        the corpus's pieces have it, else none.

        A real piece's caption hangs together: its parts, instruments, key and metre are one
        piece's. The corpus profile keeps the most common of them with their counts
        (`CorpusProfile.captions`); a codec saved before it falls back to the typical caption.
        One caption per call: every sample of a batch, its prompt and its constraints read the
        same one."""
        if text is not None or not self.codec.captions or self.codec.corpus is None:
            return text
        # A codec saved before `captions` has its typical caption, whose parts and instruments
        # may not agree: its instruments then are left to the model.
        captions = getattr(self.codec.corpus, "captions", None) or {parts_agreeing(self.codec.corpus.caption): 1}
        return random.Random(seed).choices(list(captions), weights=list(captions.values()))[0] or None

    def typical_text(self) -> str | None:
        """The corpus's typical caption (each field's most common value), if captions were
        trained: a neutral context, not a prompt (it may describe no piece). Retrieval embeds
        pieces under it; an accompaniment takes the style and parts it does not give from it."""
        if self.codec.captions and self.codec.corpus is not None:
            return self.codec.corpus.caption or None
        return None

    def constraints(self, text: str | None = None, programs: list[int] | None = None,
                    min_bars: int | None = -1, strict_voice_leading: bool | None = None,
                    controls: MusicRequest | None = None, given_music: bool = False,
                    corpus_limits: bool = True, part_numbers: list[int] | None = None,
                    written_programs: list[int | None] | None = None) -> CorpusConstraints | None:
        """The corpus constraints for a caption (its instruments, if it names any, else the
        corpus's programs) or explicit `programs`, with strict voice leading between the parts
        if asked (`midillm.decoding.voice_leading`) and the request's `controls` (metre, bars,
        parts, the key-aware bias); None when the codec knows no corpus.

        A new piece plays the parts asked, each on its instrument (`part_instruments`), every
        one of them. Given music (a MIDI prompt to continue, infill, accompaniment) has the
        given parts' own instruments, and the caption's only as the instruments allowed.

        `corpus_limits=False` (constraints off): only what the request asks, its parts'
        instruments, the programs given, its metre, bars and parts; None when it asks none.
        `part_numbers`: the `<Part_k>` of each part the caption names, where the caller numbered
        them (an accompaniment's, given parts among them); else read from the caption.
        `written_programs`: on given music, each named part's instrument where it is to be
        written (an accompaniment's new parts; None: a given part), which it then plays."""
        if self.codec.corpus is None:
            return None
        text = self.default_text(text)
        # A caption that names its parts asks for that many.
        named_parts = names_in_caption(text) if self.codec.parts else []
        asked = {}
        if controls is not None:
            parts = controls.parts
            asked = dict(metre=controls.time_signature, bars=controls.bars,
                         parts=len(parts) if isinstance(parts, list) else parts,
                         key=(controls.key or caption_field(text, KEY) or None) if controls.key_bias else None,
                         key_bias=controls.key_bias,
                         density=controls.density if controls.density_bias else None,
                         density_bias=controls.density_bias)
            if controls.key_bias and not asked["key"]:
                raise TaskError("the key-aware bias needs a key: give one (--key, key=) or a caption with a Key line")
        instruments = written_programs if given_music else self.part_instruments(text, programs, controls)
        if instruments and not given_music:  # these parts, each on its instrument, and every one of them plays
            asked["parts"] = len(instruments)
        if controls is not None and controls.registers:
            asked["registers"] = resolve_registers(controls.registers, named_parts, asked.get("parts"))
        if strict_voice_leading is None:  # the corpus's habit for a new piece; given music, see _strict_for_given
            strict_voice_leading = not given_music and self.codec.corpus.avoids_parallels_with(
                _pitched_parts(instruments, asked.get("parts"), named_parts))
        allowed = programs or programs_named_in(text) or None
        if not corpus_limits:
            asked.update(key=None, key_bias=None, density=None, density_bias=None)  # biases: corpus constraints
            # Given music decides its own parts; a new piece's caption asks for the parts it names.
            named_parts = [] if given_music else named_parts
            if not (instruments or programs or named_parts or any(asked.values())):
                return None
            allowed = programs  # the caption's instruments, asked part by part, are `part_programs`
        return CorpusConstraints(self.grammar, self.codec.corpus, programs=allowed,
                                 max_parts=len(named_parts) or -1, min_bars=min_bars, part_names=named_parts,
                                 strict_voice_leading=strict_voice_leading, part_programs=instruments,
                                 corpus_limits=corpus_limits, **asked,
                                 part_numbers=part_numbers if part_numbers is not None else
                                 self._asked_part_numbers(text, named_parts, instruments, asked.get("parts")))

    def _asked_part_numbers(self, text: str | None, names: list[str], instruments: list[int] | None,
                            count: int | None) -> list[int] | None:
        """The `<Part_k>` number of each asked part, in caption order (`MusicCodec.part_numbers`):
        by its name and its instrument on the caption's "Instruments:" line (else as asked);
        None where the parts are only counted (a role-numbered codec then lets any parts play,
        no more than that many)."""
        count = max(len(names), len(instruments or []), count or 0)
        if not count or self.codec.part_numbering != "role":
            return None
        if len(names) == count:
            listed = part_programs_listed(caption_field(text, INSTRUMENTS))
            programs = listed if len(listed) == count and None not in listed else instruments
            return self.codec.part_numbers(names, programs if programs and len(programs) == count else None)
        if not instruments or len(instruments) != count:
            return None
        return self.codec.part_numbers([program_role(program) for program in instruments], instruments)

    def part_instruments(self, text: str | None, programs: list[int] | None = None,
                         controls: MusicRequest | None = None) -> list[int] | None:
        """Each part's program as asked (`request.part_instruments`: the programs given, else
        the caption's instruments, part by part), for a codec that writes parts; None if none
        is asked. At most as many parts as the codec can name."""
        if not self.codec.parts:
            return None
        instruments = part_instruments(text, programs, controls.parts if controls is not None else None)
        return instruments[:MAX_PARTS] if instruments else None

    def check_controls(self, request: MusicRequest, text: str | None) -> None:
        """A request's controls against what this model knows (its corpus): a metre it never
        had, a density its captions never said, an instrument outside its vocabulary, more parts
        than its pieces have, a key the caption names that the bias cannot read: one line naming
        what is possible."""
        corpus = self.codec.corpus
        if corpus is None:
            return
        metres = sorted(corpus.time_signatures, key=lambda metre: -corpus.time_signatures[metre])
        if request.time_signature and metres and request.time_signature not in corpus.time_signatures:
            raise TaskError(f"time signature {request.time_signature}: this model's corpus never had it; "
                            f"it knows {', '.join(metres)}")
        if request.density and not corpus.density_edges:
            raise TaskError("density: this model's captions never said it (prepared before 2026-12-05); "
                            "prepare the data again and train again to use it")
        known = sorted(int(program) for program in corpus.programs)
        listed = instruments_listed(caption_field(text, INSTRUMENTS)) if text else []
        unnamed = [name for _, name in listed if not programs_listed(name)]
        asked = request.programs or programs_listed(caption_field(text, INSTRUMENTS)) if text else request.programs
        foreign = [program for program in (asked or []) if known and program not in known]
        if unnamed or foreign:
            what = repr(unnamed[0]) if unnamed else f"{instrument_name(foreign[0])} (program {foreign[0]})"
            raise TaskError(f"instrument {what} is outside this model's vocabulary; it knows "
                            + ", ".join(f"{instrument_name(program)} ({program})" for program in known))
        instruments = self.part_instruments(text, request.programs, request)
        parts = len(request.parts) if isinstance(request.parts, list) else request.parts
        parts = len(instruments) if instruments and not parts else parts
        most = getattr(corpus, "max_parts", 0)
        if parts and most and parts > most:
            raise TaskError(f"{parts} parts: this model's pieces have at most {most}")
        if parts and not self.codec.parts:
            raise TaskError("this model's codec writes no parts (a codec from before parts, or not REMI): "
                            "it cannot be asked for parts")

    # ------------------------------------------------------------------------- sampling

    def _decoder_step(self, input_ids: torch.Tensor, cache, attention_mask: torch.Tensor | None = None,
                      position_ids: torch.Tensor | None = None):
        decoder = self.model.get_decoder()
        output = decoder(input_ids=input_ids, cache=cache, attention_mask=attention_mask,
                         position_ids=position_ids, use_cache=True)
        return output.last_hidden_state[:, -1], output.cache

    def _head(self) -> torch.Tensor:
        return self.model.get_output_embeddings().weight[self.rows]

    @_wide_while_sampling
    @torch.inference_mode()
    def generate_ids(self, num_samples: int = 1, prompt=None, text: str | None = None,
                     settings: SamplingSettings | None = None, seed: int | None = 0,
                     programs: list[int] | None = None, progress: bool = False,
                     time_signature: str | None = None, tempo: float | None = None,
                     constrain: bool = True, prompt_ids: list[int] | None = None,
                     plans: list[_BarPlan] | None = None,
                     on_step: Callable[[int, int], None] | None = None,
                     strict_voice_leading: bool | None = None, controls: MusicRequest | None = None,
                     texts: list[str | None] | None = None, part_numbers: list[int] | None = None,
                     written_programs: list[int | None] | None = None) -> list[list[int]]:
        """Sample `num_samples` continuations in one batch; returns prompt + new ids each.

        `constrain=False` samples the model on its own: the syntax grammar and what the request
        asks (the caption's instruments part by part, the programs, metre, bars and parts given),
        none of the corpus's limits; True adds the corpus constraints (`CorpusConstraints`). `self.last_generation` then holds,
        per sample, whether it ended by itself, its new tokens and the mean masked mass.
        `prompt_ids` replaces the prompt built from `prompt` and `text`; `plans` (one per sample)
        hold a task's bars (see `_BarPlan`). `on_step(step, steps)` is told of each new token
        (the studio's progress). `controls`: a request whose metre, length, parts and key-aware
        bias the corpus constraints enforce (`MidiLM.run` passes a new piece's). `texts`: one
        caption per sample for new pieces (eval draws a training caption for each), each row
        prompted and constrained by its own. `part_numbers`: the `<Part_k>` of each part the
        caption names, where the caller numbered them, and `written_programs` the instruments of
        the parts it writes around given music (see `constraints`).
        """
        settings = settings or self.sampling
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        # A task's plan says when its music ends, not the corpus's shortest piece; a task's given
        # music, like a MIDI prompt, decides its own parts and their instruments.
        given_music = plans is not None or prompt is not None
        if texts is not None and (given_music or prompt_ids is not None or len(texts) != num_samples):
            raise ValueError("texts: one caption per sample, for new pieces only")
        # Drawn once: the prompt and the constraints (its instruments, its parts) read one caption.
        row_texts = list(texts) if texts is not None else [self.default_text(text, seed)] * num_samples
        distinct = list(dict.fromkeys(row_texts))  # each caption's prompt and constraints made once
        prompt_of = {row_text: prompt_ids if prompt_ids is not None else
                     self.prompt_ids(prompt, row_text, time_signature, tempo) for row_text in distinct}
        constraints_of = {row_text: self.constraints(row_text, programs, min_bars=None if plans else -1,
                                                     strict_voice_leading=strict_voice_leading, controls=controls,
                                                     given_music=given_music, corpus_limits=constrain,
                                                     part_numbers=part_numbers, written_programs=written_programs)
                          for row_text in distinct}
        prompts = [prompt_of[row_text] for row_text in row_texts]
        constraints = constraints_of[distinct[0]] if len(distinct) == 1 else \
            [constraints_of[row_text] for row_text in row_texts]
        grammar_processor = GrammarLogitsProcessor(self.grammar, prompts, row_logits=True, constraints=constraints)
        # Guidance of an asked key (`SamplingSettings.key_guidance`): each row's caption in the
        # relative key is a second row of the batch, which takes the same tokens; its logits are
        # the negative prompt's. A drawn caption's key was asked by nobody: it is not guided.
        key_asked = controls is not None and controls.key is not None
        guide_texts = {row_text: self.guidance_text(row_text) for row_text in distinct} \
            if key_asked and settings.key_guidance != 1 and prompt_ids is None else {}
        guide_prompt_of = {row_text: self.prompt_ids(prompt, guide, time_signature, tempo) if guide else prompt_of[row_text]
                           for row_text, guide in guide_texts.items()}
        guide_prompts = [guide_prompt_of[row_text] for row_text in row_texts] if guide_texts else []
        # A caption cut to its budget before its Key line prompts both ways alike: nothing to guide.
        guided = bool(guide_prompts) and guide_prompts != prompts
        model_prompts = prompts + guide_prompts if guided else prompts
        program_mask = self._program_mask(programs)
        warpers = settings.warpers()
        head = self._head()
        end_row = self.grammar.end_row

        # Prompts of different lengths (one caption per row) are left-padded to one length.
        width = max(len(ids) for ids in model_prompts)
        pads = [width - len(ids) for ids in model_prompts]
        sequences = torch.tensor([[self._pad_id()] * pad + ids for pad, ids in zip(pads, model_prompts)])
        new_rows = torch.empty((num_samples, 0), dtype=torch.long)
        finished = torch.zeros(num_samples, dtype=torch.bool)
        new_tokens = torch.zeros(num_samples, dtype=torch.long)
        masked_mass = torch.zeros(num_samples)
        # The window the model sees: each row left-padded to one length.
        attention = torch.tensor([[0] * pad + [1] * (width - pad) for pad in pads])
        if any(pads):
            positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
            hidden, cache = self._decoder_step(sequences, None, attention, positions)
            next_position = positions[:, -1] + 1
        else:
            next_position = torch.full((len(model_prompts),), sequences.shape[1], dtype=torch.long)
            hidden, cache = self._decoder_step(sequences, None)
        bar = tqdm(total=settings.max_new_tokens, desc=f"Sampling {num_samples}", unit="token", disable=not progress)
        for step in range(settings.max_new_tokens):
            bar.update()
            if on_step is not None:
                on_step(step + 1, settings.max_new_tokens)
            logits = (hidden.to(head.dtype) @ head.T).float()
            if guided:
                asked, negative = logits[:num_samples], logits[num_samples:]
                logits = negative + settings.key_guidance * (asked - negative)
            model_logits = logits.clone() if plans is not None else None
            if plans is not None:  # given notes still to come at an onset count toward its cap
                grammar_processor.reserved = [plan.given_notes_to_come() for plan in plans]
            logits = grammar_processor(sequences[:num_samples], logits)
            masked_mass += grammar_processor.masked_mass * ~finished
            new_tokens += (~finished).long()
            if program_mask is not None:
                logits = logits.masked_fill(~program_mask, float("-inf"))
            if plans is not None:
                for row, plan in enumerate(plans):
                    allowed, given = plan.choices()
                    planned = logits[row].masked_fill(~allowed, float("-inf"))
                    syntax = grammar_processor.syntax[row]
                    if given is not None and syntax[given_row := given[0]]:
                        # Reaching the given onset is worth whatever the model gives to moving time
                        # there, whichever note it would have written first; and given music is
                        # never the constraints' to refuse. Only where the syntax lets it come now:
                        # not inside a note, nor after a part token that has struck nothing.
                        planned[given_row] = torch.logsumexp(model_logits[row][given[1] & syntax], dim=0)
                    if not torch.isfinite(planned).any():  # the plan wins: the piece ends or a bar opens
                        planned = torch.full_like(planned, float("-inf"))
                        planned[plan.fallback_row()] = 0.0
                    logits[row] = planned
            logits = warpers(new_rows, logits)
            chosen_rows = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)
            if plans is not None:  # given music is written as given, not sampled
                for row, plan in enumerate(plans):
                    forced = bool(plan.queue)
                    if forced:
                        chosen_rows[row] = self.grammar.row_of_lm_id[plan.queue.pop(0)]
                    plan.record(int(chosen_rows[row]), forced)
            chosen_rows = torch.where(finished, torch.full_like(chosen_rows, end_row), chosen_rows)
            finished |= chosen_rows == end_row
            next_ids = self.rows[chosen_rows]
            if guided:  # the negative prompt's rows take the same tokens
                next_ids = torch.cat([next_ids, next_ids])
            sequences = torch.cat([sequences, next_ids[:, None]], dim=1)
            new_rows = torch.cat([new_rows, chosen_rows[:, None]], dim=1)
            if finished.all():
                break
            if attention.shape[1] >= self.context_length:
                hidden, cache, attention, next_position = self._slide_window(sequences, model_prompts, pads)
            else:
                attention = torch.cat([attention, torch.ones((len(model_prompts), 1), dtype=attention.dtype)], dim=1)
                hidden, cache = self._decoder_step(next_ids[:, None], cache, attention, next_position[:, None])
                next_position += 1
        bar.close()
        # What was asked goes with each record: the sanity checks judge a sample by its caption's parts.
        self.last_generation = [
            {"ended": bool(ended), "new_tokens": int(count), "masked_mass": float(mass / max(int(count), 1)),
             "caption": row_text,
             "part_programs": None if given_music else self.part_instruments(row_text, programs, controls)}
            for ended, count, mass, row_text in zip(finished.tolist(), new_tokens.tolist(), masked_mass.tolist(),
                                                    row_texts)]
        for record, plan in zip(self.last_generation, plans or []):
            record["bars"] = plan.bars_done  # bars of a task's plan (infill: the new bars)
        return [self._trim(row.tolist()[pad:]) for row, pad in zip(sequences[:num_samples], pads)]

    def guidance_text(self, text: str | None) -> str | None:
        """The negative prompt of guidance: the caption in its key's relative key ("Key: A minor"
        -> "Key: C major"), the key the model drifts to; None where the caption names no key."""
        key = known_key(caption_field(text, KEY) or "")
        return with_fields(text, {KEY: relative_key(key)}) if key else None

    def _pad_id(self) -> int:
        pad_id = self.codec.lm_tokenizer.pad_token_id
        return pad_id if pad_id is not None else self.codec.music_end_id

    def _slide_window(self, sequences: torch.Tensor, prompts: list[list[int]], pads: list[int]):
        """Past the training context: keep the caption and `<music>`, then each row's most recent
        music from one of its bar lines on, as every training row starts. Rows are left-padded to
        one length; returns the hidden state, cache, attention mask and next position ids."""
        bar_ids = self.grammar.bar_start_lm_ids
        windows = []
        for row, prompt_ids, pad in zip(sequences.tolist(), prompts, pads):
            row = row[pad:]
            head_length = prompt_ids.index(self.codec.music_start_id) + 1
            keep = max(self.context_length // 2 - head_length, 1)
            music = row[head_length:]
            start = max(len(music) - keep, 0)
            while start < len(music) and music[start] not in bar_ids:
                start += 1
            if start >= len(music):  # no bar line in the recent music: keep it as it is
                start = max(len(music) - keep, 0)
            windows.append(row[:head_length] + music[start:])
        length = max(len(window) for window in windows)
        input_ids = torch.tensor([[self._pad_id()] * (length - len(window)) + window for window in windows])
        attention = torch.tensor([[0] * (length - len(window)) + [1] * len(window) for window in windows])
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
        hidden, cache = self._decoder_step(input_ids, None, attention, positions)
        return hidden, cache, attention, positions[:, -1] + 1

    def _program_mask(self, programs: list[int] | None) -> torch.Tensor | None:
        """Rows allowed when only these programs (-1 = drums) may play."""
        if not programs:
            return None
        allowed = set(programs)
        mask = []
        for lm_id in self.grammar.row_lm_ids:
            music_id = self.codec.music_id_of_lm_id(lm_id)
            parts = self.codec.music_token_parts[music_id] if music_id is not None else []
            used = {int(token.split("_")[1]) for token in parts if token.startswith("Program_")}
            mask.append(used <= allowed)
        return torch.tensor(mask)

    def _trim(self, ids: list[int]) -> list[int]:
        end = self.codec.music_end_id
        return ids[: ids.index(end) + 1] if end in ids else ids

    def generate(self, num_samples: int = 1, prompt=None, text: str | None = None, seed: int | None = 0,
                 programs: list[int] | None = None, time_signature: str | None = None,
                 tempo: float | None = None, constrain: bool = True, strict_voice_leading: bool | None = None,
                 key: str | None = None, parts: list[str] | int | None = None, bars: int | None = None,
                 key_bias: float | bool | None = None, density: str | None = None, **sampling) -> list[Score]:
        """Sample scores. `prompt` (a MIDI or audio path, bytes or Score) is continued; `text` is a caption
        (default: one a training piece had, drawn by `seed`); `programs` (-1 = drums), `time_signature` and
        `tempo` force those controls; `constrain=False` turns the corpus constraints off;
        `strict_voice_leading` forbids parallel fifths and octaves, crossing and wide spacing
        between the parts (None: where the corpus avoids them, `CorpusProfile.avoids_parallels`);
        `key`, `parts`, `bars`, `density` and `key_bias` are the other controls (`MusicRequest`);
        `sampling` changes the bundle's `SamplingSettings` (max_new_tokens, ...)."""
        request = MusicRequest("continue", prompt, text, programs=programs, time_signature=time_signature,
                               tempo=tempo, key=key, parts=parts, bars=bars, key_bias=key_bias, density=density,
                               num_samples=num_samples, seed=seed, constrain=constrain,
                               strict_voice_leading=strict_voice_leading, sampling=sampling)
        return [sample.score for sample in self.run(request)]

    def run(self, request: MusicRequest) -> list[Sample]:
        """Do what `request` asks: the one way from a request to written music, whichever door
        (the command, the pipeline, the studio, the methods above and below) it came through."""
        if request.task != "continue":
            self._require(request.task)
        settings = self.sampling.updated(**request.sampling)
        # The request's caption, else (a new piece) one a training piece had, drawn by the
        # request's seed; drawn once, so the key, the checks, the prompt and the constraints
        # read the same one.
        text = self.default_text(request.text, request.seed) if request.task == "continue" else request.text
        request, text, key_back = self._in_common_key(request, text)
        samples = self._run(request, text, settings)
        if key_back is None:
            return samples
        shift, tonic, minor = key_back
        # Given music goes back exactly where it came from, and asked registers were moved by
        # `shift`; a new piece otherwise goes the way round the octave that keeps its registers.
        exact = request.music is not None or bool(request.registers)
        return [Sample(in_key(sample.score, shift if exact else
                              register_shift(sample.score, shift, self._register_ranges(sample.score)), tonic, minor),
                       sample.ids, sample.ended) for sample in samples]

    def _register_ranges(self, score: Score) -> list[tuple[int, int] | None]:
        """Each track's range in the corpus (by its part's name, else its instrument's family),
        in the common key: where `register_shift` keeps a new piece."""
        corpus = self.codec.corpus
        if corpus is None:
            return [None] * len(score.tracks)
        part_ranges = getattr(corpus, "part_ranges", None) or {}
        ranges = []
        for track in score.tracks:
            bounds = None if track.is_drum else part_ranges.get(track.name) or corpus.pitch_range(track.program)
            ranges.append(tuple(bounds) if bounds else None)
        return ranges

    def _in_common_key(self, request: MusicRequest, text: str | None
                       ) -> tuple[MusicRequest, str | None, tuple[int, int, bool] | None]:
        """A model trained in the common key (`tonality.in_common_key`) is asked in it: the given
        music is moved there from its own key, a new piece is asked in the common key of the
        mode wanted. Returns the request and caption as the model gets them, and how to move
        what it writes back (shift, tonic, minor); None when the codec has no common key."""
        if not self.codec.common_key:
            return request, text, None
        keys = self.codec.common_keys
        if request.music is not None:
            score = self.load_score(request.music)
            key = estimate_key(score)
            if key is None:  # drums alone: nothing to move
                return request, text, None
            tonic, minor = key
            common, target = keys[minor], common_tonic(minor, keys)
            shift = shift_to(tonic, target)
            # A Key line would name the key the music was in before it was moved.
            text = with_fields(text, {KEY: common}) if caption_field(text, KEY) else text
            request = request.updated(music=in_key(score, shift, target, minor), text=text,
                                      key=common if request.key else None)
            return request, text, (-shift, tonic, minor)
        if request.key:
            tonic, minor = key_tonic(request.key)
        else:
            # The drawn caption says the mode (the common key of it); the tonic is drawn as often
            # as the corpus's pieces had it.
            written = known_key(caption_field(text, KEY) or "")
            corpus_keys = getattr(self.codec.corpus, "keys", None) or {}
            tonic, minor = drawn_key(corpus_keys, key_tonic(written)[1] if written else None, request.seed)
        shift = shift_to(common_tonic(minor, keys), tonic)
        # The piece is written in the common key and moved by `shift` afterwards: so are its registers.
        registers = {part: (max(0, low - shift), min(127, high - shift))
                     for part, (low, high) in request.registers.items()} if request.registers else None
        if request.key:
            request = request.updated(key=keys[minor])
        elif self.codec.captions:  # the drawn caption's mode, as the model learned it; asked by nobody: not guided
            text = with_fields(text, {KEY: keys[minor]})
        return request.updated(registers=registers), text, (shift, tonic, minor)

    def _run(self, request: MusicRequest, text: str | None, settings: SamplingSettings) -> list[Sample]:
        if request.task == "continue":
            # The caption carries every control given.
            if self.codec.captions:
                text = request.prompt_caption(text) or text
                request, text = self._in_part_order(request, text)
            self.check_controls(request, text)
            rows = self.generate_ids(request.num_samples, request.music, text, settings, request.seed,
                                     request.programs, progress=request.progress,
                                     time_signature=request.time_signature, tempo=request.tempo,
                                     constrain=request.constrain, on_step=request.on_step,
                                     strict_voice_leading=request.strict_voice_leading, controls=request)
            # The parts are named as the whole caption names them (the prompt holds it cut to a budget).
            names = self.codec.caption_part_numbers(text) or None
            # A new piece the token budget cut ends at its last bar line; a continuation keeps
            # every note of the music it was given.
            return [Sample(self.written_as_asked(self.codec.decode(row, names=names, whole_bars=request.music is None),
                                                 request), row, record["ended"])
                    for row, record in zip(rows, self.last_generation)]
        given = self.load_score(request.music)
        if request.task == "infill":
            scores = self._infill(given, request, settings)
        elif request.task == "accompany":
            scores = self._accompany(given, request.tracks, request, settings, keep_style=True)
        else:
            scores = self._arrange(given, request, settings)
        return [Sample(self.in_given_tempo(score, given), None, record["ended"])
                for score, record in zip(scores, self.last_generation)]

    @staticmethod
    def in_given_tempo(score: Score, given: Score) -> Score:
        """The score with the given music's tempo changes, exactly: the tempo tokens are binned
        (104 BPM would come back as 100.97), and given music decides its own tempo."""
        from symusic import Tempo

        if not len(given.tempos) or not str(score.ttype).endswith("Tick"):
            return score
        given = given.to("tick")
        scale = score.ticks_per_quarter / given.ticks_per_quarter
        score.tempos = [Tempo(round(int(tempo.time) * scale), float(tempo.qpm)) for tempo in given.tempos]
        return score

    def _in_part_order(self, request: MusicRequest, text: str | None) -> tuple[MusicRequest, str | None]:
        """The caption's parts in the order the codec writes them (`caption_in_part_order`: with
        role numbering the bass and drums last, as in every training caption), and the request's
        parts, programs and registers given part by part moved with them."""
        text, order = self.codec.caption_in_part_order(text)
        if order is None:
            return request, text
        moved = {}
        if isinstance(request.parts, list) and len(request.parts) == len(order):
            moved["parts"] = [request.parts[index] for index in order]
        if request.programs and len(request.programs) == len(order):
            moved["programs"] = [request.programs[index] for index in order]
        if request.registers:  # a part's register by its number (from 1) follows the part
            place = {str(old + 1): str(new + 1) for new, old in enumerate(order)}
            moved["registers"] = {place.get(part, part): bounds for part, bounds in request.registers.items()}
        return (request.updated(**moved) if moved else request), text

    @staticmethod
    def written_as_asked(score: Score, request: MusicRequest) -> Score:
        """The score with the request written into it where tokens cannot say it exactly: an
        asked tempo is the piece's one tempo (the tempo tokens are binned: 90 would be 87.4), and
        an asked length ends the piece at its last bar line (a note held over it is cut there)."""
        if request.tempo is not None:
            from symusic import Tempo

            score.tempos = [Tempo(0, request.tempo)]
        if request.bars and str(score.ttype).endswith("Tick"):
            from midillm.tokenization.metre import end_of_bars

            metres = [(int(sig.time), int(sig.numerator), int(sig.denominator)) for sig in score.time_signatures]
            end = end_of_bars(metres, score.ticks_per_quarter, request.bars)
            for track in score.tracks:
                for note in track.notes:
                    if note.time < end < note.time + note.duration:
                        note.duration = end - note.time
        return score

    # ------------------------------------------------------------------------- tasks on given music

    @property
    def tasks(self) -> tuple[str, ...]:
        """What this model was trained to do: "continue", and where its rows taught them,
        "infill", "accompany" and "arrange"."""
        return tuple(self.codec.tasks) if self.codec.parts else ("continue",)

    def _require(self, task: str) -> None:
        if task in self.tasks:
            return
        why = ("its codec writes no parts (a codec from before parts, or not REMI)" if not self.codec.parts
               else f"its training data had no {'accompaniment' if task == 'arrange' else task} examples")
        flag = "--infill-ratio" if task == "infill" else "--accompany-ratio"
        raise TaskError(f"this model cannot {task}: {why}; prepare the data again with {flag} above 0 "
                        f"and train again (it can: {', '.join(self.tasks)})")

    def infill(self, midi, bars: tuple[int, int] | str, num_samples: int = 1, text: str | None = None,
               seed: int | None = 0, constrain: bool = True, strict_voice_leading: bool | None = None,
               **sampling) -> list[Score]:
        """New bars `bars` (first, last; counted from 1, inclusive, or "5-8") of `midi` (a path,
        MIDI bytes, a Score or a recording), leading from the bar before into the bar after.
        Everything outside the gap is the piece as given; the gap has exactly that many bars."""
        request = MusicRequest("infill", midi, text, bars=bars, num_samples=num_samples, seed=seed,
                               constrain=constrain, strict_voice_leading=strict_voice_leading, sampling=sampling)
        return [sample.score for sample in self.run(request)]

    def _infill(self, score: Score, request: MusicRequest, settings: SamplingSettings) -> list[Score]:
        text, num_samples = request.text, request.num_samples
        prompt, piece_bars, gap_start, gap_bars = self.infill_prompt(score, request.bars, text)
        caption = prompt[:prompt.index(self.codec.music_start_id)]
        settings = settings.updated(max_new_tokens=min(settings.max_new_tokens * 4,
                                                       self.context_length - len(prompt)))
        plans = [self._plan(exact_bars=gap_bars) for _ in range(num_samples)]
        # Each gap bar's metre, as in force there (the onsets layout writes it only where it changes).
        row_metre, metres = self._bar_metres(piece_bars[:gap_start + gap_bars])
        metres = metres[gap_start:]
        row_has_note = torch.tensor([lm_id in self.grammar.note_lm_ids for lm_id in self.grammar.row_lm_ids])
        # The parts around the gap have their instruments; the gap keeps them.
        changes_program = torch.tensor([any(token.startswith("Program_") for token in self._row_tokens(lm_id))
                                        for lm_id in self.grammar.row_lm_ids])
        for plan in plans:
            plan.row_metre, plan.metres, plan.row_has_note = row_metre, metres, row_has_note
            plan.row_changes_program = changes_program
        rows = self.generate_ids(num_samples, settings=settings, seed=request.seed, constrain=request.constrain,
                                 prompt_ids=prompt, text=text if text is not None else self.codec.caption(score),
                                 plans=plans, progress=request.progress, on_step=request.on_step,
                                 strict_voice_leading=self._strict_for_given(request, score))
        scores = []
        for row in rows:
            whole = filled_piece(caption, piece_bars, gap_start, gap_bars, self.codec.music_part(row),
                                 self.codec.music_start_id, self.codec.music_end_id)
            decoded = self.codec.decode(whole, names=self.codec.score_part_numbers(score))
            scores.append(self.with_given_tracks(decoded, score, gap=(gap_start, gap_start + gap_bars)))
        return scores

    def infill_prompt(self, score: Score, bars: tuple[int, int] | str, text: str | None = None):
        """The infill prompt for bars `bars` of `score` (caption, the music around the gap with
        `<gap>` per missing bar, `<fill>`), leaving room for the new bars in the training
        context. Returns (prompt ids, the piece's bars as ids, first gap bar from 0, gap bars)."""
        first, last = parse_bar_range(bars)
        # Notes before the gap keep their written lengths: what they were held into is rewritten.
        piece_bars = self.codec.encode_bars(score, lengths_before=first - 1)
        if last > len(piece_bars):
            raise TaskError(f"bars {first}-{last} are outside the piece, which has {len(piece_bars)} bars")
        gap_start, gap_bars = first - 1, last - first + 1
        caption = self._caption_ids(text if text is not None else self.codec.caption(score))
        # Room for the new bars: twice the piece's mean bar length, within the training context.
        mean_bar = max(1, sum(len(bar) for bar in piece_bars) // len(piece_bars))
        room = min(self.context_length // 2, 2 * mean_bar * gap_bars + 8)
        budget = self.context_length - len(caption) - gap_bars - 3 - room
        if budget < 0:
            raise TaskError(f"a gap of {gap_bars} bars does not fit this model's context of "
                            f"{self.context_length} tokens; ask for fewer bars")
        prompt = infill_prompt(caption, piece_bars, gap_start, gap_bars, self.codec.music_start_id,
                               self.codec.gap_id, self.codec.fill_id, budget)
        return prompt, piece_bars, gap_start, gap_bars

    def accompany(self, midi, tracks: list[str] | None = None, num_samples: int = 1, text: str | None = None,
                  seed: int | None = 0, constrain: bool = True, strict_voice_leading: bool | None = None,
                  **sampling) -> list[Score]:
        """Keep the `tracks` of `midi` (by name; default: all of its tracks) exactly and write the
        other parts for them, bar by bar (on the chorales: harmonise a soprano line). The parts
        to write come from the caption's "Parts:" line (`text`, else the corpus's)."""
        request = MusicRequest("accompany", midi, text, tracks=tracks, num_samples=num_samples, seed=seed,
                               constrain=constrain, strict_voice_leading=strict_voice_leading, sampling=sampling)
        return [sample.score for sample in self.run(request)]

    def arrange(self, midi, text: str, tracks: list[str] | None = None, num_samples: int = 1,
                seed: int | None = 0, constrain: bool = True, strict_voice_leading: bool | None = None,
                **sampling) -> list[Score]:
        """Keep the melody of `midi` (the `tracks` named, else its highest part) and write the rest
        anew under the caption `text` (instruments, composer, tempo, parts)."""
        request = MusicRequest("arrange", midi, text, tracks=tracks, num_samples=num_samples, seed=seed,
                               constrain=constrain, strict_voice_leading=strict_voice_leading, sampling=sampling)
        return [sample.score for sample in self.run(request)]

    def _arrange(self, score: Score, request: MusicRequest, settings: SamplingSettings) -> list[Score]:
        tracks = request.tracks
        if not tracks:
            played = [track for track in score.tracks if track.note_num()]
            if not played:
                raise TaskError("the MIDI file has no notes")
            melody = max(played, key=lambda track: float(track.notes.numpy()["pitch"].mean()))
            tracks = [melody.name or ""]
            score = score.copy()
            score.tracks = [melody.copy()]
        return self._accompany(score, tracks if score.tracks[0].name else None, request, settings, keep_style=False)

    def _strict_for_given(self, request: MusicRequest, given: Score, written: list[str] = ()) -> bool:
        """Strict voice leading for a task on given music: as asked, else the corpus's habit for
        pieces of as many parts (given and written) where its rules can hold. They read the parts
        from the top voice down, so the given parts must be listed so (mean pitches falling), and
        lie above the parts an accompaniment writes after them (each given part's mean pitch at or
        above the middle of each written part's range in the corpus): a soprano over alto, tenor
        and bass, not a bass under a melody."""
        if request.strict_voice_leading is not None:
            return request.strict_voice_leading
        corpus = self.codec.corpus
        means = [float(track.notes.numpy()["pitch"].mean()) for track in given.tracks
                 if track.note_num() and not track.is_drum]
        if corpus is None or not corpus.avoids_parallels_with(len(means) + len(written)):
            return False
        if not means or any(lower > upper for upper, lower in zip(means, means[1:])):
            return False
        ranges = [corpus.part_ranges.get(name) for name in written]
        return all(span is not None and means[-1] >= (span[0] + span[1]) / 2 for span in ranges)

    def _accompany(self, score: Score, tracks: list[str] | None, request: MusicRequest, settings: SamplingSettings,
                   keep_style: bool) -> list[Score]:
        text, num_samples = request.text, request.num_samples
        given = select_tracks(score, tracks)
        # The user's fields, then the melody's own key, metre and tempo, then the corpus's: one
        # training piece's caption, drawn by the seed as a new piece's is (its parts and
        # instruments are one real piece's); its parts are the given ones, then the others.
        style = self.default_text(None, request.seed) or self.typical_text()
        caption_text, names = accompaniment_caption(given, text, style, keep_style,
                                                    max_parts=getattr(self.codec.corpus, "max_parts", 0))
        written = names[len(given.tracks):]
        given, caption_text, names, numbers, given_numbers, programs = self._numbered_accompaniment(
            given, caption_text, names, style, text)
        caption = self._caption_ids(caption_text)
        given_bars = self.codec.encode_bars(given, numbers=given_numbers if self.codec.layout == "onsets" else None)
        if self.codec.layout == "onsets":
            plans = [self._onset_plan(given_bars, set(given_numbers)) for _ in range(num_samples)]
            prompt = music_row(caption, given_bars[0][:1], self.codec.music_start_id)
            for plan in plans:
                plan.record(plan.bar_row, forced=False)  # the prompt opened the first bar
        else:
            prompt = music_row(caption, given_bars[0], self.codec.music_start_id)
            plans = [self._plan(given_bars=given_bars, given_parts=len(given.tracks)) for _ in range(num_samples)]
        total_given = sum(len(bar) for bar in given_bars)
        # Room for the given music and about three times as much of the other parts.
        settings = settings.updated(max_new_tokens=max(settings.max_new_tokens, 4 * total_given))
        rows = self.generate_ids(num_samples, settings=settings, seed=request.seed, constrain=request.constrain,
                                 prompt_ids=prompt, text=caption_text, plans=plans, progress=request.progress,
                                 on_step=request.on_step, part_numbers=numbers, written_programs=programs,
                                 strict_voice_leading=self._strict_for_given(request, given, written))
        scores = []
        for row, plan in zip(rows, plans):
            music = self.codec.music_part(row)
            # Out of tokens before the given music ended: the rest is written as given.
            music += plan.rest_ids()
            score = self.codec.decode(music_row(caption, music, self.codec.music_start_id, self.codec.music_end_id),
                                      names=dict(zip(numbers, names)))
            if not keep_style:  # an arrangement's parts play the instruments they are named after
                for track in [track for track in score.tracks if track.name in written]:
                    program = programs_listed(track.name)
                    if program and program[0] >= 0:
                        track.program = program[0]
            scores.append(self.with_given_tracks(score, given))
        return scores

    @staticmethod
    def with_given_tracks(score: Score, given: Score, gap: tuple[int, int] | None = None) -> Score:
        """The written score on the given music's time base, with its given parts as the user's
        own tracks: every note's time, length and loudness as given (the tokens hold them on the
        corpus's grid and in its loudness levels), and the tracks' programs and controls.
        `gap` (an infill's bars, as bar numbers from 0: first, end): there a given part holds
        the notes written, which start in those bars; around them the user's own. A given part is
        found by its name (`caption.part_names`: the name the caption gave it), several of one
        name in turn; one the written score does not hold as often stays as decoded."""
        if not str(score.ttype).endswith("Tick"):
            return score
        from midillm.tokenization.metre import end_of_bars

        given = given if str(given.ttype).endswith("Tick") else given.to("tick")
        written = score.resample(given.ticks_per_quarter) if score.ticks_per_quarter != given.ticks_per_quarter \
            else score.copy()
        if gap is not None:
            metres = [(int(sig.time), int(sig.numerator), int(sig.denominator)) for sig in given.time_signatures]
            start, stop = (end_of_bars(metres, given.ticks_per_quarter, bars) for bars in gap)
        places: dict[str, list[int]] = {}
        for index, track in enumerate(written.tracks):
            places.setdefault(track.name, []).append(index)
        originals: dict[str, list] = {}
        for name, track in zip(part_names(given), [track for track in given.tracks if track.note_num()]):
            originals.setdefault(name, []).append(track)
        tracks = list(written.tracks)
        for name, own in originals.items():
            if len(places.get(name, [])) != len(own):
                continue
            for index, track in zip(places[name], own):
                kept = track.copy()
                kept.name = tracks[index].name  # as the caption names it: a "Track10" is its role, "Drums"
                if gap is not None:
                    around = [note for note in track.notes if not start <= note.time < stop]
                    inside = [note for note in tracks[index].notes if start <= note.time < stop]
                    kept.notes = sorted(around + inside, key=lambda note: (note.time, -note.pitch))
                tracks[index] = kept
        written.tracks = tracks
        return written

    def _programs_by_part_name(self, *texts: str | None) -> dict[str, int]:
        """Part name (lower case) -> the program a part of that name plays: in the last of
        `texts` (captions) that lists one instrument per part and names it, else most often in
        the training pieces' captions (`CorpusProfile.captions`, as often as pieces have each)."""
        def pairs(caption):
            names = names_in_caption(caption)
            programs = part_programs_listed(caption_field(caption, INSTRUMENTS))
            return [(name.lower(), program) for name, program in zip(names, programs)
                    if program is not None] if names and len(programs) == len(names) else []

        counts: dict[str, Counter] = {}
        for caption, weight in (getattr(self.codec.corpus, "captions", None) or {}).items():
            for name, program in pairs(caption):
                counts.setdefault(name, Counter())[program] += weight
        listed = {name: counted.most_common(1)[0][0] for name, counted in counts.items()}
        for text in texts:
            listed.update(pairs(text))
        return listed

    def _numbered_accompaniment(self, given: Score, caption_text: str, names: list[str], *texts: str | None
                                ) -> tuple[Score, str, list[str], list[int], list[int], list[int | None] | None]:
        """An accompaniment's parts (`names`: the given ones first) numbered as the codec numbers
        parts: (the given parts in that order, the caption with its parts in that order, their
        names, their numbers, the given parts' numbers, and each part's instrument where it is
        written and known: what the corpus constraints hold it to). Numbered in order, as they are: the
        given parts first. Numbered by role, each part by its name and instrument (a given part's
        own; a written part's where its name is one, an arrangement's, else as the drawn and the
        user's captions (`texts`) list it, else as the training pieces' captions play it most),
        the given ones among the others, and the
        caption's "Instruments:" line one per part where every part's is known (else left out:
        it would count other parts)."""
        count = len(given.tracks)
        if self.codec.part_numbering != "role":
            return given, caption_text, names, list(range(len(names))), list(range(count)), None
        listed = self._programs_by_part_name(*texts)
        programs = [DRUMS if track.is_drum else int(track.program) for track in given.tracks] + \
            [program if (program := instrument_program(name)) is not None else listed.get(name.lower())
             for name in names[count:]]
        numbers = self.codec.part_numbers(names, programs)
        order = sorted(range(len(names)), key=lambda index: numbers[index])
        fields = caption_fields(caption_text)
        fields.pop(INSTRUMENTS, None)  # the style's: it counts other parts
        text = with_fields(write_caption(fields), {
            PARTS: ", ".join(names[index] for index in order),
            INSTRUMENTS: instruments_value(programs[index] for index in order) if None not in programs else None})
        given_order = [index for index in order if index < count]
        written = [None if index < count else programs[index] for index in order]
        return (reorder_parts(given, given_order), text, [names[index] for index in order],
                [numbers[index] for index in order], [numbers[index] for index in given_order],
                written if any(program is not None for program in written) else None)

    def _bar_row(self) -> int:
        """The row that opens a bar: `<Part_0>` in the bars layout, else the bar line."""
        if self.codec.parts and self.codec.layout == "bars":
            return self.grammar.row_of_lm_id[self.codec.part_lm_id(0)]
        return self.grammar.row_of_lm_id[self.codec.lm_ids_of_base_tokens(["Bar_None"])[0]]

    def _onset_plan(self, given_bars: list[list[int]], given_numbers: set[int]) -> _OnsetPlan:
        """The plan of an accompaniment in the onsets layout (see `_OnsetPlan`): the given bars
        cut into their onsets, and each onset into its given parts' tokens."""
        walks = self.grammar.walks
        row_position = torch.tensor([walks[lm_id].first_position if lm_id in walks and walks[lm_id].first_type == "Position"
                                     else -1 for lm_id in self.grammar.row_lm_ids])
        row_shift = torch.tensor([walks[lm_id].first_shift if lm_id in walks else -1 for lm_id in self.grammar.row_lm_ids])
        bars = []
        for bar in given_bars:
            head, onsets = [], []  # onsets: [position, ids]
            for lm_id in bar:
                walk = walks[lm_id]
                if walk.first_type == "Position":
                    onsets.append([walk.first_position, [lm_id]])
                elif walk.first_type == SHIFT:
                    onsets.append([(onsets[-1][0] if onsets else 0) + walk.first_shift, [lm_id]])
                elif onsets:
                    onsets[-1][1].append(lm_id)
                else:
                    head.append(lm_id)
            bars.append((head, [self._given_onset(position, ids) for position, ids in onsets]))
        continues = torch.tensor([lm_id in walks and walks[lm_id].first_type in ("Program", "Pitch", "PitchDrum",
                                                                                 "Velocity", "Duration")
                                  for lm_id in self.grammar.row_lm_ids])
        score_meta = torch.tensor([any(token.startswith(("TimeSig_", "Tempo_")) for token in self._row_tokens(lm_id))
                                   for lm_id in self.grammar.row_lm_ids])

        # Asked several times a step (the mask, the model's wish, the record): encoded once.
        @functools.lru_cache(maxsize=None)
        def encode(tokens: tuple[str, ...]) -> tuple[int, ...]:
            return tuple(self.codec.lm_ids_of_onset_tokens(list(tokens)))

        return _OnsetPlan(bar_row=self._bar_row(), end_row=self.grammar.end_row, row_part=self.grammar.row_part,
                          row_position=row_position, row_shift=row_shift, row_continues_part=continues,
                          row_writes_score_meta=score_meta, given_bars=bars, given_numbers=frozenset(given_numbers),
                          encode=encode, onset_time=self.codec.onset_time, row_of_lm_id=self.grammar.row_of_lm_id)

    def _given_onset(self, position: int, ids: list[int]) -> _GivenOnset:
        """A given onset's ids -> its time's place, its tempo and each part's tokens."""
        tokens = [token for lm_id in ids for token in self._row_tokens(lm_id)][1:]  # after its time
        meta, parts = [], []
        for token in tokens:
            if token.startswith(PART + "_"):
                parts.append((int(token.split("_")[1]), [token]))
            elif parts:
                parts[-1][1].append(token)
            else:
                meta.append(token)
        return _GivenOnset(position, tuple(meta), [(number, tuple(part)) for number, part in parts], list(ids))

    def _plan(self, exact_bars: int | None = None, given_bars: list[list[int]] | None = None,
              given_parts: int = 0) -> _BarPlan:
        plan = _BarPlan(bar_row=self._bar_row(), end_row=self.grammar.end_row,
                        row_part=self.grammar.row_part, exact_bars=exact_bars, given_bars=given_bars,
                        given_parts=given_parts)
        if given_bars:  # the prompt holds the first given bar
            plan.bars_done = 1
            plan.part = max(part for part in map(self.codec.part_of_lm_id, given_bars[0]) if part is not None)
        return plan

    def _row_tokens(self, lm_id: int) -> list[str]:
        """The base music tokens a row writes (none for the end of music)."""
        music_id = self.codec.music_id_of_lm_id(lm_id)
        return self.codec.music_token_parts[music_id] if music_id is not None else []

    def _bar_metres(self, bars: list[list[int]]) -> tuple[torch.Tensor, list[int]]:
        """The metre each row writes (an index, -1: none) and the metre of each of `bars`."""
        names: dict[str, int] = {}
        row_metre = []
        for lm_id in self.grammar.row_lm_ids:
            music_id = self.codec.music_id_of_lm_id(lm_id)
            tokens = self.codec.music_token_parts[music_id] if music_id is not None else []
            metre = next((token for token in tokens if token.startswith("TimeSig_")), None)
            row_metre.append(names.setdefault(metre, len(names)) if metre else -1)
        metres, current = [], -1
        for bar in bars:
            metre = next((token for token in self.codec.music_tokens([self.codec.music_start_id, *bar])
                          if token.startswith("TimeSig_")), None)
            current = names.get(metre, current) if metre else current
            metres.append(current)
        return torch.tensor(row_metre), metres

    def _caption_ids(self, text: str | None) -> list[int]:
        if not text or not self.codec.captions:
            return []
        return caption_ids(self.codec.lm_tokenizer, as_written(text), self.context_length)

    def embed(self, pieces, layer: int | None = None, progress: bool = False):
        """One vector per piece (MIDI paths, bytes or Scores): the mean hidden state over its
        music tokens (`midillm.decoding.embedding`); an (n, hidden size) float32 numpy array.

        The vectors depend on the precision: compare vectors of one `MidiLM` (or one precision).
        An index (`midillm.retrieval`) makes its vectors and its queries' in the precision it
        records, `default_precision("embed")` by default (a float one, not int8)."""
        from .embedding import embed_pieces

        return embed_pieces(self, pieces, layer=layer, progress=progress)


def select_tracks(score: Score, names: list[str] | None) -> Score:
    """A copy of `score` with only the played tracks named (case-insensitive), in the order
    asked; all played tracks when `names` is empty. A track is named by its own name or by its
    part name (its role where its name says nothing: "Drums" for "Track10"); a name asked as
    often as tracks have it takes each of them in turn. One line for a name it lacks."""
    played = [track for track in score.tracks if track.note_num()]
    if not played:
        raise TaskError("the MIDI file has no notes")
    order = list(range(len(played)))
    if names:
        by_name: dict[str, list[int]] = {}
        for index, (track, part) in enumerate(zip(played, part_names(score))):
            for name in dict.fromkeys((track.name.strip().lower(), part.lower())):
                by_name.setdefault(name, []).append(index)
        missing = [name for name in names if name.strip().lower() not in by_name]
        if missing:
            have = ", ".join(part_names(score))
            raise TaskError(f"no track named {missing[0]!r} in the MIDI file (its tracks: {have})")
        # A name asked twice is its tracks in turn (two "Drum Kit" tracks), else the first again.
        order = []
        for name in names:
            tracks = by_name[name.strip().lower()]
            order.append(next((index for index in tracks if index not in order), tracks[0]))
    return reorder_parts(score, order)  # the given parts first, as accompaniment rows have them
