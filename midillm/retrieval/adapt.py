"""Adapting the model to a taste for a moment: a small LoRA trained on the liked pieces.

A two-bar prompt sets how a piece starts, but after it the model writes what its corpus writes
on average: measured on eight tastes (scripts/bench_like.py), samples drawn from the liked
pieces' opening were closer to the corpus mean than to the liked pieces for 6 of them. A few
optimiser steps on the liked pieces themselves move the model's distribution where the listener
is. The adapter sits on top of the (merged) bundle model only while `adapted_to_taste` is open,
and is removed afterwards: the bundle and the loaded model are unchanged.

A model loaded with int8 weights (the CPU default) cannot be trained through: while the block
is open its int8 layers are float32 Linear layers holding the dequantized weights
(`precision.float_linears`), trained through under bf16 autocast where the hardware has it, as
`midillm train` trains; the int8 layers come back afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from symusic import Score
from tqdm.auto import tqdm

from midillm.decoding.precision import float_linears
from midillm.model.runtime import MusicLM, resolve_mixed_precision
from midillm.tokenization.rows import IGNORE_INDEX

# Measured on the demo bundle (scripts/bench_like.py): 20 steps of 4 rows at 1e-3 with rank 8
# take about two minutes on a 2-core CPU and keep copying from the liked pieces short.
ADAPT_STEPS = 20
ADAPT_LEARNING_RATE = 1e-3
ADAPT_RANK = 8
ADAPT_BATCH = 4
# Rows start every few bars of a liked piece, so that the steps see more than its opening.
_ROW_STRIDE_BARS = 4
# Training rows are cut here (or at the model's context, if shorter): enough for several bars of
# an eight-part chorale, and short enough that a step stays a few seconds on a CPU.
_ROW_TOKENS = 512


def taste_rows(lm, pieces: list[Score], text: str | None) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) rows from the liked pieces: the caption generation will use, then the
    music from every `_ROW_STRIDE_BARS`-th bar on, as many whole bars as fit; loss on music only."""
    head = lm.prompt_ids(None, text)
    budget = min(lm.context_length, _ROW_TOKENS)
    rows = []
    for piece in pieces:
        bars = lm.codec.encode_bars(piece)
        for start in range(0, max(1, len(bars) - 2), _ROW_STRIDE_BARS):
            ids = list(head)
            for bar in bars[start:]:
                if len(ids) + len(bar) > budget:
                    break
                ids += bar
            if len(ids) > len(head):
                rows.append((ids, [IGNORE_INDEX] * len(head) + ids[len(head):]))
    return rows


@contextmanager
def adapted_to_taste(lm, pieces: list[Score], text: str | None, steps: int = ADAPT_STEPS,
                     learning_rate: float = ADAPT_LEARNING_RATE, rank: int = ADAPT_RANK, seed: int | None = 0,
                     progress: bool = False) -> Iterator[list[float]]:
    """Within the block, `lm` samples from its model plus a LoRA trained for `steps` on the liked
    `pieces` under the caption `text`; yields the losses. `steps=0` leaves the model as it is."""
    if steps <= 0:
        yield []
        return
    from peft import LoraConfig, get_peft_model

    rows = taste_rows(lm, pieces, text)
    if not rows:
        yield []
        return
    # An int8 model's layers are float32 while the block is open, trained through under bf16
    # autocast where the hardware has it (as `midillm train` trains).
    with float_linears(lm.model) as widened:
        device = next(lm.model.parameters()).device
        autocast = bool(widened) and resolve_mixed_precision("auto", device) == "bf16"
        with torch.random.fork_rng():
            if seed is not None:
                torch.manual_seed(seed)
            peft_model = get_peft_model(lm.model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                                             target_modules="all-linear"))
        losses = []
        try:
            music = MusicLM(peft_model, lm.codec.music_lm_ids, len(lm.codec.lm_tokenizer))
            parameters = [parameter for parameter in peft_model.parameters() if parameter.requires_grad]
            optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
            generator = np.random.default_rng(seed)
            pad_id = lm.codec.music_end_id
            peft_model.train()
            with torch.enable_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                for _ in tqdm(range(steps), desc="Adapting to the taste", unit="step", disable=not progress):
                    batch = [rows[index] for index in
                             generator.choice(len(rows), min(ADAPT_BATCH, len(rows)), replace=False)]
                    length = max(len(ids) for ids, _ in batch)
                    input_ids = torch.tensor([ids + [pad_id] * (length - len(ids)) for ids, _ in batch])
                    labels = torch.tensor([labels + [IGNORE_INDEX] * (length - len(labels)) for _, labels in batch])
                    attention = torch.tensor([[1] * len(ids) + [0] * (length - len(ids)) for ids, _ in batch])
                    nll, counts = music(input_ids, labels, attention)
                    loss = nll.sum() / counts.sum()
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    losses.append(float(loss.detach()))
            peft_model.eval()
            yield losses
        finally:
            # The LoRA layers were injected into lm.model's own modules: put the originals back.
            peft_model.unload()
