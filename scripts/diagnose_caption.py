"""How much a trained model reads one caption field: the bits its true value saves on the music
that follows, against the field's other values (docs/control.md, "What the model reads of its
caption").

    .venv/bin/python scripts/diagnose_caption.py runs/demo/bach-smollm2 --data runs/demo/data --field Key

For each held-out piece (the validation and test splits of a `midillm prepare` output; the first
piece of each row), the music's NLL is measured under its own caption and under the same caption
with the field set to each other value the splits' captions hold (Key: C major <-> A minor on a
common-key corpus). A model that obeys the field saves bits with the true value on most pieces;
one that ignores it saves about none, and sampling then writes the field's value by chance.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def first_pieces(dataset, codec, splits=("validation", "test")) -> list[tuple[str, list[int], list[int]]]:
    """(caption text, music ids, music labels) of the first piece of each row of the splits: the
    caption before the row's first `<music>`, the music up to its `</music>` (or the row's end);
    a row whose first piece is cut before the next piece's caption is skipped."""
    pieces = []
    for split in splits:
        if split not in dataset:
            continue
        for row in dataset[split]:
            ids, labels = list(row["input_ids"]), list(row["labels"])
            if codec.music_start_id not in ids:
                continue
            start = ids.index(codec.music_start_id)
            caption_start = max((index + 1 for index in range(start) if ids[index] == codec.music_end_id), default=0)
            end = ids.index(codec.music_end_id, start) + 1 if codec.music_end_id in ids[start:] else len(ids)
            if codec.music_start_id in ids[start + 1:end]:
                continue  # a piece cut by the context, then the next one's caption: no clean end
            text = codec.lm_tokenizer.decode(ids[caption_start:start], skip_special_tokens=True)
            pieces.append((text, ids[start:end], labels[start:end]))
    return pieces


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="A trained bundle (the folder `midillm train` wrote).")
    parser.add_argument("--data", required=True, help="The `midillm prepare` output it was trained on.")
    parser.add_argument("--field", default="Key", help="The caption field to vary (default: Key).")
    parser.add_argument("--max-pieces", type=int, default=64, help="At most this many held-out pieces.")
    parser.add_argument("--value", action="append", default=[],
                        help="Also try this value of the field (repeatable), e.g. a key no held-out piece is in.")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)

    import torch

    from midillm.decoding.generate import MidiLM
    from midillm.eval.likelihood import _Plain
    from midillm.model.data import load_prepared
    from midillm.model.runtime import MusicLM
    from midillm.tokenization.caption import caption_fields, caption_ids, with_fields

    try:
        lm = MidiLM.from_pretrained(args.model, dtype=torch.float32)
        _, dataset, _ = load_prepared(Path(args.data))
    except Exception as error:  # noqa: BLE001 - one line for the user, whatever failed to load
        print(f"error: {error}", file=sys.stderr)
        return 1
    codec = lm.codec
    pieces = [piece for piece in first_pieces(dataset, codec) if caption_fields(piece[0]).get(args.field)]
    pieces = pieces[: args.max_pieces]
    values = sorted({caption_fields(text)[args.field] for text, _, _ in pieces} | set(args.value))
    if len(values) < 2:
        print(f"error: the held-out captions hold {len(values)} value(s) of {args.field!r}: nothing to vary",
              file=sys.stderr)
        return 1
    music_lm = MusicLM(_Plain(lm.model), codec.music_lm_ids, len(codec.lm_tokenizer),
                       music_only_head=codec.render == "tokens")
    saved = defaultdict(list)  # true value -> bits saved against the mean of the other values
    best = defaultdict(list)   # true value -> whether it is the most likely of all values
    with torch.inference_mode():
        for text, music, labels in pieces:
            own = caption_fields(text)[args.field]
            nll = {}
            for value in values:
                prefix = caption_ids(codec.lm_tokenizer, with_fields(text, {args.field: value}))
                ids = torch.tensor([prefix + music])
                row_labels = torch.tensor([[-100] * len(prefix) + labels])
                row_nll, _ = music_lm(ids, row_labels)
                nll[value] = float(row_nll.sum()) / math.log(2)
            others = [nll[value] for value in values if value != own]
            saved[own].append(sum(others) / len(others) - nll[own])
            best[own].append(nll[own] == min(nll.values()))
    print(f"{args.model}: the caption's {args.field} line, {len(pieces)} held-out pieces, values {values}")
    print(f"| true {args.field} | pieces | bits saved by the true value (mean) | pieces where it is the most likely |")
    print("|---|---|---|---|")
    for value in values:
        if saved[value]:
            print(f"| {value} | {len(saved[value])} | {sum(saved[value]) / len(saved[value]):+.2f} "
                  f"| {sum(best[value])} of {len(best[value])} |")
    every = [bits for bits_list in saved.values() for bits in bits_list]
    print(f"all: {sum(every) / len(every):+.2f} bits a piece; the true value most likely on "
          f"{sum(sum(flags) for flags in best.values())} of {len(every)} (chance: 1 in {len(values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
