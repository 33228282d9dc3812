"""Time the model-free part of `midillm eval` on real music: features, MGEval comparison (with
the split-half ceiling) and memorisation, for 100 "generated" pieces against 100 reference
pieces, with 100 more as the training set for the memorisation index.

    .venv/bin/python scripts/bench_eval.py [--pieces 100]

The pieces are Bach chorales from the music21 corpus (`music21:bach`, converted once and
cached by midillm's sources): chorales 0-99 stand in for samples, 100-199 are the reference,
200-299 the training set. Loading the files is timed apart from the evaluation.
"""

from __future__ import annotations

import argparse
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=100, help="Pieces per set (default: 100).")
    arguments = parser.parse_args()
    warnings.filterwarnings("ignore")

    from midillm.eval import evaluate_sets, load_scores
    from midillm.tokenization.sources import list_source

    n = arguments.pieces
    files, _ = list_source("music21:bach", limit=3 * n + 20)
    files = files[: 3 * n]
    if len(files) < 3 * n:
        raise SystemExit(f"music21:bach gave only {len(files)} pieces; need {3 * n}")
    started = time.perf_counter()
    scores, names = load_scores([file.path for file in files])
    loaded = time.perf_counter() - started
    generated, reference, training = scores[:n], scores[n:2 * n], scores[2 * n:3 * n]
    started = time.perf_counter()
    result = evaluate_sets({"generated": generated}, reference, training, names[2 * n:3 * n])
    seconds = time.perf_counter() - started
    notes = sum(score.note_num() for score in scores)
    entry = result["sets"]["generated"]
    print(f"loaded {len(scores)} MIDI files ({notes:,} notes) in {loaded:.2f} s")
    print(f"evaluated {n} samples against {n} reference pieces (+{n} training pieces) in {seconds:.2f} s")
    print("  " + ", ".join(f"{step} {value:.2f} s" for step, value in result["seconds"].items()))
    print(f"  mean OA {entry['mean_oa']:.3f} (ceiling {result['reference']['ceiling_mean_oa']:.3f}), "
          f"mean KL {entry['mean_kl']:.3f}; longest copy {entry['memorization']['longest_bars_max']:.1f} bars, "
          f"share copying > 4 bars {entry['memorization']['share_copying']:.2f}")


if __name__ == "__main__":
    main()
