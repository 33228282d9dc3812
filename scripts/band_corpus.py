"""A prepared band corpus, checked: round trip, roles, and the corpus's own pieces judged as samples.

    .venv/bin/python scripts/band_corpus.py --data runs/band/data

`--data` is a `midillm prepare` output of a folder of multi-track General MIDI files (docs/bands.md
says where real ones come from: Debian's game music packages). For every piece `prepare` used it
reports the share of notes that come back from decode(encode(x)) with their pitch, onset,
duration, program and drum flag (after the tokenizer's own quantisation), whether each part
keeps its program and drum flag, each part's name or role, and the corpus's per-role limits
(longest rest, notes per beat) with the sane share of its own pieces: a check of the measure.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections import Counter
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="A `midillm prepare` output folder.")
    parser.add_argument("--out", default=None, help="Also write the result here as JSON.")
    arguments = parser.parse_args()
    warnings.filterwarnings("ignore")

    from symusic import Score

    from midillm.eval.sanity import sample_sanity
    from midillm.tokenization.caption import part_names
    from midillm.tokenization.prepared import PreparedData
    from midillm.tokenization.roundtrip import notes_kept

    prepared = PreparedData(arguments.data)
    codec = prepared.load_codec()
    pieces = prepared.read_report()["pieces"]
    totals, reasons, sane = Counter(), Counter(), Counter()
    rows = []
    for piece in pieces:
        score = Score(piece["path"])
        kept, notes = notes_kept(codec, score, durations=True)
        decoded = codec.decode(codec.encode(score))
        # In the codec's part order (by role, where it numbers parts so: the bass and drums last).
        asked = [-1 if track.is_drum else int(track.program) for track in codec.in_part_order(score).tracks
                 if track.note_num()]
        written = [-1 if track.is_drum else int(track.program) for track in decoded.tracks if track.note_num()]
        check = sample_sanity(score, codec.corpus)
        totals.update(pieces=1, notes=notes, kept=kept, parts=len(asked), drum_parts=asked.count(-1),
                      drum_parts_back=written.count(-1), parts_same=sum(a == b for a, b in zip(asked, written)))
        sane[piece["split"]] += check["sane"]
        reasons.update(f"{piece['split']}: {reason}" for reason in check["reasons"])
        rows.append({"piece": Path(piece["path"]).name, "split": piece["split"], "notes": notes, "kept": kept,
                     "parts": part_names(score), "sane": check["sane"], "reasons": check["reasons"]})
    splits = Counter(piece["split"] for piece in pieces)
    result = {"data": arguments.data, **totals, "kept_share": totals["kept"] / max(totals["notes"], 1),
              "pieces_with_drums": sum(-1 in [-1 if track.is_drum else 0 for track in Score(piece["path"]).tracks
                                              if track.note_num()] for piece in pieces),
              "role_rest_beats": codec.corpus.role_rest_beats, "role_notes_per_beat": codec.corpus.role_notes_per_beat,
              "sane": {split: f"{sane[split]}/{count}" for split, count in splits.items()},
              "insane_reasons": dict(reasons), "pieces_checked": rows}
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if arguments.out:
        Path(arguments.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
