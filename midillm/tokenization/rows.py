"""The row layouts: how a caption and a piece's bars (LM ids, `MusicCodec.encode_bars`) become
the ids a model trains on, and the prompts it is given. `prepare` writes its training rows with
these functions and `MidiLM` builds its prompts with the same ones, so a prompt starts the way
the rows it learned from did.

- continuation (`music_row`, cut to the context by `chunk_piece`): caption `<music>` bars `</music>`;
- infill (`infill_prompt`, `infill_example`): caption `<music>` the bars before the gap, one
  `<gap>` per missing bar, the bars after it, `<fill>`, then the missing bars and `</music>` (the
  fill-in-the-middle layout of code models);
- accompaniment (`accompaniment_order`, `reorder_parts`): a continuation row whose given parts
  are moved first (parts 0..k-1), so that they can be kept while the others are written;
  arrangement is accompaniment under a new caption.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

import numpy as np

from .caption import caption_budget

TASKS = ("continue", "infill", "accompany", "arrange")  # arrange = accompany under a new caption
IGNORE_INDEX = -100  # the label value the loss skips (captions, padding)
# Raised whenever the rows or their labels change, so `prepare` rebuilds a cached folder
# (its fingerprint holds it). 2: infill rows carry loss on the music around the gap. 3: notes'
# loudness in fewer levels (`profile.VELOCITY_LEVELS`), which the settings do not show.
ROW_FORMAT_VERSION = 3


def flat(bars: list[list[int]]) -> list[int]:
    """Bars of ids as one run of ids."""
    return [lm_id for bar in bars for lm_id in bar]


def music_row(caption: list[int], music: list[int], start_id: int, end_id: int | None = None) -> list[int]:
    """The continuation layout: caption `<music>` music, and `</music>` when `end_id` is given
    (a whole piece; without it, a prompt the model continues)."""
    return caption + [start_id] + music + ([end_id] if end_id is not None else [])


def chunk_piece(caption: list[int], bars: list[list[int]], start_id: int, end_id: int,
                seq_len: int, caption_of: Callable[[int, int], list[int] | None] | None = None
                ) -> list[tuple[list[int], int]]:
    """Cut a piece at bar lines into chunks of at most `seq_len` ids.

    Each chunk is (ids, number of leading ids without loss): the caption and `<music>` start
    every chunk so each one is a self-contained example; `</music>` ends only the last.
    `caption_of(first, end)`: the caption of a chunk of bars [first, end) where it is not
    `caption` (None: it is); one no longer than `caption` (the chunks are cut to its length).
    """
    caption = caption[: caption_budget(seq_len)]
    head = music_row(caption, [], start_id)
    budget = seq_len - len(head) - 1
    # A bar longer than a whole chunk is rare (dense orchestral bars); cut it hard.
    pieces_of_bars = [(index, bar[i:i + budget]) for index, bar in enumerate(bars)
                      for i in range(0, max(len(bar), 1), budget)]
    # Each chunk with the bars [first, last] it holds (a bar cut hard lies in two).
    groups, current, first, last = [], [], 0, 0
    for index, bar in pieces_of_bars:
        if current and len(current) + len(bar) > budget:
            groups.append((first, last + 1, current))
            current, first = [], index
        current, last = current + bar, index
    groups.append((first, last + 1, current + [end_id]))
    chunks = []
    for first, end, music in groups:
        own = caption_of(first, end) if caption_of is not None else None
        own = own[: caption_budget(seq_len)] if own is not None and len(own) <= len(caption) else None
        chunk_head = head if own is None else music_row(own, [], start_id)
        chunks.append((chunk_head + music, len(chunk_head)))
    return chunks


def labelled(chunk: tuple[list[int], int]) -> tuple[list[int], list[int]]:
    """A `chunk_piece` chunk (ids, leading ids without loss) as (ids, labels)."""
    ids, prompt_length = chunk
    return ids, [IGNORE_INDEX] * prompt_length + ids[prompt_length:]


# ----------------------------------------------------------------------------- infill


def infill_window(bars: list[list[int]], gap_start: int, gap_bars: int, budget: int) -> tuple[int, int]:
    """The bars around a gap that fit `budget` ids, nearest first, alternating sides: returns
    (first bar before the gap, bar after the last one kept after it)."""
    before, after = gap_start, gap_start + gap_bars
    grew = True
    while grew:
        grew = False
        if before > 0 and len(bars[before - 1]) <= budget:
            before -= 1
            budget -= len(bars[before])
            grew = True
        if after < len(bars) and len(bars[after]) <= budget:
            budget -= len(bars[after])
            after += 1
            grew = True
    return before, after


def infill_prompt(caption: list[int], bars: list[list[int]], gap_start: int, gap_bars: int,
                  start_id: int, gap_id: int, fill_id: int, budget: int) -> list[int]:
    """caption <music> before [<gap> x gap_bars] after <fill>: as much music on each side of the
    gap as `budget` ids hold. The one layout of infill rows and infill prompts."""
    before, after = infill_window(bars, gap_start, gap_bars, budget)
    return (music_row(caption, flat(bars[before:gap_start]), start_id)
            + [gap_id] * gap_bars + flat(bars[gap_start + gap_bars:after]) + [fill_id])


def infill_row(prompt: list[int], middle: list[int], end_id: int) -> list[int]:
    """An infill prompt followed by the missing bars' ids and `</music>`."""
    return prompt + middle + [end_id]


