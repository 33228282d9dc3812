"""Does `midillm generate MODEL --like ...` write music closer to the liked pieces than to the corpus?

    .venv/bin/python scripts/bench_like.py --model runs/demo/bach-smollm2 \
        --samples 8 --max-new-tokens 384 --out runs/bench-like [--taste atypical]

The taste: the three busiest chorales (highest note density, among the corpus pieces that are
sane for the corpus): a listener who likes running voices, which the model does not drift to by
itself (its samples are sparser than the corpus). `--taste atypical`: the chorale farthest from
the corpus mean in features and its two nearest. Three runs of `--samples` each:
  like, nearest of K   as `generate --like` draws them: the opening of the liked piece nearest
                       their mean and the caption they share (`taste_prompt`), K continuations
                       per sample, the one nearest the taste in the model's representation kept
  like, one draw each  the same prompt and caption, every draw kept
  default prompt       the model's default caption and no prompt
For each sane sample (`midillm.eval.sanity`) the distance of its features
(`midillm.eval.features`, z-scored by the corpus's spread) to the mean of the liked pieces and to
the corpus mean is measured, on the generated continuation only (the copied opening left out),
against the same features of stretches of the corpus pieces of about the samples' length (bars
3 to 10).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")



def feature_matrix(scores):
    from midillm.eval.features import SCALAR_FEATURES, piece_features

    return np.array([[piece_features(score)[name] for name in SCALAR_FEATURES] for score in scores], dtype=float)


def excerpt(score, first_bar: int, bars: int):
    """Bars `first_bar` ... `first_bar + bars - 1` (from 0) of a score, moved to start at 0: the
    reference pieces are measured on stretches as long as the samples, since counts and ranges
    grow with length."""
    ticks = score.to("tick")
    signature = ticks.time_signatures[0] if len(ticks.time_signatures) else None
    bar = ticks.tpq * (signature.numerator * 4 // signature.denominator if signature else 4)
    return ticks.clip(first_bar * bar, (first_bar + bars) * bar, clip_end=True).shift_time(-first_bar * bar)


def distances(rows, center, spread):
    """Euclidean distance in z-scored features, over the features each row defines."""
    z = (rows - center) / spread
    return np.sqrt(np.nanmean(z ** 2, axis=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="/tmp/demo2/bach-smollm2")
    parser.add_argument("--corpus", default="music21:bach", help="The corpus the model was trained on.")
    parser.add_argument("--corpus-pieces", type=int, default=200)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--taste", choices=("busy", "atypical"), default="busy",
                        help="busy: the three chorales of highest note density; atypical: the chorale farthest "
                             "from the corpus mean in features, and its two nearest.")
    parser.add_argument("--opening-bars", type=int, default=2,
                        help="Bars of the liked piece the prompt copies; the samples are measured after them.")
    parser.add_argument("--bars", type=int, default=8,
                        help="Length of the corpus stretches the samples are compared with (about what "
                             "--max-new-tokens writes).")
    parser.add_argument("--candidates", type=int, default=None,
                        help="Continuations drawn per sample, the nearest to the taste kept (default: generate's).")
    parser.add_argument("--out", default="runs/bench-like")
    arguments = parser.parse_args()

    from symusic import Score

    from midillm.decoding.export import export_score
    from midillm.decoding.generate import MidiLM
    from midillm.eval.features import SCALAR_FEATURES
    from midillm.eval.sanity import sample_sanity, sanity_summary
    from midillm.retrieval import CANDIDATES_PER_SAMPLE, generate_for_taste, taste_prompt
    from midillm.tokenization.sources import list_source

    lm = MidiLM.from_pretrained(arguments.model)
    arguments.candidates = arguments.candidates or CANDIDATES_PER_SAMPLE
    listed, _ = list_source(arguments.corpus, limit=arguments.corpus_pieces)
    # The taste is drawn from the corpus pieces that are sane for it: an instrumental chorale with
    # doubled parts (more notes at an onset than the training split ever has) would make every
    # sample that opens with it "not sane" before the model writes a note.
    files, corpus = [], []
    for file in listed:
        score = Score(str(file.path))
        if sample_sanity(score, lm.codec.corpus)["sane"]:
            files.append(file)
            corpus.append(score)
    features = feature_matrix([excerpt(score, arguments.opening_bars, arguments.bars) for score in corpus])
    center, spread = np.nanmean(features, axis=0), np.nanstd(features, axis=0)
    spread = np.where(spread > 0, spread, 1.0)
    density = list(SCALAR_FEATURES).index("note_density")
    if arguments.taste == "busy":
        # Unsampled by default: the model alone writes fewer notes a beat than the chorales do.
        liked_rows = list(np.argsort(-np.nan_to_num(features[:, density], nan=-np.inf))[:3])
    else:  # the chorale farthest from the corpus mean and its two nearest in feature space
        atypical = int(np.nanargmax(distances(features, center, spread)))
        liked_rows = list(np.argsort(distances(features, features[atypical], spread))[:3])
    liked = [files[row].path for row in liked_rows]
    liked_center = np.nanmean(features[liked_rows], axis=0)
    print(f"Liked: {', '.join(files[row].name for row in liked_rows)} ({len(files)} of {len(listed)} corpus pieces sane)")

    taste = taste_prompt(lm, liked, opening_bars=arguments.opening_bars)
    prompt, caption = taste.prompt, taste.text
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"liked": [files[row].name for row in liked_rows], "caption": caption,
              "features": list(SCALAR_FEATURES), "runs": {}}
    settings = lm.sampling.updated(max_new_tokens=arguments.max_new_tokens)
    runs = {f"like, nearest of {arguments.candidates}": (prompt, caption, arguments.candidates),
            "like, one draw each": (prompt, caption, 1), "default prompt": (None, None, 1)}
    for label, (run_prompt, text, candidates) in runs.items():
        prompt_ids = lm.prompt_ids(run_prompt, text)
        if candidates > 1:  # as `midillm generate --like` draws them
            samples = generate_for_taste(lm, liked, arguments.samples, text, settings, arguments.seed,
                                         candidates_per_sample=candidates, progress=True, taste=taste)
        else:
            samples = lm.generate_ids(arguments.samples, run_prompt, text, settings, seed=arguments.seed, progress=True)
        records = lm.last_generation
        whole = [lm.codec.decode(ids) for ids in samples]
        continuations = [lm.codec.decode([lm.codec.music_start_id] + ids[len(prompt_ids):]) for ids in samples]
        checks = [sample_sanity(score, lm.codec.corpus, record) for score, record in zip(whole, records)]
        sane = [index for index, check in enumerate(checks) if check["sane"]]
        rows = feature_matrix([continuations[index] for index in sane]) if sane else np.zeros((0, len(center)))
        to_liked = distances(rows, liked_center, spread)
        to_corpus = distances(rows, center, spread)
        # Along the line from the corpus mean (0) to the liked pieces' mean (1), in z units: how
        # far the taste moved the samples, apart from how far every sample is from the corpus.
        axis = np.nan_to_num((liked_center - center) / spread)
        offsets = np.nan_to_num((rows - center) / spread)
        along = offsets @ axis / (axis @ axis)
        report["runs"][label] = {
            "mean_position_corpus_0_liked_1": float(np.mean(along)) if sane else None,
            "sanity": sanity_summary(checks), "sane": len(sane),
            "distance_to_liked_mean": float(np.mean(to_liked)) if sane else None,
            "distance_to_corpus_mean": float(np.mean(to_corpus)) if sane else None,
            "closer_to_liked": int((to_liked < to_corpus).sum()),
            "note_density": float(np.nanmean(rows[:, density])) if sane else None,
            "liked_note_density": float(liked_center[density]), "corpus_note_density": float(center[density])}
        for index, score in enumerate(whole):
            export_score(score, out / f"{label.replace(' ', '-').replace(',', '')}-{index:02d}", ["mid", "png"])
        print(label, json.dumps(report["runs"][label]["sanity"].get("sane_share")),
              {key: value for key, value in report["runs"][label].items() if key != "sanity"})
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    print(f"Wrote {out}/report.json and the samples' piano rolls")


if __name__ == "__main__":
    main()
