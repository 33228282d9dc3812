"""Prepared rows on their way into a `MusicLM`: loading a `prepare` folder, checking its labels,
batching its rows. Training and the held-out likelihood read the data the same way."""

from __future__ import annotations

from pathlib import Path

import torch

from midillm.errors import ConfigError
from midillm.tokenization.rows import IGNORE_INDEX
from midillm.tokenization.prepared import PreparedData


class Collate:
    """Rows -> a batch of int64 tensors, cut to `seq_len` and then to the last position any row
    labels (picklable for DataLoader workers).

    The second cut is free compute: attention is causal, so a position after a row's last label
    cannot change its loss, and the padding that fills a prepared row to its length (a fifth of
    a chorale's row of 512) would otherwise cost a fifth of every step."""

    def __init__(self, seq_len: int):
        self.seq_len = seq_len

    def __call__(self, rows):
        input_ids = torch.stack([torch.as_tensor(row["input_ids"][: self.seq_len]) for row in rows]).long()
        labels = torch.stack([torch.as_tensor(row["labels"][: self.seq_len]) for row in rows]).long()
        labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero()
        length = int(labelled[-1]) + 1 if len(labelled) else labels.shape[1]
        return {"input_ids": input_ids[:, :length], "labels": labels[:, :length]}


def label_tokens(batch) -> torch.Tensor:
    """Tokens that carry loss (labels are predicted from the position before them)."""
    return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()


def load_prepared(data_dir: str | Path):
    """The codec, the dataset splits and the prepare report of a `midillm prepare` folder."""
    return PreparedData(data_dir).load(name="data_dir")


def check_labels(split, music_lm_ids: list[int], name: str, most_rows: int | None = None) -> int:
    """Every label must be a music row for the music-only head; returns the label-token count of
    the rows checked. With `most_rows`, only that many rows are checked, spread evenly over the
    split: a codec that does not match its data shows in any row, and reading a million rows of
    a Lakh-sized train split would hold up the start of training by minutes."""
    import numpy as np

    allowed = np.asarray(sorted(music_lm_ids))
    if most_rows is None or len(split) <= most_rows:
        batches = (split[start:start + 1024]["labels"] for start in range(0, len(split), 1024))
    else:
        rows = np.linspace(0, len(split) - 1, most_rows).round().astype(int)
        batches = (split[rows[start:start + 1024]]["labels"] for start in range(0, len(rows), 1024))
    count = 0
    for batch in batches:
        labels = np.asarray(batch)[:, 1:]
        labels = labels[labels != IGNORE_INDEX]
        count += labels.size
        if allowed.size and not np.isin(labels, allowed).all():
            bad = labels[~np.isin(labels, allowed)][0]
            raise ConfigError(f"the {name} split has label id {bad}, which is not a music token of the codec; "
                              "set music_only_head=false or re-run `midillm prepare`")
    return count
