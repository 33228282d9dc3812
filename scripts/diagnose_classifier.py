"""What gives a set of samples away: the two-sample classifier of `midillm eval`, one feature at a
time (docs/benchmarks.md, "Cheaper steps").

    .venv/bin/python scripts/diagnose_classifier.py runs/demo/eval/metrics.json

For each set an eval judged (the samples with the corpus constraints, the model alone) against
the held-out pieces: the classifier's accuracy on all its features, then for each feature the
accuracy of the same cross-validated classifier seeing that feature alone, with the set's mean
and the held-out pieces' mean and spread. A feature near 0.5 does not tell the sets apart; the
features at the top are what a listener of the corpus would notice first.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def feature_rows(block: dict) -> np.ndarray:
    """One row per piece of an eval set: its classifier features, as `listener.classifier_rows`."""
    from midillm.eval.listener import CLASSIFIER_FEATURES

    return np.array([[{**features, **listening}[name] for name in CLASSIFIER_FEATURES]
                     for features, listening in zip(block["per_piece"], block["listener_per_piece"])],
                    dtype=np.float64)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", help="An eval's metrics.json (`midillm eval ... --out FOLDER`).")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the output quietly
    from midillm.eval.listener import CLASSIFIER_FEATURES
    from midillm.eval.two_sample import two_sample_classifier_accuracy

    try:
        metrics = json.loads(Path(args.metrics).read_text())
        reference = feature_rows(metrics["reference"])
        sets = metrics["sets"]
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {args.metrics} is not the metrics.json of `midillm eval` ({error})", file=sys.stderr)
        return 1
    for name, block in sets.items():
        if "per_piece" not in block or "listener_per_piece" not in block:
            continue
        rows = feature_rows(block)
        print(f"{name}: {len(rows)} pieces against {len(reference)} held-out; all features "
              f"{two_sample_classifier_accuracy(rows, reference):.2f}")
        found = []
        for column, feature in enumerate(CLASSIFIER_FEATURES):
            alone = two_sample_classifier_accuracy(rows[:, column:column + 1], reference[:, column:column + 1])
            found.append((alone, feature, np.nanmean(rows[:, column]), np.nanmean(reference[:, column]),
                          np.nanstd(reference[:, column])))
        print(f"  {'feature':<24} {'alone':>6} {'set mean':>10} {'held-out mean (spread)':>24}")
        for alone, feature, set_mean, reference_mean, spread in sorted(found, key=lambda row: -row[0]):
            print(f"  {feature:<24} {alone:6.2f} {set_mean:10.3f} {reference_mean:12.3f} ({spread:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