def infill_example(caption: list[int], bars: list[list[int]], gap_bars: int, gap_start: int,
                   start_id: int, end_id: int, gap_id: int, fill_id: int,
                   seq_len: int) -> tuple[list[int], list[int]] | None:
    """One fill-in-the-middle example (the layout of code models): `infill_prompt`, then the
    missing bars and `</music>`, as (ids, labels). None if the gap alone does not fit the row.

    Loss falls on the music around the gap too, not only on the missing bars: those notes are
    music like any other (the bars after the gap: music that follows a hole), and without it an
    infill row teaches about an eighth of what a continuation row of the same length teaches.
    The caption, `<music>`, the `<gap>` markers and `<fill>` carry no loss: they are given.
    """
    caption = caption[: caption_budget(seq_len)]
    middle = flat(bars[gap_start:gap_start + gap_bars])
    budget = seq_len - len(caption) - 3 - gap_bars - len(middle)
    if budget < 0 or not middle:
        return None
    prompt = infill_prompt(caption, bars, gap_start, gap_bars, start_id, gap_id, fill_id, budget)
    ids = infill_row(prompt, middle, end_id)
    given = len(caption) + 1
    labels = [IGNORE_INDEX] * given + [IGNORE_INDEX if lm_id in (gap_id, fill_id) else lm_id for lm_id in ids[given:]]
    return ids, labels


def filled_piece(caption: list[int], bars: list[list[int]], gap_start: int, gap_bars: int, middle: list[int],
                 start_id: int, end_id: int) -> list[int]:
    """A piece with its gap filled by `middle` (the ids an infill wrote), in the continuation
    layout: the bars before the gap, `middle`, the bars after it."""
    music = flat(bars[:gap_start]) + middle + flat(bars[gap_start + gap_bars:])
    return music_row(caption, music, start_id, end_id)


# ----------------------------------------------------------------------------- accompaniment


def accompaniment_order(parts: int, rng) -> list[int] | None:
    """A new order of a piece's parts for an accompaniment example: a random proper subset
    (the given parts) first, the rest after, each group in score order. None for one part."""
    if parts < 2:
        return None
    given = sorted(rng.sample(range(parts), rng.randint(1, min(2, parts - 1))))
    order = given + [part for part in range(parts) if part not in given]
    return order if order != list(range(parts)) else None


def reorder_parts(score, order: list[int]):
    """A copy of `score` whose played tracks come in `order` (the others are left out): the
    given parts first, as accompaniment rows and prompts have them."""
    played = [track for track in score.tracks if track.note_num()]
    reordered = score.copy()
    reordered.tracks = [played[index].copy() for index in order]
    return reordered


# ----------------------------------------------------------------------------- packing


def pack_rows(examples: list[tuple[Sequence[int], Sequence[int]]], seq_len: int,
              pad_id: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Best-fit-decreasing packing of whole (ids, labels) examples into rows of exactly `seq_len`.

    Returns input ids and labels (padding masked) as int32 arrays of shape (rows, seq_len), and
    the number of padding ids. Examples may be lists or arrays; arrays keep a batch of them small
    (`prepare` holds a shard's examples at once).
    """
    lengths = [len(ids) for ids, _ in examples]
    order = sorted(range(len(examples)), key=lambda index: -lengths[index])
    rows: list[list[int]] = []  # the examples of each row, in the order they are laid down
    free_space: list[tuple[int, int]] = []  # sorted (space left, row index)
    for index in order:
        position = bisect.bisect_left(free_space, (lengths[index], -1))
        if position < len(free_space):
            space, row = free_space.pop(position)
        else:
            space, row = seq_len, len(rows)
            rows.append([])
        rows[row].append(index)
        bisect.insort(free_space, (space - lengths[index], row))
    input_ids = np.full((len(rows), seq_len), pad_id, dtype=np.int32)
    labels = np.full((len(rows), seq_len), IGNORE_INDEX, dtype=np.int32)
    for row, members in enumerate(rows):
        at = 0
        for index in members:
            ids, example_labels = examples[index]
            input_ids[row, at:at + lengths[index]] = ids
            labels[row, at:at + lengths[index]] = example_labels
            at += lengths[index]
    return input_ids, labels, int(len(rows) * seq_len - sum(lengths))
