"""A finite-state grammar of the codec's tokenization, so that every generated sequence decodes.

The state after a token is (type of the last base token, position in the current bar, pitch of
the last note in the current run of notes at one onset, current part). With parts, `<Part_0>`
opens every bar, a bar line only follows a part token, and parts come in rising order within a
bar. A token
may follow a state when miditok's own type graph allows each step through its base tokens (a
music-BPE merge is walked token by token) and time never goes back inside a bar (a Position
after the current one, a Shift of at least one step from the bar's last onset, or a new bar). Masks are compiled once per codec for every state, over
the codec's music rows, and applied as a `transformers` `LogitsProcessor`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from transformers import LogitsProcessor

from midillm.tokenization.codec import MAX_PARTS, NOTE_TYPES, PART, SHIFT  # `<Part_k>`: part k's bar or notes
from midillm.tokenization.caption import DRUMS
from midillm.tokenization.metre import bar_length
from midillm.tokenization.roles import possible_roles

from .voice_leading import Voices, forbidden_pitches

SPECIAL_TYPES = frozenset({"PAD", "BOS", "EOS", "MASK"})
TIME_TYPES = frozenset({"Bar", "Position", SHIFT, "TimeShift", "Track", PART})
# Token types that strike a note, in any of the tokenizations (REMI's Pitch, MIDILike's NoteOn and
# their drum forms); the codec's `NOTE_TYPES` are the two that carry a note's pitch in its streams.
STRIKE_TYPES = frozenset({"Pitch", "PitchDrum", "NoteOn", "DrumOn"})
NO_POSITION = -1
NO_PITCH = 128  # no note yet at this onset: any pitch may come
START = "<start>"
FIRST_BAR = "<first bar>"  # onsets layout: the piece's first bar line, which the metre must follow
# Tokens that end a run of notes at one onset (see `midillm.tokenization.codec.order_notes_by_pitch`).
NOTE_RUN_BREAKERS = frozenset({"Bar", "Position", SHIFT, "TimeShift", "Track", PART, "Program"})
NO_PART = -1


def token_type(token: str) -> str:
    return token.split("_")[0]


def position_value(token: str) -> int | None:
    kind, _, value = token.partition("_")
    return int(value) if kind == "Position" and value.lstrip("-").isdigit() else None


def shift_value(token: str) -> int | None:
    kind, _, value = token.partition("_")
    return int(value) if kind == SHIFT and value.isdigit() else None


@dataclass(frozen=True)
class _TokenWalk:
    """What one music id does to the grammar state, whatever state it starts from."""

    valid_inside: bool          # its own base tokens follow the type graph and keep time moving
    first_type: str
    first_position: int         # first Position before any bar line in it, or NO_POSITION
    last_type: str
    resets_position: bool       # a bar line (or track start) after its last Position
    last_position: int          # its last Position value, or NO_POSITION if it has none
    first_pitch: int = -1       # pitch of its first note before anything that ends a run of notes
    pitch_after: int | None = None  # the run's last pitch after it; NO_PITCH: run ended; None: unchanged
    first_shift: int = NO_POSITION  # steps its leading `Shift` moves time on, or NO_POSITION


class MusicGrammar:
    """Per-state masks over `codec.music_lm_ids` (rows in that order; the end token last)."""

    def __init__(self, codec):
        self.codec = codec
        tokenizer = codec.music_tokenizer
        self.pitch_ordered = getattr(codec, "note_order", None) == "pitch-descending"
        graph = {kind: {token_type(successor) for successor in successors} - SPECIAL_TYPES
                 for kind, successors in tokenizer.tokens_types_graph.items() if kind not in SPECIAL_TYPES}
        self.parts = bool(getattr(codec, "parts", False))
        # The onsets layout: one stream in time order; `<Part_k>` names the part of the notes after
        # it (parts rising within an onset) and leaves time where it is.
        self.onsets = self.parts and getattr(codec, "layout", "bars") == "onsets"
        if self.onsets:
            note_starts = {"Pitch", "PitchDrum", "Program"}
            for kind, successors in graph.items():
                if kind == "Duration":  # the same part's next note (with its program where each
                    graph[kind] = successors | {PART}  # note has one), another part, or time moves
                elif kind in ("Position", "Tempo"):
                    graph[kind] = (successors - note_starts) | {PART}
                elif kind != "Program":
                    graph[kind] = successors - note_starts if "Pitch" in successors or "Program" in successors \
                        else successors
            for kind in graph:  # the metre opens its bar, right after the bar line, as the codec writes it
                if kind != "Bar":
                    graph[kind] = graph[kind] - {"TimeSig"}
            # A note held until its part's next onset has no duration: whatever may follow a
            # duration may follow the token before it (its pitch, or its velocity).
            for kind in ("Velocity",) if "Velocity" in graph else NOTE_TYPES:
                if "Duration" in graph.get(kind, ()):
                    graph[kind] = graph[kind] | graph["Duration"]
            if "TimeSig" in graph.get("Bar", ()):  # the metre is written where it changes, and first
                graph[FIRST_BAR] = {"TimeSig"}
                graph["Bar"] = graph["Bar"] | graph["TimeSig"]
            graph[PART] = {kind for kind in note_starts if kind in graph}
            if getattr(codec, "onset_time", "position") == "shift":  # a Shift says when, in the Position's place
                graph = {(SHIFT if kind == "Position" else kind):
                         {SHIFT if successor == "Position" else successor for successor in successors}
                         for kind, successors in graph.items()}
            if "Program" in graph and not tokenizer.config.program_changes:  # a program before every note
                graph[PART] = {"Program"}
            if "Program" in graph:
                graph["Program"] = {kind for kind in NOTE_TYPES if kind in graph}
            first_types = {"Bar"}
        elif self.parts:
            # Every bar line follows a part token, which is where a bar line could come.
            graph = {kind: (successors - {"Bar"}) | {PART} if "Bar" in successors else successors
                     for kind, successors in graph.items()}
            graph[PART] = {"Bar"}
            # miditok writes the metre after every bar line; parts after the first leave it to part 0.
            if "TimeSig" in graph.get("Bar", ()):
                graph["Bar"] = graph["Bar"] | (graph["TimeSig"] - {PART})
            graph["Bar"] = graph["Bar"] | {PART}  # an empty bar of a part
            first_types = {PART}
        elif "Track" in graph:  # MMM: every track starts with Track_Start
            first_types = {"Track"}
        elif "Bar" in graph:
            first_types = {"Bar"}
        else:
            first_types = ({"TimeShift"} | graph.get("TimeShift", set())) & set(graph)
        graph[START] = first_types
        self.graph = graph
        self.row_lm_ids = list(codec.music_lm_ids)
        self.row_of_lm_id = {lm_id: row for row, lm_id in enumerate(self.row_lm_ids)}
        self.end_row = self.row_of_lm_id[codec.music_end_id]

        walks = [self._walk(codec.music_token_parts[codec.music_id_of_lm_id(lm_id)])
                 for lm_id in self.row_lm_ids[:-1]]
        self.walks = {lm_id: walk for lm_id, walk in zip(self.row_lm_ids, walks)}
        self.types = sorted(graph)
        max_position = max([walk.last_position for walk in walks] + [walk.first_position for walk in walks]
                           + [walk.first_shift for walk in walks] + [0])
        self.positions = max_position + 2  # NO_POSITION and 0..max
        # allowed[type index, position + 1, row]
        first_type_index = np.array([self.types.index(walk.first_type) if walk.first_type in graph else -1
                                     for walk in walks])
        valid_inside = np.array([walk.valid_inside and walk.first_type in graph for walk in walks])
        first_position = np.array([walk.first_position for walk in walks])
        first_shift = np.array([walk.first_shift for walk in walks])
        self.allowed = np.zeros((len(self.types), self.positions, len(self.row_lm_ids)), dtype=bool)
        for type_index, kind in enumerate(self.types):
            follows = np.array([successor in graph[kind] for successor in self.types])
            type_ok = valid_inside & np.where(first_type_index >= 0, follows[first_type_index], False)
            for position in range(NO_POSITION, self.positions - 1):
                time_ok = (first_position == NO_POSITION) | (first_position > position)
                # A Shift moves on from the bar's last onset (from the bar line: any, even 0) and
                # stays within the bar's longest Position.
                time_ok &= (first_shift == NO_POSITION) | (position == NO_POSITION) | (
                    (first_shift >= 1) & (position + first_shift <= max_position))
                self.allowed[type_index, position + 1, :-1] = type_ok & time_ok
            # The piece may end once the last note is complete (its successors include time).
            self.allowed[type_index, :, -1] = kind not in (START, PART) and (
                kind in TIME_TYPES or bool(graph[kind] & TIME_TYPES))
        self.allowed_torch = torch.from_numpy(self.allowed)
        # Parts: which part each row opens (-1: none), and per current part the rows allowed.
        parts_of_rows = [self._opened_part(codec.music_token_parts[codec.music_id_of_lm_id(lm_id)])
                         for lm_id in self.row_lm_ids[:-1]] if self.parts else []
        self.row_part = torch.tensor([NO_PART if part is None else part for part in parts_of_rows] + [NO_PART]) \
            if self.parts else None
        if self.parts:
            opens = self.row_part >= 0
            if self.onsets:  # any part may open an onset; the next one at this onset is higher
                # (A row that moves time first, `Position` + the onset's first note, opens any part.)
                leads_with_part = torch.tensor([walk.first_type == PART for walk in walks] + [False])
                self.part_masks = [torch.ones(len(self.row_part), dtype=torch.bool)]
                for current in range(MAX_PARTS):
                    self.part_masks.append(~leads_with_part | (self.row_part > current))
            else:
                self.part_masks = [~opens | (self.row_part == 0)]  # before any part: part 0 first
                for current in range(MAX_PARTS):
                    self.part_masks.append(~opens | (self.row_part == 0) | (self.row_part > current))
            self.bar_start_lm_ids = {lm_id for lm_id, row_part in zip(self.row_lm_ids, self.row_part.tolist())
                                     if row_part == 0} if not self.onsets else \
                {lm_id for lm_id, walk in self.walks.items() if walk.first_type == "Bar"}
            # Part 0 carries the metre: its bar line is followed by a TimeSig, as miditok writes it.
            row_tokens = [codec.music_token_parts[codec.music_id_of_lm_id(lm_id)] for lm_id in self.row_lm_ids[:-1]]
            # (The onsets layout writes the metre after the bar line as miditok does: the type graph says it.)
            has_metres = not self.onsets and any(token.startswith("TimeSig_") for tokens in row_tokens for token in tokens)
            self.metre_after_part = torch.tensor(
                [tokens[0] == "Bar_None" and (len(tokens) == 1 or tokens[1].startswith("TimeSig_"))
                 for tokens in row_tokens] + [False]) if has_metres else None
            self.metre_after_bar = torch.tensor(
                [tokens[0].startswith("TimeSig_") for tokens in row_tokens] + [False]) if has_metres else None
            # The other parts leave metre and tempo to part 0 (the codec drops theirs).
            self.without_score_meta = torch.tensor(
                [not any(token.split("_", 1)[0] in ("TimeSig", "Tempo") for token in tokens)
                 for tokens in row_tokens] + [True])
        else:
            self.bar_start_lm_ids = {lm_id for lm_id, walk in self.walks.items() if walk.first_type == "Bar"}
        # Rows' first pitch (-1: none; the end row has none): in the canonical note order a run
        # of notes at one onset never rises.
        self.first_pitch = torch.tensor([walk.first_pitch for walk in walks] + [-1])
        self.note_lm_ids = {lm_id for lm_id in self.row_lm_ids[:-1]
                            if any(token_type(token) in STRIKE_TYPES for token in
                                   codec.music_token_parts[codec.music_id_of_lm_id(lm_id)])}

    def _opened_part(self, tokens: list[str]) -> int | None:
        """The part a row's `<Part_k>` opens (None without one): its first token, or in the onsets
        layout the one after the row's `Position` (an onset's time and first note)."""
        lead = tokens[1:2] if self.onsets and tokens and token_type(tokens[0]) in ("Position", SHIFT) else tokens[:1]
        kind, _, value = lead[0].partition("_") if lead else ("", "", "")
        return int(value) if kind == PART and value.isdigit() else None

    def _walk(self, tokens: list[str]) -> _TokenWalk:
        if not tokens:
            return _TokenWalk(False, "PAD", NO_POSITION, "PAD", False, NO_POSITION)
        # Canonical note order: within a run of notes, pitches never rise.
        first_pitch, pitch_after, run_pitch, broken = -1, None, NO_PITCH, False
        for token in tokens:
            kind, _, value = token.partition("_")
            if kind in NOTE_RUN_BREAKERS:
                run_pitch, broken, pitch_after = NO_PITCH, True, NO_PITCH
            elif kind in NOTE_TYPES and value.isdigit():
                if not broken and first_pitch == -1:
                    first_pitch = int(value)
                elif self.pitch_ordered and int(value) > run_pitch:
                    return _TokenWalk(False, "PAD", NO_POSITION, "PAD", False, NO_POSITION)
                run_pitch = pitch_after = int(value)
        types = [token_type(token) for token in tokens]
        valid = not (set(types) & SPECIAL_TYPES) and all(
            following in self.graph.get(previous, set()) for previous, following in zip(types, types[1:]))
        first_position, position, seen_reset = NO_POSITION, NO_POSITION, False
        resets, last_position, first_shift = False, NO_POSITION, NO_POSITION
        resetting = ("Bar", "Track") if self.onsets else ("Bar", "Track", PART)
        for index, (token, kind) in enumerate(zip(tokens, types)):
            value = position_value(token)
            if kind == SHIFT:  # where it lands depends on the state: only a row's first token
                first_shift = shift_value(token) if index == 0 else first_shift
                valid = valid and index == 0
            elif kind in resetting:
                seen_reset, resets, position = True, True, NO_POSITION
            elif value is not None:
                if not seen_reset and first_position == NO_POSITION:
                    first_position = value
                elif value <= position:
                    valid = False
                position, last_position, resets = value, value, False
        return _TokenWalk(valid, types[0], first_position, types[-1], resets, last_position,
                          first_pitch, pitch_after, first_shift)

    # ------------------------------------------------------------------------- state

    def start_state(self) -> tuple[str, int, int, int]:
        return (START, NO_POSITION, NO_PITCH, NO_PART)

    def advance(self, state: tuple, lm_id: int) -> tuple[str, int, int, int]:
        walk = self.walks.get(lm_id)
        if walk is None:  # the end token, or an id outside the music (caption text)
            return state
        part = state[3] if len(state) > 3 else NO_PART
        if self.parts and walk.first_type == PART:
            part = int(self.row_part[self.row_of_lm_id[lm_id]])
        elif self.onsets and walk.first_type in ("Bar", "Position", SHIFT):
            # A new onset: parts start again from the lowest (or from the part of its first note).
            part = int(self.row_part[self.row_of_lm_id[lm_id]])
        if walk.resets_position:
            position = NO_POSITION
        elif walk.last_position != NO_POSITION:
            position = walk.last_position
        elif walk.first_shift != NO_POSITION:  # from the bar's last onset (the bar line: 0)
            position = max(state[1], 0) + walk.first_shift
        else:
            position = state[1]
        pitch = state[2] if len(state) > 2 else NO_PITCH
        last_type = walk.last_type
        if self.onsets and state[0] == START and last_type == "Bar" and FIRST_BAR in self.graph:
            last_type = FIRST_BAR
        return (last_type, position, pitch if walk.pitch_after is None else walk.pitch_after, part)

    def state_after(self, lm_ids) -> tuple[str, int]:
        """The state after a prompt's music ids (caption and `<music>` are skipped)."""
        state = self.start_state()
        for lm_id in self.codec.music_part(list(lm_ids)):
            state = self.advance(state, int(lm_id))
        return state

    def row_mask(self, state: tuple) -> torch.Tensor:
        """Booleans over the music rows: which may come next. `state` is (type, position) or
        (type, position, pitch of the last note in the current run)."""
        kind, position = state[0], state[1]
        mask = self.allowed_torch[self.types.index(kind), min(position + 1, self.positions - 1)]
        if self.pitch_ordered and len(state) > 2 and state[2] != NO_PITCH:
            mask = mask & (self.first_pitch <= state[2])
        if self.parts:
            part = state[3] if len(state) > 3 else NO_PART
            mask = mask & self.part_masks[min(part + 1, len(self.part_masks) - 1)]
            if part > 0:
                mask = mask & self.without_score_meta
            if part == 0 and self.metre_after_part is not None:
                if kind == PART:
                    mask = mask & self.metre_after_part
                elif kind == "Bar":
                    mask = mask & self.metre_after_bar
        return mask


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks every token the grammar (and the corpus constraints, when given) forbids next, for
    each sequence of a batch.

    Also keeps a piece from ending before its first note: an empty score is valid, but useless.
    Keeps, per sequence, the probability mass the masks removed at the last call (`masked_mass`):
    a model whose mass must be moved a lot has not yet learned its corpus.

    Works on logits over the whole LM vocabulary (`row_logits=False`) or over the music rows
    only (`row_logits=True`, the music-only head). Call with the ids generated so far.
    `constraints` holds for every sequence, or is a list with each sequence's own (None: the
    syntax alone), for a batch whose rows have different captions.
    """

    def __init__(self, grammar: MusicGrammar, prompt_ids: list[list[int]] | None = None,
                 row_logits: bool = False,
                 constraints: CorpusConstraints | list[CorpusConstraints | None] | None = None):
        self.grammar = grammar
        self.row_logits = row_logits
        self.constraints = constraints
        self.states: list[tuple[str, int]] | None = None
        self.prompt_states = [grammar.state_after(ids) for ids in prompt_ids] if prompt_ids else None
        self.onset_states = None
        if constraints is not None and prompt_ids:
            self.onset_states = []
            fill_id = getattr(grammar.codec, "fill_id", None)
            for row, ids in enumerate(prompt_ids):
                constraints = self._constraints_of(row)
                if constraints is None:
                    self.onset_states.append(None)
                    continue
                state = constraints.start_state()
                ids = [int(lm_id) for lm_id in ids]
                if fill_id is not None and fill_id in ids:
                    # An infill: the parts around the gap have their instruments already.
                    around = constraints.start_state()
                    for lm_id in ids[:ids.index(fill_id)]:
                        around = constraints.advance(around, lm_id)
                    state.part_programs, state.parts_settled = dict(around.part_programs), set(around.parts_settled)
                    state.programs_used = set(around.programs_used)
                for lm_id in grammar.codec.music_part(ids):
                    state = constraints.advance(state, lm_id)
                self.onset_states.append(state)
        self.has_note = ([bool(set(grammar.codec.music_part(ids)) & grammar.note_lm_ids) for ids in prompt_ids]
                         if prompt_ids else None)
        self.seen = 0
        self.row_lm_ids = torch.tensor(grammar.row_lm_ids)
        self.masked_mass: torch.Tensor | None = None  # of the last call, per sequence
        # Per sequence, the notes given music will still strike at the current onset (set by a
        # task's plan before each call): the corpus's cap counts them.
        self.reserved: list[int] | None = None

    def _constraints_of(self, row: int) -> CorpusConstraints | None:
        return self.constraints[row] if isinstance(self.constraints, list) else self.constraints

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch = input_ids.shape[0]
        if self.states is None:
            self.states = list(self.prompt_states or [self.grammar.start_state()] * batch)
            self.has_note = list(self.has_note or [False] * batch)
            if self.constraints is not None and self.onset_states is None:
                rows = [self._constraints_of(row) for row in range(batch)]
                self.onset_states = [None if constraints is None else constraints.start_state() for constraints in rows]
            self.seen = input_ids.shape[1]
        for new_position in range(self.seen, input_ids.shape[1]):
            for row, lm_id in enumerate(input_ids[:, new_position].tolist()):
                self.states[row] = self.grammar.advance(self.states[row], lm_id)
                self.has_note[row] = self.has_note[row] or lm_id in self.grammar.note_lm_ids
                if self.constraints is not None and self.onset_states[row] is not None:
                    self.onset_states[row] = self._constraints_of(row).advance(self.onset_states[row], lm_id)
        if self.reserved is not None and self.constraints is not None:
            for row, notes in enumerate(self.reserved):
                if self.onset_states[row] is not None:
                    self.onset_states[row].reserved = notes
        self.seen = input_ids.shape[1]
        masks = torch.stack([self.grammar.row_mask(state) for state in self.states])
        self.syntax = masks  # what the syntax alone allows now, per sequence (a task's plan reads it)
        masks[:, self.grammar.end_row] &= torch.tensor(self.has_note)
        if self.constraints is not None:
            for row, state in enumerate(self.onset_states):
                constraints = self._constraints_of(row)
                if constraints is None:
                    continue
                # A dead end (every continuation breaks a constraint: say the first bar's last
                # onset is full and a part has yet to play) lets a part leave its role's notes
                # per beat, then the parts enter later, then the
                # piece end where the syntax lets it, keeping the instruments and every corpus
                # limit; then each part's range and instrument, then its instrument alone, hold;
                # failing all, it falls back to the syntax.
                for relax in CorpusConstraints.WAYS_OUT:
                    constrained = masks[row] & constraints.row_mask(state, relax)
                    if constrained.any():
                        masks[row] = constrained
                        break
        if self.row_logits:
            full = masks.to(scores.device)
        else:
            full = torch.zeros_like(scores, dtype=torch.bool)
            full[:, self.row_lm_ids.to(scores.device)] = masks.to(scores.device)
        probabilities = torch.softmax(scores.float(), dim=-1)
        self.masked_mass = probabilities.masked_fill(full, 0.0).sum(dim=-1).cpu()
        scores = scores.masked_fill(~full, float("-inf"))
        biases = [None if state is None else self._constraints_of(row).row_bias_for(state)
                  for row, state in enumerate(self.onset_states)] if self.constraints is not None else []
        bias = None
        if any(row_bias is not None for row_bias in biases):  # the key- and density-aware biases: less likely, never impossible
            zeros = torch.zeros(len(self.grammar.row_lm_ids))
            bias = torch.stack([zeros if row_bias is None else row_bias for row_bias in biases])
            bias = bias.to(scores.device, scores.dtype)
            if self.row_logits:
                scores = scores + bias
            else:
                scores = scores.clone()
                scores[:, self.row_lm_ids.to(scores.device)] += bias
        return scores


# ----------------------------------------------------------------------------- corpus constraints

TIME_RESET_TYPES = frozenset({"Bar", "Position", SHIFT, "TimeShift", "Track", PART})


@dataclass
class _OnsetState:
    """What the corpus constraints track for one sequence beyond the syntax state."""

    bar_positions: int                      # Position values allowed in the current bar
    program: int | None = 0                 # the program in effect: miditok decodes notes before
                                            # any Program token as program 0
    notes: int = 0                          # notes struck at the current onset
    pairs: Counter = None                   # (program, pitch) -> strikes at the current onset
    programs_used: set = None
    bar_start: float | None = None          # in quarter notes; None before the first bar line
    bar_quarters: float = 4.0               # length of the current bar
    position_quarters: float = 0.125        # length of one Position step in the current metre
    onset_time: float = 0.0                 # time of the current Position
    last_onset: float = 0.0                 # time of the last note struck
    bars: int = 0                           # bar lines written
    tempo_here: bool = False                # a Tempo token at the current onset already
    signature_here: bool = False            # a TimeSig token in the current bar already
    part: int = NO_PART                     # parts: the part being written
    part_programs: dict = None              # parts: part -> its program
    bar_onsets: Counter = None              # parts: time -> notes struck there, all parts of this bar
    bar_pairs: dict = None                  # parts: time -> (program, pitch) -> strikes, all parts
    parts_settled: set = None               # parts: parts whose program is set (a Program or a note)
    voices: Voices = None                   # strict voice leading: what each part's voice sounds
    parts_played: set = None                # parts: parts that struck a note
    onset_parts: set = None                 # onsets layout: parts opened at the current onset
    notes_struck: int = 0                   # notes struck so far, all parts (the density-aware bias)
    reserved: int = 0                       # notes given music will still strike at this onset (an
                                            # accompaniment's given parts after the written ones)
    part_notes: Counter = None              # part -> notes it struck (the parts' density limits)
    first_onset: float | None = None        # time of the first note, where a piece's beats count from
    pitch_runs: dict = None                 # onsets layout: part -> (its last pitch, the time it began
                                            # sounding it without a change since, where the run ends:
                                            # None while its last note is held (or its length is still
                                            # to come), where its earlier notes end)

    def __post_init__(self):
        self.pairs = Counter() if self.pairs is None else self.pairs
        self.programs_used = set() if self.programs_used is None else self.programs_used
        self.part_programs = {} if self.part_programs is None else self.part_programs
        self.bar_onsets = Counter() if self.bar_onsets is None else self.bar_onsets
        self.bar_pairs = {} if self.bar_pairs is None else self.bar_pairs
        self.parts_settled = set() if self.parts_settled is None else self.parts_settled
        self.voices = Voices() if self.voices is None else self.voices
        self.parts_played = set() if self.parts_played is None else self.parts_played
        self.onset_parts = set() if self.onset_parts is None else self.onset_parts
        self.part_notes = Counter() if self.part_notes is None else self.part_notes
        self.pitch_runs = {} if self.pitch_runs is None else self.pitch_runs


def _before_time(tokens: list[str], kind: str, stops: tuple[str, ...] = tuple(TIME_RESET_TYPES)) -> bool:
    """Whether a token of `kind` comes before any of the `stops` token types in this row."""
    for token in tokens:
        current = token_type(token)
        if current in stops:
            return False
        if current == kind:
            return True
    return False


def _note_program_and_pitch(token: str) -> tuple[str, int] | None:
    kind, _, value = token.partition("_")
    if kind in STRIKE_TYPES and value.lstrip("-").isdigit():
        return kind, int(value)
    return None


def _length_beats(value: str) -> float:
    """A Duration token's value ("beats.positions.resolution", miditok's) in the metre's beats."""
    whole, part, resolution = value.split(".")
    return int(whole) + int(part) / int(resolution)


