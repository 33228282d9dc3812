"""Tasks on given music, judged on held-out pieces: harmonising a melody and infilling bars.

Harmonisation keeps a piece's first part (the soprano of a chorale) and lets the model write the
others; it is judged by the sane share of the results, each voice's range against the
reference's, and the rate of parallel fifths and octaves between voices
(`voice_leading.parallel_motion`), for the model, for the reference itself and for a shuffled
control (the reference's other voices with their bars in random order under the kept melody:
the rate that voices which ignore each other give). Bits per note of the written parts are those the model
gives the reference's own parts, with the melody given (teacher forcing, the first window of
the training context). Infilling writes 2 bars in the middle of each piece; the result must be
sane and the gap exactly 2 bars long; its bits per note are those of the reference's own 2 bars
in the infill layout.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch
from symusic import Score
from tqdm.auto import tqdm

from midillm.tokenization.profile import first_bars, measure_corpus
from midillm.tokenization.rows import flat, infill_row

from .evaluate import shuffle_bars
from .sanity import sample_sanity, sanity_summary
from midillm.tokenization.voice_leading import parallel_motion


def voice_ranges(scores: list[Score]) -> dict[str, list[int]]:
    """Part name -> [lowest, highest] pitch over the scores (as the corpus profile measures it)."""
    return measure_corpus(scores).part_ranges


def shuffled_control(score: Score, rng: random.Random) -> Score:
    """The score with every part but the first moved bar by bar into a random order (bars of
    the first metre): the same notes, with no regard for the melody above them."""
    return shuffle_bars(score, rng, parts_apart=True)


@torch.inference_mode()
def _bits(lm, ids: list[int], start: int, counted: list[bool]) -> float:
    """Bits the model gives ids[start:] where `counted`, each predicted from what precedes it
    (the music rows' distribution, as in training)."""
    device = next(lm.model.parameters()).device
    hidden = lm.model.get_decoder()(input_ids=torch.tensor([ids], device=device)).last_hidden_state[0]
    head = lm._head()
    log_probs = torch.log_softmax((hidden[start - 1:-1].to(head.dtype) @ head.T).float(), dim=-1)
    rows = torch.tensor([lm.grammar.row_of_lm_id.get(lm_id, -1) for lm_id in ids[start:]])
    keep = (rows >= 0) & torch.tensor(counted)
    return float(-log_probs[torch.arange(len(rows))[keep], rows[keep]].sum()) / math.log(2)


def written_parts_bits_per_note(lm, score: Score, given_parts: int = 1) -> tuple[float, int]:
    """Bits the model gives the parts after the first `given_parts` of `score` (the reference's
    own; in the codec's part order, the lowest numbers), with the given parts in view: teacher
    forcing over the first window of bars that fits the training context. Returns (bits, notes
    of the written parts in that window)."""
    codec = lm.codec
    given = set(sorted(codec.score_part_numbers(score))[:given_parts])
    caption = lm._caption_ids(codec.caption(score))
    ids = caption + [codec.music_start_id]
    for bar in codec.encode_bars(score):
        if len(ids) + len(bar) + 1 > lm.context_length:
            break
        ids += bar
    start = len(caption) + 1
    written, part = [], -1  # whether each target id belongs to a written part
    for lm_id in ids[start:]:
        number = codec.part_of_lm_id(lm_id)
        part = number if number is not None else part
        written.append(part >= 0 and part not in given)
    notes = sum(1 for lm_id, is_written in zip(ids[start:], written) if is_written and lm_id in lm.grammar.note_lm_ids)
    return _bits(lm, ids, start, written), notes


def infill_bits_per_note(lm, score: Score, first_bar: int, bars: int = 2) -> tuple[float, int]:
    """Bits the model gives the reference's own bars `first_bar`.. (from 1) in the infill layout
    (the music around them given), and the notes in them."""
    prompt, piece_bars, gap_start, gap_bars = lm.infill_prompt(score, (first_bar, first_bar + bars - 1))
    middle = flat(piece_bars[gap_start:gap_start + gap_bars])
    ids = infill_row(prompt, middle, lm.codec.music_end_id)
    notes = sum(1 for lm_id in middle if lm_id in lm.grammar.note_lm_ids)
    return _bits(lm, ids, len(prompt), [True] * (len(middle) + 1)), notes


def evaluate_tasks(lm, pieces: list[Path], out: str | Path | None = None, seed: int = 0,
                   max_bars: int = 8, max_new_tokens: int = 512, strict_voice_leading: bool | None = None,
                   log=print) -> dict:
    """Harmonise the first part of each piece (its first `max_bars` bars) and infill 2 bars in
    its middle, under strict voice leading if asked (None: the corpus's default); returns the numbers (and writes the scores
    and `tasks.json` under `out`)."""
    import json

    from midillm.decoding.export import export_score

    profile = lm.codec.corpus
    rng = random.Random(seed)
    out = Path(out) if out else None
    harmonised, references, controls, checks, infill_checks, exact_gaps = [], [], [], [], [], []
    bits = notes = infill_bits = infill_notes = 0.0
    for index, path in enumerate(tqdm(pieces, desc="Harmonising and infilling", unit="piece")):
        score = Score(str(path))
        played = [track for track in score.tracks if track.note_num()]
        if len(played) < 2:
            continue
        reference = lm.codec.decode(lm.codec.encode(first_bars(score, max_bars)))
        melody = played[0].name
        result = lm.accompany(reference, [melody], seed=seed + index, max_new_tokens=max_new_tokens,
                              strict_voice_leading=strict_voice_leading)[0]
        checks.append(sample_sanity(result, profile, lm.last_generation[0]))
        harmonised.append(result)
        references.append(reference)
        controls.append(shuffled_control(reference, rng))
        # Teacher forcing reads the music as the model was trained on it: in the common key, where
        # the tasks above move it themselves (`MidiLM.run`).
        as_trained = lm.codec.in_training_key(reference)
        piece_bits, piece_notes = written_parts_bits_per_note(lm, as_trained)
        bits, notes = bits + piece_bits, notes + piece_notes
        bar_count = len(lm.codec.encode_bars(as_trained))
        if bar_count >= 4:
            first = bar_count // 2
            gap_bits, gap_notes = infill_bits_per_note(lm, as_trained, first)
            infill_bits, infill_notes = infill_bits + gap_bits, infill_notes + gap_notes
            filled = lm.infill(reference, (first, first + 1), seed=seed + index, max_new_tokens=max_new_tokens,
                               strict_voice_leading=strict_voice_leading)[0]
            infill_checks.append(sample_sanity(filled, profile, lm.last_generation[0]))
            exact_gaps.append(lm.last_generation[0].get("bars") == 2)
            if out:
                export_score(filled, out / f"infilled-{index:03d}", ["mid", "png"])
        if out:
            export_score(result, out / f"harmonised-{index:03d}", ["mid", "png"])
            export_score(reference, out / f"reference-{index:03d}", ["mid", "png"])

    def rate(scores):
        counted = [parallel_motion(score) for score in scores]
        moves = sum(item["moves"] for item in counted)
        return (sum(item["parallels"] for item in counted) / moves) if moves else float("nan")

    harmonised_summary = sanity_summary(checks)
    result = {
        "pieces": len(harmonised),
        "harmonisation": {
            "sane_share": harmonised_summary.get("sane_share"),
            "insane_reasons": harmonised_summary.get("insane_reasons"),
            "bits_per_note_written_parts": bits / notes if notes else float("nan"),
            "parallel_rate": rate(harmonised),
            "reference_parallel_rate": rate(references),
            "shuffled_parallel_rate": rate(controls),
            "voice_ranges": voice_ranges(harmonised),
            "reference_voice_ranges": voice_ranges(references),
        },
        "infill": {
            "pieces": len(infill_checks),
            "sane_share": sanity_summary(infill_checks).get("sane_share") if infill_checks else float("nan"),
            "exact_gap_share": float(np.mean(exact_gaps)) if exact_gaps else float("nan"),
            "bits_per_note": infill_bits / infill_notes if infill_notes else float("nan"),
        },
    }
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "tasks.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    return result


__all__ = ["evaluate_tasks", "infill_bits_per_note", "shuffled_control", "voice_ranges", "written_parts_bits_per_note"]
