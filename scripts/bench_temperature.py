"""How the sampling temperature changes the music: voices that rest or overlap, distance to the corpus.

    .venv/bin/python scripts/bench_temperature.py --model runs/demo/bach-smollm2 \
        --temperatures 1.0 0.85 0.7 0.6 --samples 16 --out runs/bench-temperature

For each temperature (top-p and the rest: the bundle's), `--samples` samples are drawn from the
default prompt (a training piece's caption, drawn by the seed) with the corpus constraints, from
one seed. Measured:
- sane share (`midillm.eval.sanity`), first;
- within each part (a chorale's voice is one line), the share of neighbouring notes with a rest
  between them and the share that overlap (a note still sounding when the voice's next one
  starts); Bach's chorales have about 1% and 0%;
- the distance of each sample's features (`midillm.eval.features`, z-scored by the corpus's spread)
  to the corpus mean, against stretches of the corpus as many bars long as the sample (median
  over samples: one sample with a long silence can dominate a mean), and the features furthest off.
Piano rolls of the first four samples of each temperature are written to `--out`.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from harness.report import write_json
from harness.stretches import Stretches, add_corpus_arguments, bars_spanned, distances, feature_matrix, sane_corpus

warnings.filterwarnings("ignore")


def voice_joins(scores) -> dict:
    """Shares of neighbouring notes within a part with a rest between them / overlapping."""
    rests = overlaps = pairs = 0
    for score in scores:
        for track in score.to("quarter").tracks:
            notes = sorted((note.time, note.time + note.duration) for note in track.notes)
            for (onset, end), (next_onset, _) in zip(notes, notes[1:]):
                if next_onset <= onset:  # notes struck together in one part: a chord, not a line
                    continue
                pairs += 1
                rests += next_onset - end > 1e-3
                overlaps += end - next_onset > 1e-3
    return {"pairs": pairs, "rest_share": rests / pairs if pairs else float("nan"),
            "overlap_share": overlaps / pairs if pairs else float("nan")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/demo/bach-smollm2")
    add_corpus_arguments(parser)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.85, 0.7, 0.6])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench-temperature")
    arguments = parser.parse_args()

    from midillm.decoding.export import export_score
    from midillm.decoding.generate import MidiLM
    from midillm.eval.features import SCALAR_FEATURES
    from midillm.eval.sanity import sample_sanity, sanity_summary

    lm = MidiLM.from_pretrained(arguments.model)
    _, corpus = sane_corpus(arguments.corpus, arguments.corpus_pieces, lm.codec.corpus)
    # From bar 3 on, as scripts/bench_like.py measures: past the pick-up and opening.
    reference = Stretches(corpus, opening_bars=2)

    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": arguments.model, "samples": arguments.samples, "corpus": voice_joins(corpus), "runs": {}}
    print(f"corpus ({len(corpus)} chorales): rests between a voice's notes {report['corpus']['rest_share']:.1%}, "
          f"overlaps {report['corpus']['overlap_share']:.1%}")
    for temperature in arguments.temperatures:
        settings = lm.sampling.updated(max_new_tokens=arguments.max_new_tokens, temperature=temperature)
        ids = lm.generate_ids(arguments.samples, None, None, settings, seed=arguments.seed, progress=True)
        records = list(lm.last_generation)
        scores = [lm.codec.decode(row) for row in ids]
        checks = [sample_sanity(score, lm.codec.corpus, record) for score, record in zip(scores, records)]
        z = []
        for score in scores:
            _, center, spread = reference.of(bars_spanned(score))
            z.append((feature_matrix([score])[0] - center) / spread)
        z = np.array(z)
        distance = distances(z, 0.0, 1.0)  # z is already in the corpus's units
        mean_z = np.nanmean(z, axis=0)
        furthest = np.argsort(-np.abs(mean_z))[:4]
        run = {"temperature": temperature, "top_p": settings.top_p, "sanity": sanity_summary(checks),
               **voice_joins(scores), "median_distance_to_corpus": float(np.median(distance)),
               "mean_feature_z": dict(zip(SCALAR_FEATURES, mean_z.tolist())),
               "median_feature_z": dict(zip(SCALAR_FEATURES, np.nanmedian(z, axis=0).tolist()))}
        report["runs"][str(temperature)] = run
        for index, score in enumerate(scores[:4]):
            export_score(score, out / f"temperature-{temperature}-{index:02d}", ["mid", "png"])
        print(f"temperature {temperature}: sane {run['sanity']['sane']}/{run['sanity']['samples']}  rests "
              f"{run['rest_share']:.1%}  overlaps {run['overlap_share']:.1%}  median distance to corpus "
              f"{run['median_distance_to_corpus']:.2f}  furthest off: "
              + ", ".join(f"{SCALAR_FEATURES[index]} {mean_z[index]:+.2f}" for index in furthest), flush=True)
    write_json(out / "report.json", report)
    print(f"Wrote {out}/report.json and piano rolls")


if __name__ == "__main__":
    main()