def _note_length_beats(tokens: list[str]) -> float:
    """The longest note length a row writes, in the metre's beats; -1: none (no Duration token)."""
    return max((_length_beats(token.split("_", 1)[1]) for token in tokens if token.startswith("Duration_")),
               default=-1.0)


def _top_pitch(tokens: list[str]) -> int:
    """The first (with pitch-descending onsets: the highest) pitched note of a row; -1: none."""
    for token in tokens:
        note = _note_program_and_pitch(token)
        if note is not None and note[0] in ("Pitch", "NoteOn"):
            return note[1]
    return -1


# The pitch classes of a key's scale, from its tonic: major; minor is natural minor with the
# raised seventh of harmonic minor (a minor piece's leading note is in key).
SCALE_STEPS = {False: (0, 2, 4, 5, 7, 9, 11), True: (0, 2, 3, 5, 7, 8, 10, 11)}


def scale_pitch_classes(key: str) -> frozenset[int]:
    """The pitch classes in the scale of a key named as a caption names it ("D minor")."""
    from midillm.tokenization.caption import key_tonic

    tonic, minor = key_tonic(key)
    return frozenset((tonic + step) % 12 for step in SCALE_STEPS[minor])


def density_target(edges: list[float], density: str) -> float | None:
    """The notes per beat per part a piece asked to be `density` steers toward: the middle of its
    bin among the corpus's thirds (`profile.density_edges`); an outer bin's target lies as far
    past its edge as the middle bin is wide (sparse: at most halfway to none). The steering
    counts up to the last onset, the measure to the end of the last chord, which a dense piece
    must make up for: with targets half a bin out, 8 of 8 sparse and medium requests were met
    and 0 of 4 dense ones (docs/control.md). None without edges."""
    from midillm.tokenization.caption import DENSITY_BINS

    if len(edges) != 2:
        return None
    low, high = edges
    width = high - low
    return {DENSITY_BINS[0]: max(low - width, low / 2), DENSITY_BINS[1]: low + width / 2,
            DENSITY_BINS[2]: high + width}[density]


