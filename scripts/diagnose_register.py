"""Has the model learned where each part plays? The numbers of docs/bands.md, "What the band
model has learned".

    .venv/bin/python scripts/diagnose_register.py --model runs/band-ab/shift/bundle \
        --data runs/band-ab/shift/data --rows 12

Teacher-forced on the test split (its rows as `prepare` wrote them): at every label token that
holds a pitched note, the model's expected pitch, over the tokens that could write that note's
part (a token with this part or with no part field: the part then comes from the context), is
set beside the pitch written. Per part: the mean pitch written and expected, their spread and
correlation. A model that knows a part's register expects its mean; one that follows the line
also correlates. The corpus constraints cannot fake this: it reads the model's own distribution.

Also the bits each kind of token costs (a compound's kind is its fields joined with "+"), and
its share of the total: where the loss goes.
"""

from __future__ import annotations

import argparse
import collections
import math

import numpy as np


def token_fields(codec) -> tuple[dict[int, int], dict[int, int], dict[int, str]]:
    """Per music LM id: its pitch (pitched notes only), its part, and its kind."""
    pitch_of, part_of, kind_of = {}, {}, {}
    for lm_id in codec.music_lm_ids[:-1]:
        tokens = codec.music_tokens([lm_id])
        for token in tokens:
            field, _, value = token.partition("_")
            if field == "Pitch":
                pitch_of[lm_id] = int(value)
            elif field == "Part":
                part_of[lm_id] = int(value)
        kind_of[lm_id] = "+".join(sorted({token.partition("_")[0] for token in tokens}))
    return pitch_of, part_of, kind_of


def measure(lm, rows, max_rows: int) -> dict:
    """Per part (written pitch, expected pitch) pairs and per kind the bits of each label token."""
    import torch

    codec = lm.codec
    pitch_of, part_of, kind_of = token_fields(codec)
    music = torch.tensor(codec.music_lm_ids)
    column = {int(lm_id): index for index, lm_id in enumerate(music.tolist())}
    pitched = torch.tensor(sorted(pitch_of))
    pitched_columns = torch.tensor([column[lm_id] for lm_id in pitched.tolist()])
    pitches = torch.tensor([pitch_of[lm_id] for lm_id in pitched.tolist()], dtype=torch.float)
    parts = torch.tensor([part_of.get(lm_id, -1) for lm_id in pitched.tolist()])
    registers, bits = collections.defaultdict(list), collections.defaultdict(list)
    for row in range(min(len(rows), max_rows)):
        ids, labels = list(rows[row]["input_ids"]), list(rows[row]["labels"])
        with torch.inference_mode():
            logits = lm.model(torch.tensor([ids])).logits[0].float()[:, music]
        log_probs = torch.log_softmax(logits, -1)
        part = None
        for position in range(1, len(ids)):
            part = part_of.get(ids[position - 1], part)
            target = ids[position]
            if labels[position] == -100 or target not in column:
                continue
            bits[kind_of.get(target, "end")].append(-float(log_probs[position - 1, column[target]]) / math.log(2))
            if target not in pitch_of:
                continue
            target_part = part_of.get(target, part)
            could = (parts == target_part) | (parts == -1)
            chances = torch.softmax(logits[position - 1, pitched_columns[could]], 0)
            registers[target_part].append((pitch_of[target], float((chances * pitches[could]).sum())))
    return {"registers": registers, "bits": bits}


def report(measured: dict) -> str:
    lines = ["| part | notes | pitch written: mean (sd) | expected: mean (sd) | correlation | mean error |",
             "|---|---|---|---|---|---|"]
    for part, pairs in sorted(measured["registers"].items(), key=lambda item: (item[0] is None, item[0] or 0)):
        written, expected = np.array(pairs).T
        correlation = np.corrcoef(written, expected)[0, 1] if len(pairs) > 2 and written.std() > 0 else math.nan
        lines.append(f"| {part} | {len(pairs)} | {written.mean():.1f} ({written.std():.1f}) | "
                     f"{expected.mean():.1f} ({expected.std():.1f}) | {correlation:.2f} | "
                     f"{np.abs(written - expected).mean():.1f} |")
    total = sum(sum(values) for values in measured["bits"].values()) or 1.0  # an oracle costs nothing
    lines += ["", "| token kind | label tokens | bits a token | share of the bits |", "|---|---|---|---|"]
    for kind, values in sorted(measured["bits"].items(), key=lambda item: -sum(item[1])):
        lines.append(f"| {kind} | {len(values)} | {np.mean(values):.2f} | {sum(values) / total:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A bundle written by `midillm train`.")
    parser.add_argument("--data", required=True, help="The `midillm prepare` output it was trained on.")
    parser.add_argument("--rows", type=int, default=12, help="Test rows to read (default: 12).")
    args = parser.parse_args()

    from midillm.decoding.generate import MidiLM
    from midillm.model.data import load_prepared

    lm = MidiLM.from_pretrained(args.model, dtype="fp32")
    _, dataset, _ = load_prepared(args.data)
    split = "test" if len(dataset.get("test", [])) else "validation"
    print(report(measure(lm, dataset[split], args.rows)))


if __name__ == "__main__":
    main()
