"""Held-out likelihood of a model on a `midillm prepare` split: loss, perplexity, bits per note.

The NLL is the training loss itself: `midillm.model.runtime.MusicLM.forward` over the split's
packed rows (captions and padding carry no label; only music tokens and `</music>` are scored,
over the music rows of the head). Bits per note = total NLL in bits / the notes of the split's pieces
(prepare.json), which compares across tokenizations where per-token loss does not.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["held_out_likelihood"]


class _Plain(nn.Module):
    """A merged (no longer PEFT) causal LM, shaped like the PEFT model `MusicLM` wraps."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def get_base_model(self):
        return self.model


@torch.inference_mode()
def held_out_likelihood(lm, data_dir: str | Path, split: str = "test", batch_size: int = 8,
                        max_rows: int | None = None, progress: bool = False) -> dict:
    """Loss (nats per label token), perplexity and bits per note of a `MidiLM` on a split.

    `split` falls back to "validation" when the data has no (or an empty) test split.
    `max_rows` evaluates only the first rows (bits per note is then scaled from the share of
    label tokens seen, an estimate).
    """
    from midillm.model.data import Collate, load_prepared
    from midillm.model.runtime import MusicLM

    _, dataset, report = load_prepared(Path(data_dir))
    if split not in dataset or len(dataset[split]) == 0:
        split = "validation"
    rows = dataset[split].with_format("numpy", columns=["input_ids", "labels"])
    total_rows = len(rows)
    if max_rows is not None:
        rows = rows.select(range(min(max_rows, total_rows)))
    codec = lm.codec
    music_lm = MusicLM(_Plain(lm.model), codec.music_lm_ids, len(codec.lm_tokenizer),
                       music_only_head=codec.render == "tokens")
    device = next(lm.model.parameters()).device
    music_lm.to(device)
    collate = Collate(len(rows[0]["input_ids"]))
    total_nll, total_tokens = 0.0, 0
    batches = range(0, len(rows), batch_size)
    for start in tqdm(batches, desc=f"Likelihood ({split})", unit="batch", disable=not progress):
        batch = collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
        row_nll, row_tokens = music_lm(batch["input_ids"].to(device), batch["labels"].to(device))
        total_nll += float(row_nll.float().sum())
        total_tokens += int(row_tokens.sum())
    notes = report.get("splits", {}).get(split, {}).get("notes", 0)
    if max_rows is not None and len(rows) < total_rows:
        notes = notes * len(rows) / total_rows  # an estimate: rows hold similar amounts of music
    loss = total_nll / total_tokens if total_tokens else math.nan
    return {"split": split, "rows": len(rows), "tokens": total_tokens, "notes": notes,
            "loss": loss, "perplexity": math.exp(loss) if total_tokens else math.nan,
            "bits_per_note": total_nll / math.log(2) / notes if notes else math.nan,
            "bits_per_token": loss / math.log(2) if total_tokens else math.nan}