# The key-aware bias (`key_bias_rows`) raises the notes a key dwells on: its tonic triad, and a
# minor key's leading note (G sharp in A minor: the note a minor cadence needs and its relative
# major lacks). A key and its relative share their notes (with the common key every minor piece
# is written in A minor, every major one in C major), so which notes the music dwells on is what
# tells them apart. Where the codec moves music to a common key the tonic is exact by
# construction and that is all the bias does: lowering the notes outside the scale as well kept
# the key no better (94% exact without, 98-100% with) and took the chromatic notes with it, 0%
# of the notes against 5% in the corpus's own openings, 7.8 pitch classes in 8 bars against 9.1
# (docs/control.md, "The key-aware bias without the out-of-scale half"). A codec without the
# common key has its tonic to find as well: there each note outside the scale lowers a row's
# logit by this many times the strength.
KEY_OUT_OF_SCALE_SHARE = 3.0


def key_bias_rows(row_tokens: list[list[str]], key: str, strength: float,
                  out_of_scale_share: float = 0.0) -> torch.Tensor:
    """The key-aware bias over the rows (the end row last, unbiased), summed over the pitched
    notes a row strikes (drum notes are no pitches): +strength for a note of `key`'s tonic triad
    or a minor key's leading note, -strength * out_of_scale_share for a note outside its scale."""
    from midillm.tokenization.caption import key_tonic

    scale = scale_pitch_classes(key)
    tonic, minor = key_tonic(key)
    dwelt_on = {tonic % 12, (tonic + (3 if minor else 4)) % 12, (tonic + 7) % 12}
    if minor:
        dwelt_on.add((tonic + 11) % 12)
    weight = [-strength * out_of_scale_share if pitch_class not in scale else strength if pitch_class in dwelt_on
              else 0.0 for pitch_class in range(12)]
    biases = [sum(weight[note[1] % 12] for token in tokens
                  if (note := _note_program_and_pitch(token)) is not None and note[0] in ("Pitch", "NoteOn"))
              for tokens in row_tokens]
    return torch.tensor(biases + [0.0], dtype=torch.float)


