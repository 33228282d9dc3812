"""Memorisation: the longest stretch of each generated piece found verbatim in the training set.

A piece becomes a sequence of symbols, one per note after the first, in (onset, pitch) order of
all pitched (non-drum) notes: (pitch interval to the previous note, onset delta to it on a
24-per-beat grid). Intervals make the match transposition-invariant; onset deltas keep the
rhythm (durations and instruments are ignored). A run of k equal symbols is k + 1 notes copied.

The training set's symbols go into one suffix automaton (each piece ends with its own separator,
so no match crosses two pieces); the longest common substring of a generated piece with any
training piece is then one linear walk over the generated symbols. Building and querying are
linear in the number of notes.
"""

from __future__ import annotations

import bisect

import numpy as np

from .features import RESOLUTION, PieceNotes, piece_notes

__all__ = ["COPY_BARS", "note_symbols", "TrainingIndex", "longest_copy", "memorization_summary"]

# A sample "copies" when it reproduces more than this many bars of one training piece.
COPY_BARS = 4


def note_symbols(piece) -> tuple[list[tuple[int, int]], np.ndarray]:
    """(interval, onset delta) per note after the first, and the onsets (beats) of the notes."""
    notes = piece if isinstance(piece, PieceNotes) else piece_notes(piece)
    mask = notes.pitched
    steps = np.round(notes.onset[mask] * RESOLUTION).astype(np.int64)
    pitches = notes.pitch[mask]
    order = np.lexsort((pitches, steps))
    steps, pitches = steps[order], pitches[order]
    symbols = list(zip(np.diff(pitches).tolist(), np.diff(steps).tolist()))
    return symbols, steps / RESOLUTION


class TrainingIndex:
    """A suffix automaton over the training pieces' symbol sequences."""

    def __init__(self, pieces=(), names: list[str] | None = None):
        self._next: list[dict] = [{}]
        self._link = [-1]
        self._length = [0]
        self._end = [-1]  # an end position (in the concatenation) of the state's first occurrence
        self._last = 0
        self._size = 0  # symbols added so far
        self._piece_starts: list[int] = []
        self.names: list[str] = []
        self._codes: dict = {}
        for index, piece in enumerate(pieces):
            self.add(piece, names[index] if names else str(index))

    def add(self, piece, name: str = "") -> None:
        """Append one training piece (a Score, PieceNotes, or a symbol list)."""
        symbols = piece if isinstance(piece, list) else note_symbols(piece)[0]
        self._piece_starts.append(self._size)
        self.names.append(name)
        for symbol in symbols:
            self._extend(self._codes.setdefault(symbol, len(self._codes)))
        self._extend(-len(self._piece_starts))  # a separator no other piece shares

    def _extend(self, code: int) -> None:
        nxt, link, length, end = self._next, self._link, self._length, self._end
        current = len(nxt)
        nxt.append({})
        length.append(length[self._last] + 1)
        link.append(-1)
        end.append(self._size)
        state = self._last
        while state != -1 and code not in nxt[state]:
            nxt[state][code] = current
            state = link[state]
        if state == -1:
            link[current] = 0
        else:
            target = nxt[state][code]
            if length[state] + 1 == length[target]:
                link[current] = target
            else:
                clone = len(nxt)
                nxt.append(dict(nxt[target]))
                length.append(length[state] + 1)
                link.append(link[target])
                end.append(end[target])
                while state != -1 and nxt[state].get(code) == target:
                    nxt[state][code] = clone
                    state = link[state]
                link[target] = link[current] = clone
        self._last = current
        self._size += 1

    def longest_match(self, symbols: list) -> tuple[int, int, int]:
        """(length in symbols, start in `symbols`, training piece index) of the longest run of
        `symbols` that occurs in a training piece; (0, 0, -1) if none."""
        nxt, link, length = self._next, self._link, self._length
        state, matched = 0, 0
        best = (0, 0, 0)  # length, end position in symbols, state
        for position, symbol in enumerate(symbols):
            code = self._codes.get(symbol)
            if code is None:
                state, matched = 0, 0
                continue
            while state and code not in nxt[state]:
                state = link[state]
                matched = length[state]
            if code in nxt[state]:
                state = nxt[state][code]
                matched += 1
            else:
                state, matched = 0, 0
            if matched > best[0]:
                best = (matched, position, state)
        if best[0] == 0:
            return 0, 0, -1
        piece = bisect.bisect_right(self._piece_starts, self._end[best[2]]) - 1
        return best[0], best[1] - best[0] + 1, piece


def longest_copy(piece, index: TrainingIndex, bar_beats: float | None = None) -> dict:
    """The longest verbatim (transposition-invariant) copy of training material in `piece`:
    notes copied, its length in bars (first to last copied onset, in bars of the piece's first
    time signature) and the training piece it comes from."""
    notes = piece if isinstance(piece, PieceNotes) else piece_notes(piece)
    symbols, onsets = note_symbols(notes)
    length, start, source = index.longest_match(symbols)
    bar_beats = bar_beats or notes.bar_beats
    if length == 0:
        copied_notes = 1 if onsets.size else 0  # a single note always "occurs"
        return {"notes": copied_notes, "bars": 0.0, "source": None, "start_beat": None}
    span = float(onsets[start + length] - onsets[start])
    return {"notes": length + 1, "bars": span / bar_beats, "source": index.names[source],
            "start_beat": float(onsets[start])}


def memorization_summary(copies: list[dict], copy_bars: float = COPY_BARS) -> dict:
    """Over the samples: longest copies and the share copying more than `copy_bars` bars."""
    if not copies:
        return {"samples": 0}
    notes = np.array([copy["notes"] for copy in copies], dtype=np.float64)
    bars = np.array([copy["bars"] for copy in copies], dtype=np.float64)
    return {"samples": len(copies), "copy_bars": copy_bars,
            "longest_notes_mean": float(notes.mean()), "longest_notes_max": int(notes.max()),
            "longest_bars_mean": float(bars.mean()), "longest_bars_max": float(bars.max()),
            "share_copying": float((bars > copy_bars).mean())}
