"""Does `midillm generate MODEL --like ...` write music closer to the liked pieces than to the corpus?

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_like.py --model /tmp/demo2/bach-smollm2 \
        --samples 8 --max-new-tokens 384 --out runs/bench-like

The taste: the chorale whose features lie farthest from the corpus mean, and its two nearest
chorales in feature space (a listener who likes one unusual kind of chorale). Samples are drawn
as `generate --like` draws them (`taste_prompt`: the opening of the liked piece nearest their mean,
the caption they share) and, for comparison, with the default prompt. For each sane sample
(`midillm.eval.sanity`) the distance of its features (`midillm.eval.features`, z-scored by the
corpus's spread) to the mean of the liked pieces and to the corpus mean is measured, on the
generated continuation only (the copied opening left out).
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
    parser.add_argument("--out", default="runs/bench-like")
    arguments = parser.parse_args()

    from symusic import Score

    from midillm.decoding.export import export_score
    from midillm.decoding.generate import MidiLM
    from midillm.eval.features import SCALAR_FEATURES
    from midillm.eval.sanity import sample_sanity, sanity_summary
    from midillm.retrieval import taste_prompt
    from midillm.tokenization.sources import list_source

    files, _ = list_source(arguments.corpus, limit=arguments.corpus_pieces)
    corpus = [Score(str(file.path)) for file in files]
    features = feature_matrix(corpus)
    center, spread = np.nanmean(features, axis=0), np.nanstd(features, axis=0)
    spread = np.where(spread > 0, spread, 1.0)
    atypical = int(np.nanargmax(distances(features, center, spread)))
    to_atypical = distances(features, features[atypical], spread)
    liked_rows = list(np.argsort(to_atypical)[:3])
    liked = [files[row].path for row in liked_rows]
    liked_center = np.nanmean(features[liked_rows], axis=0)
    print("Liked: " + ", ".join(files[row].name for row in liked_rows))

    lm = MidiLM.from_pretrained(arguments.model)
    prompt, caption = taste_prompt(lm, liked)
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"liked": [files[row].name for row in liked_rows], "caption": caption,
              "features": list(SCALAR_FEATURES), "runs": {}}
    for label, (run_prompt, text) in {"like": (prompt, caption), "default prompt": (None, None)}.items():
        prompt_ids = lm.prompt_ids(run_prompt, text)
        samples = lm.generate_ids(arguments.samples, run_prompt, text,
                                  lm.sampling.updated(max_new_tokens=arguments.max_new_tokens),
                                  seed=arguments.seed, progress=True)
        whole = [lm.codec.decode(ids) for ids in samples]
        continuations = [lm.codec.decode([lm.codec.music_start_id] + ids[len(prompt_ids):]) for ids in samples]
        checks = [sample_sanity(score, lm.codec.corpus, record) for score, record in zip(whole, lm.last_generation)]
        sane = [index for index, check in enumerate(checks) if check["sane"]]
        rows = feature_matrix([continuations[index] for index in sane]) if sane else np.zeros((0, len(center)))
        to_liked = distances(rows, liked_center, spread)
        to_corpus = distances(rows, center, spread)
        report["runs"][label] = {
            "sanity": sanity_summary(checks), "sane": len(sane),
            "distance_to_liked_mean": float(np.mean(to_liked)) if sane else None,
            "distance_to_corpus_mean": float(np.mean(to_corpus)) if sane else None,
            "closer_to_liked": int((to_liked < to_corpus).sum())}
        for index, score in enumerate(whole):
            export_score(score, out / f"{label.replace(' ', '-')}-{index:02d}", ["mid", "png"])
        print(label, json.dumps(report["runs"][label]["sanity"].get("sane_share")),
              {key: value for key, value in report["runs"][label].items() if key != "sanity"})
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    print(f"Wrote {out}/report.json and the samples' piano rolls")


if __name__ == "__main__":
    main()
