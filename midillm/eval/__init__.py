"""Evaluation: sanity (the headline), likelihood, validity and musical features, set-to-set
comparison, memorisation, report.

    midillm eval MODEL --data DIR --out DIR [-n N] [--samples FOLDER]

`evaluate(EvalConfig(...))` is the command; `evaluate_sets` is its model-free core (sanity,
features, MGEval comparison, memorisation) on lists of `symusic.Score`; `sample_sanity` judges one
piece against a corpus profile.
"""

from .compare import compare_sets, kl_divergence, overlap_area, split_half_ceiling
from .evaluate import EvalConfig, EvalError, evaluate, evaluate_sets, load_scores, shuffle_bars
from .features import piece_features
from .likelihood import held_out_likelihood
from .memorization import TrainingIndex, longest_copy
from .sanity import sample_sanity, sanity_summary
from .validity import token_errors_by_type

__all__ = ["EvalConfig", "EvalError", "TrainingIndex", "compare_sets", "evaluate", "evaluate_sets",
           "held_out_likelihood", "kl_divergence", "load_scores", "longest_copy", "overlap_area",
           "piece_features", "sample_sanity", "sanity_summary", "shuffle_bars", "split_half_ceiling",
           "token_errors_by_type"]
