"""Does real music pass the sanity check? Each piece of a corpus judged, leave-one-out, against
the corpus profile of all the others, in excerpts as long as a sample.

    .venv/bin/python scripts/sanity_calibration.py tests/data/band-midi --bars 8 --out runs/sanity-calibration
    .venv/bin/python scripts/sanity_calibration.py music21:bach --pieces 40 --bars 8 --out runs/sanity-calibration-bach

A check that the corpus's own pieces fail is a bug in the number, not a fault of the model
(DESIGN.md, "Judging the music"): the sane share of a model's samples means something only beside
the sane share of real music judged the same way. An evaluation's held-out pieces are few (three
for a 41-tune band folder) and whole (55 bars against a sample's 7), and a check on a maximum over
a piece (the most notes at one onset, the widest pitch) fails a long piece more often than a short
one. So here every piece is held out in turn (its profile measured on the others, read as
`prepare` reads them: moved to the common key unless `--no-common-key`) and judged in excerpts of
`--bars` bars from its first onset on (at most `--excerpts` per piece, spread over the piece), the
length of an evaluation's samples. SOURCE is what `midillm prepare` reads (a folder, `music21:bach`);
`--pieces N` holds out only N pieces spread over the corpus (each still judged against all the
others), for corpora where measuring the profile once a piece takes too long; `--in-sample` judges
each piece against the profile of all of them instead (the ceiling of a model that wrote its
training excerpts exactly). Prints the sane
share and each reason's count; writes OUT/calibration.json with every excerpt's reasons.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from harness.report import write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="What `midillm prepare` reads: a folder of MIDI files, music21:bach...")
    parser.add_argument("--pieces", type=int, default=None,
                        help="Hold out only this many pieces, spread over the corpus (default: every one).")
    parser.add_argument("--bars", type=int, default=8, help="Bars per excerpt: about a sample's length (default: 8).")
    parser.add_argument("--excerpts", type=int, default=4, help="Excerpts judged per piece (default: 4).")
    parser.add_argument("--no-common-key", action="store_true",
                        help="Judge the pieces in their own keys (as `prepare --no-common-key` reads them).")
    parser.add_argument("--in-sample", action="store_true",
                        help="Judge every piece against the profile of all of them, itself included: what a model "
                             "that wrote its training excerpts exactly would score (default: leave-one-out).")
    parser.add_argument("--out", type=Path, help="Folder for calibration.json (default: print only).")
    args = parser.parse_args(argv)

    from symusic import Score

    from midillm.eval.sanity import REASONS, sample_sanity
    from midillm.tokenization.profile import excerpts, measure_corpus
    from midillm.tokenization.sources import SourceError, list_source
    from midillm.tokenization.tonality import in_common_key

    try:
        files, _ = list_source(args.source)
    except SourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if len(files) < 2:
        print(f"error: {args.source} holds {len(files)} MIDI file(s); leave-one-out needs two or more", file=sys.stderr)
        return 1
    scores = []
    for file in tqdm(files, desc="Reading", unit="piece"):
        score = Score(str(file.path))
        scores.append(score if args.no_common_key else in_common_key(score, dict(file.metadata))[0])
    held_out = range(len(files)) if not args.pieces or args.pieces >= len(files) else sorted(
        {round(i * (len(files) - 1) / max(args.pieces - 1, 1)) for i in range(args.pieces)})
    judged, reasons = [], Counter()
    whole = measure_corpus(scores) if args.in_sample else None
    for index in tqdm(held_out, desc="In sample" if args.in_sample else "Leave-one-out", unit="piece"):
        path, score = files[index].path, scores[index]
        profile = whole or measure_corpus(scores[:index] + scores[index + 1:])
        for window, excerpt in excerpts(score, args.bars, args.excerpts):
            check = sample_sanity(excerpt, profile)
            reasons.update(check["reasons"])
            judged.append({"piece": Path(path).name, "excerpt": window, "sane": check["sane"], "reasons": check["reasons"],
                           **{measure: check[measure] for measure in (
                               "notes", "onsets", "max_notes_per_onset", "pitches_out_of_range",
                               "parts_out_of_density")}})
    sane = sum(item["sane"] for item in judged)
    names = [Path(files[index].path).name for index in held_out]
    pieces_sane = sum(all(item["sane"] for item in judged if item["piece"] == name) for name in names)
    print(f"{len(names)} of {len(files)} pieces judged, {len(judged)} excerpts of {args.bars} bars, each against "
          + ("the profile of all the pieces" if args.in_sample else "the others' profile"))
    print(f"sane: {sane}/{len(judged)} excerpts ({sane / len(judged):.0%}); pieces with every excerpt sane: "
          f"{pieces_sane}/{len(names)}")
    for reason in REASONS:
        if reasons[reason]:
            print(f"  {reasons[reason]:4d}  {reason}: {REASONS[reason]}")
    if args.out:
        write_json(args.out / "calibration.json", {
            "source": args.source, "bars": args.bars, "pieces": len(files), "held_out": len(names),
            "in_sample": args.in_sample,
            "excerpts": len(judged), "sane": sane,
            "sane_share": sane / len(judged), "pieces_all_sane": pieces_sane,
            "reasons": {reason: reasons[reason] for reason in REASONS if reasons[reason]}, "judged": judged})
    return 0


if __name__ == "__main__":
    sys.exit(main())
