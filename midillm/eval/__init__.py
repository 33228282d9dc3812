"""Evaluation: sanity (the floor), listener measures (harmony on the beat, voice leading, a
classifier two-sample test), likelihood, validity and musical features, set-to-set comparison,
memorisation, report.

    midillm eval MODEL --data DIR --out DIR [-n N] [--samples FOLDER]

`evaluate(EvalConfig(...))` is the command; `evaluate_sets` is its model-free core (sanity,
features, MGEval comparison, memorisation) on lists of `symusic.Score`; `sample_sanity` judges one
piece against a corpus profile; `chord_on_beat_share`, `parallel_motion`, `rests_inside_voices` and
`two_sample_classifier_accuracy` are the listener measures.
"""

from .compare import compare_sets, kl_divergence, overlap_area, split_half_ceiling
from .evaluate import EvalConfig, EvalError, evaluate, evaluate_sets, load_scores, shuffle_bars
from .features import piece_features
from .harmony import chord_on_beat_share
from .likelihood import held_out_likelihood
from .memorization import TrainingIndex, longest_copy
from .sanity import sample_sanity, sanity_summary
from .two_sample import two_sample_classifier_accuracy
from .validity import token_errors_by_type
from midillm.tokenization.voice_leading import parallel_motion, rests_inside_voices

__all__ = ["EvalConfig", "EvalError", "TrainingIndex", "chord_on_beat_share", "compare_sets", "evaluate",
           "evaluate_sets", "held_out_likelihood", "kl_divergence", "load_scores", "longest_copy", "overlap_area",
           "parallel_motion", "piece_features", "rests_inside_voices", "sample_sanity", "sanity_summary",
           "shuffle_bars", "split_half_ceiling", "token_errors_by_type", "two_sample_classifier_accuracy"]
