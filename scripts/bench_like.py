"""Does `midillm generate MODEL --like ...` write music closer to the liked pieces than to the corpus?

    .venv/bin/python scripts/bench_like.py --model runs/demo/bach-smollm2 \
        --samples 8 --max-new-tokens 384 --out runs/bench-like

Tastes (three liked pieces each, among the corpus pieces that are sane for it):
  busy            the three of highest note density: the orchestral chorales (trumpets, timpani,
                  continuo over the choir), a texture the model does not drift to by itself
  atypical        the chorale farthest from the corpus mean in features, and its two nearest
  neighbours-N    `--neighbourhoods` listeners who each like a chorale drawn at random and its two
                  nearest in features: a taste for one corner of the corpus
For each taste, `--samples` x K continuations are drawn once as `generate --like` draws them: from
the model adapted to the liked pieces for `--adapt-steps` steps (`adapted_to_taste`; 0: not
adapted), prompted with the opening of the liked piece nearest their mean and its caption without
the title (`taste_prompt`). `--samples` of them are kept four ways:
  one draw each   the first `--samples` (no choosing)
  by model        nearest the taste in the model's representation (`rank_by_taste(by="model")`)
  by features     nearest in `TASTE_FEATURES` (`by="features"`)
  by both         the sum of the two (`by="both"`)
plus, once, `--samples` from the default prompt (a training piece's caption drawn by the seed, no prompt music),
and a ceiling: the liked chorales' own later bars (Bach's continuation of them), in stretches as
long as the kept samples, after the stretch the liked mean is measured on.
For each sane sample (`midillm.eval.sanity`) the distance of its features (all of
`midillm.eval.features`' scalar features, z-scored by the corpus's spread: more than the ranking
uses) to the mean of the liked pieces and to the corpus mean is measured, on the generated
continuation only (the copied opening left out), against the same features of stretches of the
corpus pieces as many bars long as that continuation, from bar 3 on (counts and ranges grow
with length: a 4-bar sample has fewer pitches than an 8-bar stretch of any chorale). Copying:
the longest stretch of a sample's continuation found verbatim (transposed or not) in a liked
piece (`midillm.eval.memorization.longest_copy`), in bars.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from harness.report import write_json
from harness.stretches import (Stretches, add_corpus_arguments, bars_spanned, distances, excerpt, feature_matrix,
                                sane_corpus)

warnings.filterwarnings("ignore")


def tastes(features, center, spread, density, neighbourhoods, seed):
    """{name: the corpus rows of the three liked pieces}."""
    chosen = {"busy": list(np.argsort(-np.nan_to_num(features[:, density], nan=-np.inf))[:3])}
    atypical = int(np.nanargmax(distances(features, center, spread)))
    chosen["atypical"] = list(np.argsort(distances(features, features[atypical], spread))[:3])
    for number, row in enumerate(np.random.default_rng(seed).choice(len(features), neighbourhoods, replace=False)):
        chosen[f"neighbours-{number + 1}"] = list(np.argsort(distances(features, features[row], spread))[:3])
    return chosen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/demo/bach-smollm2")
    add_corpus_arguments(parser)
    parser.add_argument("--samples", type=int, default=8, help="Samples kept per taste and way of keeping.")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--neighbourhoods", type=int, default=6,
                        help="Tastes for a random chorale and its two nearest, besides busy and atypical.")
    parser.add_argument("--only", nargs="*", default=None, help="Measure only these tastes (busy, atypical, neighbours-N).")
    parser.add_argument("--opening-bars", type=int, default=2,
                        help="Bars of the liked piece the prompt copies; the samples are measured after them.")
    parser.add_argument("--bars", type=int, default=8,
                        help="Length of the corpus stretches the tastes are chosen on.")
    parser.add_argument("--candidates", type=int, default=None,
                        help="Continuations drawn per sample kept (default: generate --like's).")
    parser.add_argument("--adapt-steps", type=int, default=None,
                        help="Steps of adaptation to the liked pieces before drawing (default: generate --like's).")
    parser.add_argument("--temperature", type=float, default=None, help="Sampling temperature (default: the bundle's).")
    parser.add_argument("--top-p", type=float, default=None, help="Nucleus sampling share (default: the bundle's).")
    parser.add_argument("--out", default="runs/bench-like")
    arguments = parser.parse_args()

    from midillm.decoding.export import export_score
    from midillm.decoding.generate import MidiLM
    from midillm.eval.features import SCALAR_FEATURES
    from midillm.eval.sanity import sample_sanity, sanity_summary
    from midillm.eval.memorization import TrainingIndex, longest_copy
    from midillm.retrieval import (ADAPT_STEPS, CANDIDATES_PER_SAMPLE, TASTE_RANKING, adapted_to_taste,
                                   rank_by_taste, taste_prompt)

    lm = MidiLM.from_pretrained(arguments.model)
    candidates = arguments.candidates or CANDIDATES_PER_SAMPLE
    adapt_steps = ADAPT_STEPS if arguments.adapt_steps is None else arguments.adapt_steps
    # The tastes are drawn from the corpus pieces that are sane for it (see `sane_corpus`).
    files, corpus = sane_corpus(arguments.corpus, arguments.corpus_pieces, lm.codec.corpus)
    # A sample is compared with corpus stretches as long as itself, after the opening the prompt copies.
    reference = Stretches(corpus, arguments.opening_bars)
    features, center, spread = reference.of(arguments.bars)
    density = list(SCALAR_FEATURES).index("note_density")
    chosen = tastes(features, center, spread, density, arguments.neighbourhoods, arguments.seed)
    if arguments.only:
        chosen = {name: rows for name, rows in chosen.items() if name in arguments.only}
    settings = lm.sampling.updated(max_new_tokens=arguments.max_new_tokens, temperature=arguments.temperature,
                                   top_p=arguments.top_p)
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": arguments.model, "features": list(SCALAR_FEATURES), "candidates": candidates,
              "default_ranking": TASTE_RANKING, "adapt_steps": adapt_steps, "samples": arguments.samples,
              "temperature": settings.temperature, "top_p": settings.top_p, "tastes": {}}

    def compare(pieces, liked_rows):
        """Where `pieces` (continuations, or stretches of real chorales) lie between the corpus
        mean and the liked pieces' mean, each against reference stretches as long as itself."""
        to_liked, to_corpus, along, densities, sample_z, liked_z = [], [], [], [], [], []
        for piece in pieces:
            row = feature_matrix([piece])
            rows, center, spread = reference.of(bars_spanned(piece))
            liked_center = np.nanmean(rows[liked_rows], axis=0)
            to_liked.append(distances(row, liked_center, spread)[0])
            to_corpus.append(distances(row, center, spread)[0])
            # Along the line from the corpus mean (0) to the liked pieces' mean (1), in z units:
            # how far the taste moved the sample, apart from how far it is from the corpus.
            axis = np.nan_to_num((liked_center - center) / spread)
            along.append(float(np.nan_to_num((row[0] - center) / spread) @ axis / (axis @ axis)))
            densities.append(row[0, density])
            sample_z.append((row[0] - center) / spread)
            liked_z.append((liked_center - center) / spread)
        to_liked, to_corpus = np.array(to_liked), np.array(to_corpus)
        measured = bool(pieces)
        return {"distance_to_liked_mean": float(np.mean(to_liked)) if measured else float("nan"),
                "distance_to_corpus_mean": float(np.mean(to_corpus)) if measured else float("nan"),
                "closer_to_liked": int((to_liked < to_corpus).sum()),
                "mean_position_corpus_0_liked_1": float(np.mean(along)) if measured else float("nan"),
                "note_density": float(np.nanmean(densities)) if measured else float("nan"),
                # Per feature, in the corpus's z units: where the samples and the liked pieces lie
                # relative to the corpus mean (what pulls a taste's samples one way or the other).
                "feature_z_samples": np.nanmean(sample_z, axis=0).tolist() if measured else None,
                "feature_z_liked": np.nanmean(liked_z, axis=0).tolist() if measured else None,
                "bars": [bars_spanned(piece) for piece in pieces]}

    def measure(whole, continuations, records, liked_rows, copies):
        checks = [sample_sanity(score, lm.codec.corpus, record) for score, record in zip(whole, records)]
        sane = [index for index, check in enumerate(checks) if check["sane"]]
        return {"sane": len(sane), "samples": len(whole), "sanity": sanity_summary(checks),
                **compare([continuations[index] for index in sane], liked_rows),
                "longest_copy_bars": [round(copies[index], 2) for index in sane],
                "copying_more_than_4_bars": int(sum(copies[index] > 4 for index in sane))}

    def bach_later_bars(liked_rows, bars):
        """The ceiling: the liked chorales' own later bars, in stretches of `bars` bars after the
        stretch the liked mean is measured on. Would Bach's own continuation of the liked pieces
        come out closer to their mean than to the corpus's?"""
        stretches = []
        for row in liked_rows:
            for first in range(arguments.opening_bars + bars, bars_spanned(corpus[row]) - bars + 1, bars):
                stretches.append(excerpt(corpus[row], first, bars))
        return {"sane": len(stretches), "samples": len(stretches), **compare(stretches, liked_rows)}

    default_ids = lm.generate_ids(arguments.samples, None, None, settings, seed=arguments.seed, progress=True)
    default_records = list(lm.last_generation)
    default_prompt = lm.prompt_ids(None, lm.default_text(None, arguments.seed))  # the caption that seed drew
    default_whole = [lm.codec.decode(ids) for ids in default_ids]
    default_continuations = [lm.codec.decode([lm.codec.music_start_id] + ids[len(default_prompt):]) for ids in default_ids]
    for index, score in enumerate(default_whole):
        export_score(score, out / f"default-prompt-{index:02d}", ["mid", "png"])

    for name, liked_rows in chosen.items():
        liked = [files[row].path for row in liked_rows]
        liked_center = np.nanmean(features[liked_rows], axis=0)
        taste = taste_prompt(lm, liked, opening_bars=arguments.opening_bars)
        prompt_ids = lm.prompt_ids(taste.prompt, taste.text)
        # As `generate_for_taste` draws them: one batch of samples x K from the same seed.
        with adapted_to_taste(lm, taste.pieces, taste.text, steps=adapt_steps, seed=arguments.seed,
                              progress=True) as losses:
            drawn = lm.generate_ids(arguments.samples * candidates, taste.prompt, taste.text, settings,
                                    seed=arguments.seed, progress=True)
        records = list(lm.last_generation)
        whole = [lm.codec.decode(ids) for ids in drawn]
        continuations = [lm.codec.decode([lm.codec.music_start_id] + ids[len(prompt_ids):]) for ids in drawn]
        liked_index = TrainingIndex([corpus[row] for row in liked_rows], [files[row].name for row in liked_rows])
        copies = [longest_copy(score, liked_index)["bars"] for score in continuations]
        default_copies = [longest_copy(score, liked_index)["bars"] for score in default_continuations]
        kept = {"one draw each": list(range(arguments.samples))}
        for ranking in ("model", "features", "both"):
            kept[f"by {ranking}"] = rank_by_taste(lm, continuations, taste, by=ranking)[:arguments.samples]
        entry = {"liked": [files[row].name for row in liked_rows], "caption": taste.text,
                 "liked_note_density": float(liked_center[density]), "adaptation_losses": losses, "runs": {}}
        for label, indices in kept.items():
            entry["runs"][label] = measure([whole[i] for i in indices], [continuations[i] for i in indices],
                                           [records[i] for i in indices], liked_rows, [copies[i] for i in indices])
            for position, index in enumerate(indices[:4]):
                export_score(whole[index], out / f"{name}-{label.replace(' ', '-')}-{position:02d}", ["mid", "png"])
        entry["runs"]["default prompt"] = measure(default_whole, default_continuations, default_records, liked_rows,
                                                  default_copies)
        kept_bars = entry["runs"][f"by {TASTE_RANKING}"]["bars"]
        entry["runs"]["Bach's later bars"] = bach_later_bars(liked_rows, int(np.median(kept_bars)) if kept_bars else 4)
        report["tastes"][name] = entry
        print(f"{name}: liked {', '.join(entry['liked'])} (note density {entry['liked_note_density']:.2f})")
        for label, run in entry["runs"].items():
            print(f"  {label:14s} sane {run['sane']}/{run['samples']}  to liked {run['distance_to_liked_mean']:.2f}  "
                  f"to corpus {run['distance_to_corpus_mean']:.2f}  closer {run['closer_to_liked']}/{run['sane']}  "
                  f"position {run['mean_position_corpus_0_liked_1']:.2f}  density {run['note_density']:.2f}  "
                  f"copy max {max(run.get('longest_copy_bars', []), default=0):.1f} bars", flush=True)
    labels = list(next(iter(report["tastes"].values()))["runs"]) if report["tastes"] else []
    report["summary"] = {}
    for label in labels:
        runs = [entry["runs"][label] for entry in report["tastes"].values()]
        report["summary"][label] = {
            "tastes_closer_on_average": sum(run["distance_to_liked_mean"] < run["distance_to_corpus_mean"] for run in runs),
            "samples_closer": sum(run["closer_to_liked"] for run in runs), "sane": sum(run["sane"] for run in runs),
            "samples": sum(run["samples"] for run in runs),
            "copying_more_than_4_bars": sum(run.get("copying_more_than_4_bars", 0) for run in runs),
            "mean_distance_to_liked": float(np.nanmean([run["distance_to_liked_mean"] for run in runs])),
            "mean_distance_to_corpus": float(np.nanmean([run["distance_to_corpus_mean"] for run in runs]))}
        summary = report["summary"][label]
        print(f"{label:14s} tastes closer {summary['tastes_closer_on_average']}/{len(runs)}  samples closer "
              f"{summary['samples_closer']}/{summary['sane']}  sane {summary['sane']}/{summary['samples']}  "
              f"to liked {summary['mean_distance_to_liked']:.2f}  to corpus {summary['mean_distance_to_corpus']:.2f}  "
              f"copying > 4 bars {summary['copying_more_than_4_bars']}")
    write_json(out / "report.json", report)
    print(f"Wrote {out}/report.json and piano rolls of the first kept samples")


if __name__ == "__main__":
    main()