class CorpusConstraints:
    """What the corpus allows, on top of the syntax: a sample stays inside its corpus's range.

    Each constraint can be switched off: `max_notes_per_onset` (None: no cap), `no_repeats`
    (the same program and pitch twice at one onset), `programs` (None: any), `max_programs`
    (None: any number per piece), `pitch_ranges` (a program's pitches stay in the corpus's range),
    `bar_length` (Position stays inside the current bar's metre), `time_signatures` (only the
    corpus's), `max_gap` (beats without a new onset; -1: the corpus's longest, None: any),
    `min_bars` (no ending before; -1: the corpus's shortest piece, None: any length), `max_parts`
    (parts: how many; -1: the corpus's most, None: any; with `part_numbers`, the first that many of
    those parts), `part_density` (in the onsets layout,
    each asked part strikes as many notes per beat as the corpus's parts of its role:
    `part_floors`, `part_ceilings`). Masks are vectors over the grammar's rows, built once per
    distinct situation.

    A request's controls add to these: `metre` (the only metre a row may write), `bars` (the
    piece has exactly that many), `parts` (exactly that many parts play), `part_programs` (each
    part on its asked instrument), and `key` with `key_bias` (`row_bias`: each note of the key's tonic
    triad a row strikes raises its logit by `key_bias`, `key_bias_rows`; a bias rather than a
    mask, which `GrammarLogitsProcessor` adds).

    `corpus_limits=False` keeps what the request asks (its metre, bars, parts, instruments and
    the programs given) and drops every limit read from the corpus: the model alone, on the
    request.

    With parts, an onset's notes are counted over all parts of the bar, a duplicate is the same
    pitch twice at one onset of one part, and only part 0 writes the metre and tempo.
    """

    def __init__(self, grammar: MusicGrammar, profile, programs: list[int] | None = None,
                 max_notes_per_onset: int | None = -1, no_repeats: bool = True, max_programs: int | None = -1,
                 pitch_ranges: bool = True, bar_length: bool = True, time_signatures: bool = True,
                 max_gap: float | None = -1, min_bars: int | None = -1, max_parts: int | None = -1,
                 part_names: list[str] | None = None, strict_voice_leading: bool = False,
                 metre: str | None = None, bars: int | None = None, parts: int | None = None,
                 key: str | None = None, key_bias: float | None = None, part_programs: list[int | None] | None = None,
                 density: str | None = None, density_bias: float | None = None, corpus_limits: bool = True,
                 part_density: bool = True, registers: list[tuple[int, int] | None] | None = None,
                 part_numbers: list[int] | None = None):
        self.grammar = grammar
        # The `<Part_k>` number of each asked part, in caption order (`MusicCodec.part_numbers`):
        # `part_names`, `part_programs`, `registers` and `parts` count parts in that order.
        self.part_numbers = list(part_numbers) if part_numbers is not None else None
        if not corpus_limits:  # what was asked holds; nothing the corpus alone would refuse
            max_notes_per_onset, no_repeats, max_programs, pitch_ranges = None, False, None, False
            bar_length, time_signatures, max_gap, strict_voice_leading = False, False, None, False
            min_bars, max_parts = (None if min_bars == -1 else min_bars), (None if max_parts == -1 else max_parts)
        codec = grammar.codec
        # Each music row's base tokens, in the grammar's row order (the end row, last, has none).
        self.row_tokens = [codec.music_token_parts[codec.music_id_of_lm_id(lm_id)] for lm_id in grammar.row_lm_ids[:-1]]
        self._read_layout(grammar)
        self._read_limits(profile, programs, max_notes_per_onset, no_repeats, max_programs, pitch_ranges, bar_length,
                          max_gap, min_bars, max_parts, part_names)
        if not corpus_limits and not programs:  # any instrument, unless the parts ask theirs (below)
            self.allowed_programs = None
        self._mark_row_kinds()
        # An asked metre is the only one a row may write (the prompt opens the piece in it).
        metres = {metre} if metre else set(profile.time_signatures) if time_signatures and profile.time_signatures \
            else None
        self._scan_rows(metres)
        self._count_notes_at_positions()
        self._mark_note_rows()
        self._set_up_voice_leading(strict_voice_leading, part_names)
        # An asked length: no bar after the last, no ending before it.
        self.exact_bars = bars
        if bars:
            self.min_bars = bars
        # An asked number of parts: no more (max_parts), and no ending before each has played.
        self.exact_parts = parts if self.with_parts else None
        if self.exact_parts:
            self.max_parts = parts
        # Which parts must play, and which a row may open: the first `exact_parts` / `max_parts`
        # numbers; for a codec numbering parts by role that was given none (its numbers are
        # roles, not a count), any.
        numbered = self.part_numbers is not None or getattr(codec, "part_numbering", "order") == "order"
        self.asked_parts = {self._number(index) for index in range(self.exact_parts or 0)} if numbered else set()
        self.opens_allowed_part = None
        if self.with_parts and self.max_parts is not None and numbered:
            allowed = torch.tensor(sorted({self._number(index) for index in range(self.max_parts)}))
            self.opens_allowed_part = (self.opens_part < 0) | torch.isin(self.opens_part, allowed)
        self.row_bias = key_bias_rows(self.row_tokens, key, key_bias,
                                      0.0 if codec.common_key else KEY_OUT_OF_SCALE_SHARE) if key and key_bias else None
        # An asked density with its bias: the notes per beat per part to steer toward.
        self.density_bias = density_bias or None
        self.density_target = density_target(profile.density_edges, density) if density and density_bias else None
        if self.density_bias and self.density_target is None:
            raise ValueError("the density-aware bias needs the corpus's density edges (prepared since 2026-12-05)")
        # The error counts in widths of the middle bin: a corpus's thirds can lie close together
        # (the chorales': 1.03 and 1.16 notes per beat per part), and a piece one bin off is off
        # by all of the bias, not by a tenth of it.
        if self.density_target is not None:
            low, high = profile.density_edges
            self.density_scale = high - low if high > low else self.density_target
        # Each part's asked instrument: a part names it (a Program token) before its first note,
        # so a drum part is written on drums and no part falls back to program 0.
        # (None: a part whose instrument is not asked, an accompaniment's given part.)
        self.part_programs = {self._number(index): program for index, program in enumerate(part_programs or [])
                              if program is not None} if self.with_parts else {}
        if self.part_programs:
            self.allowed_programs = set(self.part_programs.values()) | (
                set(programs) if programs and None in (part_programs or []) else set())
            self.static = self.static & self._foreign_program_free(self.allowed_programs)
        # Each part's asked register (`request.resolve_registers`): a request, so no dead end
        # gives it way and constraints off keep it.
        self.registers = {self._number(index): bounds for index, bounds in enumerate(registers or [])
                          if bounds is not None} if self.with_parts else {}
        self.part_floors, self.part_ceilings = self._part_density_limits(profile) \
            if part_density and corpus_limits and self.onsets else ({}, {})
        # No asked part's voice stays on one pitch longer than the corpus's parts do (the limit
        # the sanity check's `stuck_part` judges by), with `SAME_PITCH_SPARE` beats to spare. As
        # with the densities, a new piece's asked parts only: given music holds what it holds (an
        # accompaniment's given parts, None in `part_programs`, hold their notes as given).
        longest = getattr(profile, "max_same_pitch_beats", 0.0) or 0.0
        self.same_pitch_limit = longest - self.SAME_PITCH_SPARE if corpus_limits and self.onsets and \
            self.part_programs and None not in (part_programs or []) and longest > 2 * self.SAME_PITCH_SPARE \
            else None
        # Masks built on first use, once per distinct situation.
        self._part_range_masks: dict[tuple[int, int], torch.Tensor] = {}
        self._program_masks: dict[tuple[int | None, bool], torch.Tensor] = {}
        self._position_masks: dict[int, torch.Tensor] = {}
        self._new_program_masks: dict[frozenset, torch.Tensor] = {}
        self._named_program_masks: dict[int, torch.Tensor] = {}
        self._moves_time: torch.Tensor | None = None

    def _number(self, index: int) -> int:
        """The `<Part_k>` number of the asked part at `index` in caption order."""
        return self.part_numbers[index] if self.part_numbers is not None and index < len(self.part_numbers) else index

    def _read_layout(self, grammar: MusicGrammar) -> None:
        """How the codec writes time and parts, which decides how onsets are counted."""
        self.with_parts = grammar.parts
        # The bars layout revisits each bar's onsets part by part; the onsets layout never goes back.
        self.onsets = grammar.onsets
        self.part_bars = grammar.parts and not grammar.onsets
        self.time_resets = TIME_RESET_TYPES - {PART} if self.onsets else TIME_RESET_TYPES
        self.positions_per_beat = grammar.codec.music_tokenizer.config.max_num_pos_per_beat
        self.has_drum_tokens = any(kind in ("PitchDrum", "DrumOn") for kind in grammar.graph)
        self.opens_part = grammar.row_part if self.with_parts else None
        self.opened_parts = set(self.opens_part.tolist()) - {NO_PART} if self.with_parts else set()

    def _read_limits(self, profile, programs, max_notes_per_onset, no_repeats, max_programs, pitch_ranges,
                     bar_length, max_gap, min_bars, max_parts, part_names) -> None:
        """Each constraint's limit: the one asked for, the corpus's (-1), or none (None)."""
        # Parts named like the corpus's (a chorale's Bass) keep to the range the corpus gives them.
        known = getattr(profile, "part_ranges", None) or {}
        self.part_ranges = {self._number(index): tuple(known[name]) for index, name in enumerate(part_names or [])
                            if name in known} if pitch_ranges else {}
        self.max_parts = (getattr(profile, "max_parts", 0) or None) if max_parts == -1 else max_parts
        self.cap = profile.max_notes_per_onset if max_notes_per_onset == -1 else max_notes_per_onset
        self.max_programs = profile.max_programs_per_piece if max_programs == -1 else max_programs
        self.no_repeats = no_repeats
        # Voices in unison on one program are music (chorales: 5% of notes); more is a stuck key.
        self.unison = max(1, getattr(profile, "max_unison", 1))
        self.bar_length = bar_length
        # Notes before any Program token decode as program 0: it counts as used once one plays.
        self.allowed_programs = set(programs) if programs else set(profile.programs) or None
        # Each program keeps to its General MIDI family's range in the corpus, the range the sanity
        # check judges by (`CorpusProfile.pitch_range`).
        self.pitch_ranges = {program: bounds for program in range(DRUMS, 128)
                             if (bounds := profile.pitch_range(program))} if pitch_ranges else {}
        # Time never stands still longer than the corpus's longest gap between onsets, where the
        # tokens say where an onset falls: bars and positions, or bars and shifts from the last onset
        # (until 2026-12-06 only the former, so a sample in shifts could stall: 7.5 beats, the limit 5).
        self.max_gap = profile.max_gap_beats if (max_gap == -1 and (
            "Position" in self.grammar.graph or SHIFT in self.grammar.graph)) else (None if max_gap == -1 else max_gap)
        # A piece ends once it is as long as the corpus's shortest piece.
        self.min_bars = (profile.bars[0] if profile.bars else 0) if min_bars == -1 else (min_bars or 0)

    def _part_density_limits(self, profile) -> tuple[dict[int, float], dict[int, float]]:
        """Each asked part's fewest and most notes per beat (part -> limit): the corpus's range
        for its role (`role_notes_per_beat`, the measure the sanity check judges by). A part's
        role depends on its notes (a low single line is a Bass, a high one a Lead), so the limits
        are the narrowest that every role its instrument may turn out to play allows. A range too
        narrow to keep with `DENSITY_MARGIN` to spare (a role only one piece had) is left to the
        model."""
        ranges = getattr(profile, "role_notes_per_beat", None) or {}
        floors, ceilings = {}, {}
        for part, program in self.part_programs.items():
            known = [ranges[role] for role in possible_roles(program) if role in ranges]
            if not known:
                continue
            floor, ceiling = max(low for low, _ in known), min(high for _, high in known)
            if floor * self.DENSITY_MARGIN ** 2 < ceiling:
                floors[part], ceilings[part] = floor, ceiling
        return floors, ceilings

    def _mark_row_kinds(self) -> None:
        """Per row: whether it opens a bar, names a program, writes drums, a tempo or metre first."""
        rows = self.row_tokens
        # The rows that open a new bar: a bar line, or with parts `<Part_0>`.
        self.starts_with_bar = torch.tensor(
            [bool(tokens) and (tokens[0] == f"{PART}_0" if self.part_bars else token_type(tokens[0]) == "Bar")
             for tokens in rows] + [False])
        self.has_program = torch.tensor(
            [any(token_type(token) == "Program" for token in tokens) for tokens in rows] + [False])
        # A drum note or the drum kit named: what a part asked a register (a pitched part) never writes.
        self.writes_drums = torch.tensor([any(token_type(token) in ("PitchDrum", "DrumOn") or token == f"Program_{DRUMS}"
                                              for token in tokens) for tokens in rows] + [False])
        # Meta tokens never pile up: one tempo per onset, one metre per bar (before any time token
        # of the row, where they land on the current onset / bar).
        self.tempo_before_time = torch.tensor([_before_time(tokens, "Tempo") for tokens in rows] + [False])
        self.signature_before_bar = torch.tensor(
            [_before_time(tokens, "TimeSig", stops=("Bar",)) for tokens in rows] + [False])

    def _scan_rows(self, signatures: set[str] | None) -> None:
        """Walk each row's tokens once: `static` (rows never allowed: a foreign program or metre,
        an onset inside the row over the cap or striking a note twice), the notes a row adds to
        the current onset before its first time token (and by which program and pitch), the
        positions it moves to, and the programs it names."""
        rows = self.row_tokens
        count = len(self.grammar.row_lm_ids)
        static = torch.ones(count, dtype=torch.bool)
        self.pre_notes = torch.zeros(count, dtype=torch.long)   # notes added to the current onset
        self.ends_needing_note = torch.zeros(count, dtype=torch.bool)
        self.first_position = torch.full((count,), NO_POSITION, dtype=torch.long)
        self.last_position = torch.full((count,), NO_POSITION, dtype=torch.long)  # before any bar line
        self.row_shift = torch.full((count,), NO_POSITION, dtype=torch.long)  # a leading Shift's steps
        self.pre_pitches_current: dict[tuple[str, int], list[int]] = {}  # under the program in effect
        self.pre_pairs_explicit: dict[tuple[int, int], list[int]] = {}
        program_index = {program: index for index, program in enumerate(sorted(
            {int(token.split("_")[1]) for row in rows for token in row if token.startswith("Program_")}))}
        self.program_columns = program_index
        self.row_programs = torch.zeros((count, max(len(program_index), 1)), dtype=torch.bool)
        for row, tokens in enumerate(rows):
            seen_time, onset_notes, onset_pairs, program = False, 0, Counter(), None
            seen_bar = False
            for token in tokens:
                kind, _, value = token.partition("_")
                if kind == "Program":
                    program = int(value)
                    self.row_programs[row, program_index[program]] = True
                    if self.allowed_programs is not None and program not in self.allowed_programs:
                        static[row] = False
                elif kind == "TimeSig" and signatures is not None and value not in signatures:
                    static[row] = False
                elif kind in self.time_resets:
                    if not seen_time and kind == "Position":
                        self.first_position[row] = int(value)
                    if not seen_time and kind == SHIFT:
                        self.row_shift[row] = int(value)
                    if kind in ("Bar", PART, "Track"):
                        seen_bar = True
                    elif kind == "Position" and not seen_bar:  # a merge may hold several Positions
                        self.last_position[row] = max(int(self.last_position[row]), int(value))
                    seen_time, onset_notes, onset_pairs = True, 0, Counter()
                else:
                    note = _note_program_and_pitch(token)
                    if note is None:
                        continue
                    onset_notes += 1
                    pair = (program, note[1])
                    if self.no_repeats and onset_pairs[pair] >= self.unison:
                        static[row] = False
                    onset_pairs[pair] += 1
                    if self.cap is not None and onset_notes > self.cap:
                        static[row] = False
                    if not seen_time:
                        self.pre_notes[row] += 1
                        if program is None:
                            self.pre_pitches_current.setdefault(note, []).append(row)
                        else:
                            self.pre_pairs_explicit.setdefault((program, note[1]), []).append(row)
            # A program change (or in the onsets layout a part token) with no time token after it
            # promises a note at this same onset.
            self.ends_needing_note[row] = bool(tokens) and not seen_time and (
                token_type(tokens[-1]) == "Program" or (self.onsets and token_type(tokens[-1]) == PART))
        self.static = static
        self.note_demand = self.pre_notes + self.ends_needing_note.long()

    def _count_notes_at_positions(self) -> None:
        """Bars layout: a Position can go back to an onset other parts filled; what a row strikes
        at each Position it names (rows x positions) is checked against what is there already."""
        self.notes_at_position = None
        if not self.part_bars:
            return
        rows = self.row_tokens
        positions = max([int(token.split("_")[1]) for tokens in rows for token in tokens
                         if token.startswith("Position_")] + [0]) + 1
        self.notes_at_position = torch.zeros((len(self.grammar.row_lm_ids), positions), dtype=torch.long)
        for row, tokens in enumerate(rows):
            position, struck = None, False
            for token in tokens:
                kind, _, value = token.partition("_")
                if kind == "Position":
                    position, struck = int(value), False
                elif kind in TIME_RESET_TYPES:
                    position = None
                elif position is not None and _note_program_and_pitch(token) is not None:
                    self.notes_at_position[row, position] += 1
                    struck = True
            if position is not None and not struck:  # a Position promises a note there
                self.notes_at_position[row, position] += 1
        self.rows_with_positions = self.notes_at_position.any(dim=1)

    def _mark_note_rows(self) -> None:
        """Per row, what strict voice leading and the same-pitch limit read: its top pitched note
        (-1: none), whether it moves time to a new onset, its notes' length (-1: none written)."""
        self.row_top_pitch = torch.tensor([_top_pitch(tokens) for tokens in self.row_tokens] + [-1])
        self.moves_time = (self.first_position != NO_POSITION) | (self.row_shift != NO_POSITION) | self.starts_with_bar
        self.row_note_length = torch.tensor([_note_length_beats(tokens) for tokens in self.row_tokens] + [-1.0])

    def _set_up_voice_leading(self, strict: bool, part_names: list[str] | None) -> None:
        """Strict voice leading (`midillm.decoding.voice_leading`): the onsets layout only, where
        time never goes back and each onset's parts come from the top voice down."""
        self.strict_voice_leading = strict and self.onsets
        if not self.strict_voice_leading:
            return
        parts = len(part_names) if part_names else self.max_parts
        self.lowest_part = max(self._number(index) for index in range(parts)) if parts else None

    # ------------------------------------------------------------------------- state

    def _set_metre(self, state: _OnsetState, signature: str) -> None:
        numerator, denominator = (int(part) for part in signature.split("/"))
        state.bar_positions = numerator * self.positions_per_beat
        state.bar_quarters = bar_length(numerator, denominator)
        state.position_quarters = 4 / denominator / self.positions_per_beat

    def start_state(self) -> _OnsetState:
        state = _OnsetState(bar_positions=0)
        self._set_metre(state, "4/4")
        return state

    def advance(self, state: _OnsetState, lm_id: int) -> _OnsetState:
        row = self.grammar.row_of_lm_id.get(lm_id)
        if row is None or row >= len(self.row_tokens):
            return state
        for token in self.row_tokens[row]:
            kind, _, value = token.partition("_")
            if self.onsets and kind == PART:  # the notes after it are this part's, at this same onset
                state.part = int(value)
                state.onset_parts.add(state.part)
                state.program = state.part_programs.get(state.part, 0)
                continue
            if self.part_bars and kind == PART:
                self._enter_part(state, int(value))
                continue
            if self.part_bars and kind == "Bar":
                continue  # a part's own bar line: the part token already placed it
            if kind == "Program":
                state.program = int(value)
                state.programs_used.add(state.program)
                state.part_programs[state.part] = state.program
                state.parts_settled.add(state.part)
            elif kind == "TimeSig":
                self._set_metre(state, value)
                state.signature_here = True
            elif kind == "Tempo":
                state.tempo_here = True
            elif kind in TIME_RESET_TYPES:
                time = state.onset_time
                if kind == "Bar":
                    state.bars += 1
                    state.signature_here = False
                    state.bar_start = 0.0 if state.bar_start is None else state.bar_start + state.bar_quarters
                    time = state.bar_start
                elif kind == "Position" and value.isdigit() and state.bar_start is not None:
                    time = state.bar_start + int(value) * state.position_quarters
                elif kind == SHIFT and value.isdigit() and state.bar_start is not None:
                    # (a bar line leaves `onset_time` at the bar's start, where its shifts count from)
                    time = state.onset_time + int(value) * state.position_quarters
                else:
                    time = None  # a time shift or track start: a new onset, wherever it falls
                # Only a new time is a new onset: a bar line and its Position_0 are one onset.
                if time is None or time != state.onset_time:
                    state.notes, state.pairs, state.tempo_here = 0, Counter(), False
                    state.onset_parts = set()
                    state.voices.new_onset()
                if time is not None:
                    state.onset_time = time
                if self.part_bars:  # other parts' notes at this time count too
                    state.notes = state.bar_onsets[state.onset_time]
                    state.pairs = state.bar_pairs.setdefault(state.onset_time, Counter())
            else:
                note = _note_program_and_pitch(token)
                if note is not None:
                    state.notes += 1
                    state.notes_struck += 1
                    state.part_notes[state.part] += 1
                    if state.first_onset is None:
                        state.first_onset = state.onset_time
                    state.bar_onsets[state.onset_time] += 1
                    state.parts_settled.add(state.part)
                    state.parts_played.add(state.part)
                    state.pairs[(state.program, note[1])] += 1
                    state.programs_used.add(state.program)
                    if note[0] in ("Pitch", "NoteOn"):
                        state.voices.strike(state.part, note[1])
                        # A run goes on while the part strikes (or holds) its pitch; the notes of one
                        # onset come highest first, so the lowest is the part's last.
                        run = state.pitch_runs.get(state.part)
                        if run is None or run[0] != note[1]:
                            state.pitch_runs[state.part] = (note[1], state.onset_time, None, None)
                        else:  # a held note before it ends here, at the part's next onset
                            earlier = state.onset_time if run[2] is None else run[2]
                            state.pitch_runs[state.part] = (note[1], run[1], None, earlier)
                    # Parts revisit earlier times of the bar: the latest onset is what time has reached.
                    state.last_onset = max(state.last_onset, state.onset_time) if self.part_bars else state.onset_time
                elif self.onsets and kind == "Duration" and state.part in state.pitch_runs:
                    # The length of the part's last note (a note without one is held).
                    pitch, start, _, earlier = state.pitch_runs[state.part]
                    end = state.onset_time + _length_beats(value) * state.position_quarters * self.positions_per_beat
                    state.pitch_runs[state.part] = (pitch, start, max(end, earlier or end), earlier)
        return state

    def _enter_part(self, state: _OnsetState, part: int) -> None:
        """`<Part_k>`: part 0 opens a new bar; any other goes back to the bar's start."""
        if part == 0 or state.bar_start is None:
            state.bars += 1
            state.signature_here = False
            state.bar_start = 0.0 if state.bar_start is None else state.bar_start + state.bar_quarters
            state.bar_onsets, state.bar_pairs = Counter(), {}
        state.part = part
        state.program = state.part_programs.get(part, 0)
        state.onset_time = state.bar_start
        state.tempo_here = False
        state.notes = state.bar_onsets[state.onset_time]
        state.pairs = state.bar_pairs.setdefault(state.onset_time, Counter())

    # ------------------------------------------------------------------------- masks

    def _program_mask(self, program: int | None, ranges: bool = True) -> torch.Tensor:
        """Rows whose notes, under `program` in effect, fit the program (drum notes on drums
        only, an allowed program, and with `ranges` pitches in the corpus's range)."""
        if (program, ranges) not in self._program_masks:
            mask = torch.ones(len(self.grammar.row_lm_ids), dtype=torch.bool)
            for row, tokens in enumerate(self.row_tokens):
                current = program
                for token in tokens:
                    kind, _, value = token.partition("_")
                    if kind == "Program":
                        current = int(value)
                        continue
                    note = _note_program_and_pitch(token)
                    if note is None or current is None:
                        continue
                    if self.allowed_programs is not None and current not in self.allowed_programs:
                        mask[row] = False
                    is_drum_note = note[0] in ("PitchDrum", "DrumOn")
                    if self.has_drum_tokens and is_drum_note != (current == -1):
                        mask[row] = False
                    bounds = self.pitch_ranges.get(current) if ranges else None
                    if bounds and not bounds[0] <= note[1] <= bounds[1]:
                        mask[row] = False
            self._program_masks[(program, ranges)] = mask
        return self._program_masks[(program, ranges)]

    def _foreign_program_free(self, programs: set[int]) -> torch.Tensor:
        """Rows that name no program outside `programs`."""
        foreign = [column for program, column in self.program_columns.items() if program not in programs]
        return ~self.row_programs[:, foreign].any(dim=1) if foreign else torch.ones(
            len(self.grammar.row_lm_ids), dtype=torch.bool)

    def _names_program_first(self, program: int) -> torch.Tensor:
        """Rows that strike no note before naming `program`, and name no other: what a part may
        write before it has its instrument (a note before any Program token plays program 0)."""
        if program not in self._named_program_masks:
            mask = torch.ones(len(self.grammar.row_lm_ids), dtype=torch.bool)
            for row, tokens in enumerate(self.row_tokens):
                named = None
                for token in tokens:
                    kind, _, value = token.partition("_")
                    if kind == "Program":
                        named = int(value)
                        if named != program:
                            mask[row] = False
                    elif named is None and _note_program_and_pitch(token) is not None:
                        mask[row] = False
            self._named_program_masks[program] = mask
        return self._named_program_masks[program]

    def _unsettled_part_mask(self, state: _OnsetState, part: int) -> torch.Tensor | None:
        """For a part with an asked instrument that has not named it yet: the rows that name it
        first (None: no such part)."""
        if part in state.parts_settled or part not in self.part_programs:
            return None
        return self._names_program_first(self.part_programs[part])

    def _instruments_mask(self, state: _OnsetState, ranges: bool) -> torch.Tensor:
        """The last ways out of a dead end (say strict voice leading leaves a bass no pitch in its
        range): each part keeps its instrument, drum notes stay on drum parts and, with `ranges`,
        pitches in the part's range; crowding, gaps and voice leading give way."""
        mask = self._onset_part_mask(state, ranges) if self.onsets else self._program_mask(state.program, ranges)
        mask = mask.clone()
        mask[self.grammar.end_row] = True
        return mask

    def _late_entry_rows(self, state: _OnsetState, missing: set[int]) -> torch.Tensor:
        """While asked parts have yet to play: in the onsets layout, every new onset opens with
        one of them (a row that opens another part as an onset's first is refused); in the bars
        layout, no bar after the first opens before they have played in it."""
        if not self.onsets:
            return self.starts_with_bar if state.bars >= 1 else torch.zeros_like(self.starts_with_bar)
        if self._moves_time is None:
            self._moves_time = (self.first_position != NO_POSITION) | (self.row_shift != NO_POSITION) | \
                self.starts_with_bar
        opens_other = (self.opens_part >= 0) & ~torch.isin(self.opens_part, torch.tensor(sorted(missing)))
        return opens_other & (self._moves_time | (not state.onset_parts))

    def _range_mask(self, bounds: tuple[int, int]) -> torch.Tensor:
        """Rows whose pitched notes all lie within `bounds` (drum notes are not pitches)."""
        if bounds not in self._part_range_masks:
            mask = torch.ones(len(self.grammar.row_lm_ids), dtype=torch.bool)
            for row, tokens in enumerate(self.row_tokens):
                for token in tokens:
                    kind, _, value = token.partition("_")
                    if kind in ("Pitch", "NoteOn") and value.isdigit() and not bounds[0] <= int(value) <= bounds[1]:
                        mask[row] = False
            self._part_range_masks[bounds] = mask
        return self._part_range_masks[bounds]

    def _register_mask(self, bounds: tuple[int, int]) -> torch.Tensor:
        """Rows a part asked to play in the register `bounds` may write: pitched notes within it,
        no drum note and no drum kit named (a register is a pitched part's: "Bass" in C3-G3 is not
        a kick drum, which a part of no asked instrument could otherwise turn out to be)."""
        return self._range_mask(bounds) & ~self.writes_drums

    def _position_mask(self, bar_positions: int) -> torch.Tensor:
        if bar_positions not in self._position_masks:
            self._position_masks[bar_positions] = (self.first_position < bar_positions) & (
                self.last_position < bar_positions)
        return self._position_masks[bar_positions]

    def _new_program_mask(self, used: frozenset) -> torch.Tensor:
        if used not in self._new_program_masks:
            foreign = [column for program, column in self.program_columns.items() if program not in used]
            mask = ~self.row_programs[:, foreign].any(dim=1) if foreign else torch.ones(
                len(self.grammar.row_lm_ids), dtype=torch.bool)
            self._new_program_masks[used] = mask
        return self._new_program_masks[used]

    def _row_parts(self, state: _OnsetState) -> torch.Tensor:
        """Onsets layout: the part each row writes its notes for (the one it opens, else the current one)."""
        return torch.where(self.opens_part >= 0, self.opens_part, torch.full_like(self.opens_part, state.part))

    def _onset_part_mask(self, state: _OnsetState, ranges: bool = True) -> torch.Tensor:
        """Onsets layout: a row's notes belong to the part it opens (else the current one), so that
        part's program and settled instrument (and with `ranges` its range) decide; no more parts
        than the corpus has."""
        mask = torch.ones(len(self.grammar.row_lm_ids), dtype=torch.bool)
        target = self._row_parts(state)
        for part in sorted(self.opened_parts | {state.part}):
            rows = target == part
            allowed = self._program_mask(state.part_programs.get(part, 0), ranges)
            if ranges and part in self.part_ranges:
                allowed = allowed & self._range_mask(self.part_ranges[part])
            if part in state.parts_settled:  # a part plays one instrument, named before its first note
                allowed = allowed & ~self.has_program
            elif (first := self._unsettled_part_mask(state, part)) is not None:
                allowed = allowed & first
            mask = torch.where(rows, allowed, mask)
        for part, bounds in self.registers.items():  # a part not yet opened too: its opening row may strike
            mask = mask & ((target != part) | self._register_mask(bounds))
        if self.opens_allowed_part is not None:
            mask = mask & self.opens_allowed_part
        elif self.max_parts is not None:  # parts numbered by role, only counted: no more than that many
            opened = state.parts_played | state.onset_parts
            if len(opened) >= self.max_parts:
                mask = mask & ((self.opens_part < 0) | torch.isin(self.opens_part, torch.tensor(sorted(opened))))
        return mask

    def _voice_leading_mask(self, state: _OnsetState) -> torch.Tensor:
        """Rows whose note would break strict voice leading for the part it is written for.
        Judged for every row at once from a small table (part, same onset or a new one, pitch):
        a loop over the parts cost a fifth of a sampling step."""
        parts = [part for part in sorted(self.opened_parts | {state.part}) if part >= 0]
        if not parts:
            return torch.ones(len(self.grammar.row_lm_ids), dtype=torch.bool)
        size = parts[-1] + 1
        forbidden = torch.zeros(2, size, 128, dtype=torch.bool)  # [at a new onset?, part, pitch]
        struck = torch.zeros(size, dtype=torch.bool)  # a part is one voice: one note an onset
        for part in parts:
            for new_onset in (False, True):
                forbidden[int(new_onset), part] = forbidden_pitches(state.voices, part, self.lowest_part, new_onset)
            struck[part] = part in state.voices.now
        target = self._row_parts(state)
        judged = (self.row_top_pitch >= 0) & (target >= 0) & (target < size)
        part_index = target.clamp(0, size - 1)
        breaks = forbidden[self.moves_time.long(), part_index, self.row_top_pitch.clamp(min=0)] | \
            (struck[part_index] & ~self.moves_time)
        return ~(judged & breaks)

    def row_bias_for(self, state: _OnsetState) -> torch.Tensor | None:
        """The bias over the rows in this state (None: none): the key-aware bias, plus the
        density-aware one. The latter, once the piece has sounded a beat, compares its notes per
        beat per part with the asked density's and biases each row that moves time by the beats
        it skips (a bar line: the rest of the bar), against the error's sign, in proportion to
        it (in widths of the middle bin, at most one): a piece sparser than asked moves on sooner."""
        bias = self.row_bias
        if self.density_target is None or state.bar_start is None or state.onset_time < 1.0 or not state.parts_played:
            return bias
        parts = max(len(state.parts_played), self.exact_parts or 0)
        density = state.notes_struck / (state.onset_time * parts)
        error = max(-1.0, min(1.0, (self.density_target - density) / self.density_scale))
        density_bias = -self.density_bias * error * self._beats_moved(state)
        return density_bias if bias is None else bias + density_bias

    def _beats_moved(self, state: _OnsetState) -> torch.Tensor:
        """How many beats each row moves time on from the current onset (0: it does not; a bar
        line: the rest of the bar). Needs a bar line written (`state.bar_start`)."""
        current = round((state.onset_time - state.bar_start) / state.position_quarters)
        steps = torch.where(self.row_shift >= 0, self.row_shift,
                            torch.where(self.first_position >= 0, self.first_position - current,
                                        torch.full_like(self.row_shift, -1)))
        steps = torch.where(self.starts_with_bar, torch.full_like(steps, max(state.bar_positions - current, 0)), steps)
        return (steps.clamp(min=0) * state.position_quarters).float()

    def _part_density_mask(self, state: _OnsetState, moved: torch.Tensor) -> torch.Tensor | None:
        """Each asked part's notes per beat kept within its role's (`part_floors`,
        `part_ceilings`), counted from the first note, with `DENSITY_MARGIN` to spare: time does
        not move on past where a part would fall below its floor, and while a part is behind,
        only the parts behind strike; a part at its ceiling strikes no more until time has moved
        on. A part may enter a note late (parts need not all enter on the first onset), and run
        ahead by `CEILING_GRACE` notes. `moved`: `_beats_moved(state)`. None: no piece yet."""
        # (`_part_density_limits` sets a part's floor and ceiling together.)
        if not self.part_floors or state.first_onset is None or state.bar_start is None:
            return None
        elapsed = state.onset_time - state.first_onset
        strikes = self.note_demand > 0
        target = self._row_parts(state)
        mask = torch.ones(len(self.grammar.row_lm_ids), dtype=torch.bool)
        full = [part for part, ceiling in self.part_ceilings.items()
                if state.part_notes[part] + 1 > ceiling / self.DENSITY_MARGIN * elapsed + self.CEILING_GRACE]
        if full:
            mask = mask & ~(strikes & torch.isin(target, torch.tensor(full)))
        slack = {part: max(state.part_notes[part], 1) / (floor * self.DENSITY_MARGIN) - elapsed
                 for part, floor in self.part_floors.items() if floor > 0}
        if slack:
            mask = mask & ~(moved > max(min(slack.values()), 0.0) + 1e-6)
            behind = [part for part, left in slack.items() if left <= 1e-6]
            if behind:
                mask = mask & ~(strikes & ~torch.isin(target, torch.tensor(behind)))
        return mask

    def _same_pitch_mask(self, state: _OnsetState, moved: torch.Tensor) -> torch.Tensor | None:
        """No part's voice on one pitch longer than `same_pitch_limit` beats, counted from where
        it began sounding it (to the end of its last note on it: the sanity check's run). A note
        written with its length ends there; a held one (no length: the onsets layout's default)
        sounds until its part's next onset, so a held run must move to another pitch by the last
        onset before the deadline (its last chance: one grid step later is past it). So time does
        not move past a held run's deadline unless the row itself moves the part off its pitch; at
        its last chance the part may not strike its pitch again, nor may a part below it open the
        onset's notes first (an onset's parts come from the top down: that would leave it no way
        to move there); no note on the run's pitch may end past the deadline, and no note is
        longer than the limit. `moved`: `_beats_moved(state)`. None: nothing to limit."""
        if self.same_pitch_limit is None or state.bar_start is None:
            return None
        arrival = state.onset_time + moved
        target = self._row_parts(state)
        lengths = torch.where(self.row_note_length >= 0,
                              self.row_note_length * state.position_quarters * self.positions_per_beat,
                              torch.full_like(self.row_note_length, -1.0))
        pitched = (self.row_top_pitch >= 0) | (state.program != DRUMS)  # a drum's length is no run
        mask = ~(pitched & (lengths > self.same_pitch_limit + 1e-6))
        if not state.pitch_runs:
            return mask
        # One row per part with a run, one column per music row (a loop over parts cost more).
        parts = torch.tensor(list(state.pitch_runs))[:, None]
        runs = list(state.pitch_runs.values())
        pitch = torch.tensor([run[0] for run in runs])[:, None]
        deadline = torch.tensor([run[1] + self.same_pitch_limit + 1e-4 for run in runs])[:, None]  # float32 times
        held = torch.tensor([run[2] is None for run in runs])[:, None]
        last_chance = arrival + state.position_quarters > deadline
        strikes_part = (target == parts) & (self.row_top_pitch >= 0)
        same = strikes_part & (self.row_top_pitch == pitch)
        # A length in a row of its own ends the current part's last note there.
        lengthens = (parts == state.part) & (self.row_top_pitch < 0) & ~self.moves_time & (self.opens_part < 0)
        ends_late = (same | lengthens) & (lengths >= 0) & (arrival + lengths > deadline)
        # A run whose notes have their lengths ends where they do, within the limit; a held one:
        late = (moved > 0) & (arrival > deadline) & ~(strikes_part & (self.row_top_pitch != pitch))
        held_again = same & (lengths < 0) & last_chance
        passed_over = last_chance & (self.opens_part > parts)
        return mask & ~(ends_late | held & (late | held_again | passed_over)).any(dim=0)

    def _runs_short_enough_to_end(self, state: _OnsetState) -> bool:
        """Whether every part's run on its pitch stays within the limit if the piece ends now,
        its last notes held to the end of this bar."""
        if self.same_pitch_limit is None or state.bar_start is None:
            return True
        bar_end = state.bar_start + state.bar_quarters
        return all(bar_end - start <= self.same_pitch_limit + self.SAME_PITCH_SPARE + 1e-6
                   for _, start, end, _ in state.pitch_runs.values() if end is None)

    def _parts_dense_enough_to_end(self, state: _OnsetState) -> bool:
        """Whether every asked part keeps its floor if the piece ends now: its last notes are then
        held to the end of this bar, so the piece is that long, as the sanity check counts it (a
        part at its floor at the last onset fell under it by the last bar's held chord)."""
        if not self.part_floors or state.first_onset is None or state.bar_start is None:
            return True
        beats = state.bar_start + state.bar_quarters - state.first_onset
        return all(state.part_notes[part] >= floor * beats - 1e-6 for part, floor in self.part_floors.items())

    # How far `row_mask` gives way in a dead end: not at all; a part's notes per beat may leave
    # its role's range, and its voice stay on one pitch past the corpus's longest; asked parts
    # may enter late (after other parts' onsets); the piece may also end here, whatever its
    # length and parts; then only the instruments and each part's range hold; last, only the
    # instruments (each part on its own, drum notes on drum parts only).
    STRICT, ANY_DENSITY, LATE_ENTRIES, MAY_END, RANGES_ONLY, INSTRUMENTS_ONLY = 0, 1, 2, 3, 4, 5
    WAYS_OUT = (STRICT, ANY_DENSITY, LATE_ENTRIES, MAY_END, RANGES_ONLY, INSTRUMENTS_ONLY)
    # A part's density limits are kept with this much to spare: the measure counts a piece's
    # beats to the end of its last note, the limits only to its last onset.
    DENSITY_MARGIN = 1.1
    CEILING_GRACE = 2
    # A part's run on one pitch is cut this many beats short of the corpus's longest: a note
    # written with a length of its own may sound past the next onset.
    SAME_PITCH_SPARE = 1.0

    def row_mask(self, state: _OnsetState, relax: int = STRICT) -> torch.Tensor:
        """The rows allowed next; `relax` (one of `WAYS_OUT`) is how far a dead end gives way
        (`GrammarLogitsProcessor` tries them in order): up to `MAY_END` the instruments and every
        corpus limit hold, but the parts' notes per beat from `ANY_DENSITY` on; `RANGES_ONLY` keeps each part's instrument and range; `INSTRUMENTS_ONLY`
        its instrument alone."""
        if relax >= self.RANGES_ONLY:
            return self._instruments_mask(state, ranges=relax < self.INSTRUMENTS_ONLY)
        # (The onsets layout judges a row's notes by the part the row writes them for, below.)
        mask = self.static if self.onsets else self.static & self._program_mask(state.program)
        if self.bar_length:
            mask = mask & self._position_mask(state.bar_positions)
            if state.bar_start is not None:  # a Shift lands within the bar, counted from its last onset
                steps_left = state.bar_positions - round((state.onset_time - state.bar_start) / state.position_quarters)
                mask = mask & ((self.row_shift == NO_POSITION) | (self.row_shift < steps_left))
        if self.cap is not None:
            mask = mask & (self.note_demand <= self.cap - state.notes - state.reserved)
            if self.notes_at_position is not None and state.bar_onsets and state.bar_start is not None:
                occupied = torch.tensor([state.bar_onsets.get(state.bar_start + position * state.position_quarters, 0)
                                         for position in range(self.notes_at_position.shape[1])])
                crowded = ((self.notes_at_position > 0) & (self.notes_at_position + occupied > self.cap)).any(dim=1)
                mask = mask & ~crowded
        if self.max_gap is not None and state.bar_start is not None:
            latest = state.last_onset + self.max_gap + 1e-6
            mask = mask & ((self.first_position == NO_POSITION)
                           | (self.first_position * state.position_quarters <= latest - state.bar_start))
            mask = mask & ((self.row_shift == NO_POSITION)
                           | (self.row_shift * state.position_quarters <= latest - state.onset_time))
            if state.bar_start + state.bar_quarters > latest:
                mask = mask & ~self.starts_with_bar
        if self.max_programs is not None and len(state.programs_used) >= self.max_programs:
            mask = mask & self._new_program_mask(frozenset(state.programs_used))
        if self.no_repeats and state.pairs:
            mask = mask.clone()
            for (program, pitch), strikes in state.pairs.items():
                if strikes < self.unison:
                    continue
                for row in self.pre_pairs_explicit.get((program, pitch), ()):
                    mask[row] = False
                if program == state.program:
                    for kind in STRIKE_TYPES:
                        for row in self.pre_pitches_current.get((kind, pitch), ()):
                            mask[row] = False
        if self.onsets:
            mask = mask & self._onset_part_mask(state)
            if self.strict_voice_leading:
                mask = mask & self._voice_leading_mask(state)
        elif self.with_parts:
            if state.part in self.part_ranges:
                mask = mask & self._range_mask(self.part_ranges[state.part])
            if state.part in self.registers:
                mask = mask & self._register_mask(self.registers[state.part])
            if state.part in state.parts_settled:  # a part plays one instrument, named before its first note
                mask = mask & ~self.has_program
            elif (first := self._unsettled_part_mask(state, state.part)) is not None:
                mask = mask & first
            if self.opens_allowed_part is not None:
                mask = mask & self.opens_allowed_part
        if state.tempo_here:
            mask = mask & ~self.tempo_before_time
        if state.signature_here:
            mask = mask & ~self.signature_before_bar
        if self.exact_bars and state.bars >= self.exact_bars:
            mask = mask & ~self.starts_with_bar
        if relax < self.ANY_DENSITY and (self.part_floors or self.same_pitch_limit is not None) \
                and state.bar_start is not None:
            moved = self._beats_moved(state)  # how far each row moves time: read by both limits
            if (density := self._part_density_mask(state, moved)) is not None:
                mask = mask & density  # each part as busy as the corpus's parts of its role
            if (held := self._same_pitch_mask(state, moved)) is not None:
                mask = mask & held  # no voice stuck on one pitch
        missing_parts = self.asked_parts - state.parts_played
        if missing_parts and relax < self.LATE_ENTRIES:
            # The asked parts enter first: a part left to enter at the end finds the last onset
            # full (or plays one note in the last beat), and a band's parts start together.
            mask = mask & ~self._late_entry_rows(state, missing_parts)
        # Whether a piece may end is the syntax's call, and then the corpus's shortest length
        # (or the asked one), and every asked part having played.
        mask[self.grammar.end_row] = relax >= self.MAY_END or state.bars >= self.min_bars and not missing_parts and (
            not self.exact_bars or (state.bar_start is not None and state.last_onset >= state.bar_start)) and (
            relax >= self.ANY_DENSITY
            or self._parts_dense_enough_to_end(state) and self._runs_short_enough_to_end(state))
        return mask
