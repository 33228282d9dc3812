"""A finite-state grammar of the codec's tokenization, so that every generated sequence decodes.

The state after a token is (type of the last base token, position in the current bar). A token
may follow a state when miditok's own type graph allows each step through its base tokens (a
music-BPE merge is walked token by token) and time never goes back inside a bar (a Position
after the current one, or a new bar). Masks are compiled once per codec for every state, over
the codec's music rows, and applied as a `transformers` `LogitsProcessor`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import LogitsProcessor

SPECIAL_TYPES = frozenset({"PAD", "BOS", "EOS", "MASK"})
TIME_TYPES = frozenset({"Bar", "Position", "TimeShift", "Track"})
NOTE_TYPES = frozenset({"Pitch", "PitchDrum", "NoteOn", "DrumOn"})
NO_POSITION = -1
START = "<start>"


def token_type(token: str) -> str:
    return token.split("_")[0]


def position_value(token: str) -> int | None:
    kind, _, value = token.partition("_")
    return int(value) if kind == "Position" and value.lstrip("-").isdigit() else None


@dataclass(frozen=True)
class _TokenWalk:
    """What one music id does to the grammar state, whatever state it starts from."""

    valid_inside: bool          # its own base tokens follow the type graph and keep time moving
    first_type: str
    first_position: int         # first Position before any bar line in it, or NO_POSITION
    last_type: str
    resets_position: bool       # a bar line (or track start) after its last Position
    last_position: int          # its last Position value, or NO_POSITION if it has none


class MusicGrammar:
    """Per-state masks over `codec.music_lm_ids` (rows in that order; the end token last)."""

    def __init__(self, codec):
        self.codec = codec
        tokenizer = codec.music_tokenizer
        graph = {kind: {token_type(successor) for successor in successors} - SPECIAL_TYPES
                 for kind, successors in tokenizer.tokens_types_graph.items() if kind not in SPECIAL_TYPES}
        if "Track" in graph:  # MMM: every track starts with Track_Start
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
        max_position = max([walk.last_position for walk in walks] + [walk.first_position for walk in walks] + [0])
        self.positions = max_position + 2  # NO_POSITION and 0..max
        # allowed[type index, position + 1, row]
        first_type_index = np.array([self.types.index(walk.first_type) if walk.first_type in graph else -1
                                     for walk in walks])
        valid_inside = np.array([walk.valid_inside and walk.first_type in graph for walk in walks])
        first_position = np.array([walk.first_position for walk in walks])
        self.allowed = np.zeros((len(self.types), self.positions, len(self.row_lm_ids)), dtype=bool)
        for type_index, kind in enumerate(self.types):
            follows = np.array([successor in graph[kind] for successor in self.types])
            type_ok = valid_inside & np.where(first_type_index >= 0, follows[first_type_index], False)
            for position in range(NO_POSITION, self.positions - 1):
                time_ok = (first_position == NO_POSITION) | (first_position > position)
                self.allowed[type_index, position + 1, :-1] = type_ok & time_ok
            # The piece may end once the last note is complete (its successors include time).
            self.allowed[type_index, :, -1] = kind != START and (kind in TIME_TYPES or bool(graph[kind] & TIME_TYPES))
        self.allowed_torch = torch.from_numpy(self.allowed)
        self.note_lm_ids = {lm_id for lm_id in self.row_lm_ids[:-1]
                            if any(token_type(token) in NOTE_TYPES for token in
                                   codec.music_token_parts[codec.music_id_of_lm_id(lm_id)])}

    def _walk(self, tokens: list[str]) -> _TokenWalk:
        if not tokens:
            return _TokenWalk(False, "PAD", NO_POSITION, "PAD", False, NO_POSITION)
        types = [token_type(token) for token in tokens]
        valid = not (set(types) & SPECIAL_TYPES) and all(
            following in self.graph.get(previous, set()) for previous, following in zip(types, types[1:]))
        first_position, position, seen_reset = NO_POSITION, NO_POSITION, False
        resets, last_position = False, NO_POSITION
        for token, kind in zip(tokens, types):
            value = position_value(token)
            if kind in ("Bar", "Track"):
                seen_reset, resets, position = True, True, NO_POSITION
            elif value is not None:
                if not seen_reset and first_position == NO_POSITION:
                    first_position = value
                elif value <= position:
                    valid = False
                position, last_position, resets = value, value, False
        return _TokenWalk(valid, types[0], first_position, types[-1], resets, last_position)

    # ------------------------------------------------------------------------- state

    def start_state(self) -> tuple[str, int]:
        return (START, NO_POSITION)

    def advance(self, state: tuple[str, int], lm_id: int) -> tuple[str, int]:
        walk = self.walks.get(lm_id)
        if walk is None:  # the end token, or an id outside the music (caption text)
            return state
        if walk.resets_position:
            position = NO_POSITION
        elif walk.last_position != NO_POSITION:
            position = walk.last_position
        else:
            position = state[1]
        return (walk.last_type, position)

    def state_after(self, lm_ids) -> tuple[str, int]:
        """The state after a prompt's music ids (caption and `<music>` are skipped)."""
        state = self.start_state()
        for lm_id in self.codec.music_part(list(lm_ids)):
            state = self.advance(state, int(lm_id))
        return state

    def row_mask(self, state: tuple[str, int]) -> torch.Tensor:
        """Booleans over the music rows: which may come next."""
        kind, position = state
        return self.allowed_torch[self.types.index(kind), min(position + 1, self.positions - 1)]


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks every token the grammar forbids next, for each sequence of a batch.

    Also keeps a piece from ending before its first note: an empty score is valid, but useless.

    Works on logits over the whole LM vocabulary (`row_logits=False`) or over the music rows
    only (`row_logits=True`, the music-only head). Call with the ids generated so far.
    """

    def __init__(self, grammar: MusicGrammar, prompt_ids: list[list[int]] | None = None,
                 row_logits: bool = False):
        self.grammar = grammar
        self.row_logits = row_logits
        self.states: list[tuple[str, int]] | None = None
        self.prompt_states = [grammar.state_after(ids) for ids in prompt_ids] if prompt_ids else None
        self.has_note = ([bool(set(grammar.codec.music_part(ids)) & grammar.note_lm_ids) for ids in prompt_ids]
                         if prompt_ids else None)
        self.seen = 0
        self.row_lm_ids = torch.tensor(grammar.row_lm_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.states is None:
            self.states = list(self.prompt_states or [self.grammar.start_state()] * input_ids.shape[0])
            self.has_note = list(self.has_note or [False] * input_ids.shape[0])
            self.seen = input_ids.shape[1]
        for new_position in range(self.seen, input_ids.shape[1]):
            for row, lm_id in enumerate(input_ids[:, new_position].tolist()):
                self.states[row] = self.grammar.advance(self.states[row], lm_id)
                self.has_note[row] = self.has_note[row] or lm_id in self.grammar.note_lm_ids
        self.seen = input_ids.shape[1]
        masks = torch.stack([self.grammar.row_mask(state) for state in self.states])
        masks[:, self.grammar.end_row] &= torch.tensor(self.has_note)
        if self.row_logits:
            return scores.masked_fill(~masks.to(scores.device), float("-inf"))
        full = torch.zeros_like(scores, dtype=torch.bool)
        full[:, self.row_lm_ids.to(scores.device)] = masks.to(scores.device)
        return scores.masked_fill(~full, float("-inf"))
