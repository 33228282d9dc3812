"""A classifier two-sample test: can a classifier tell two sets of pieces apart?

Each piece is a vector of features; an L2-regularised logistic regression learns to tell set A
from set B, and its cross-validated accuracy is the figure: 0.5 when the sets cannot be told
apart (the samples are as the held-out pieces are, as far as these features see), 1.0 when
every piece gives its set away (Lopez-Paz & Oquab 2017, "Revisiting classifier two-sample tests").

The logistic regression is written here in numpy (Newton's method on the penalised
log-likelihood, as scikit-learn's default `LogisticRegression(C=1)` fits it): scikit-learn is no
dependency of `midillm eval`. The sets are balanced (the larger one subsampled) so that 0.5 is
chance; each fold standardises, and fills undefined (NaN) features, from its training part only,
and a feature that is undefined in some pieces also gives the classifier a column saying where.
Stratified k-fold cross-validation (k = 5, or fewer for small sets) is repeated over several
subsamples and fold splits and averaged: on a few dozen pieces one split is a noisy figure.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MIN_PIECES", "FOLDS", "REPEATS", "fit_logistic_regression", "predict_logistic_regression",
           "two_sample_classifier_accuracy"]

# Below this many pieces in a set, a fold's test part would hold no piece of it.
MIN_PIECES = 4
FOLDS = 5
REPEATS = 10
# The inverse strength of the L2 penalty (scikit-learn's C): the default, which keeps a dozen
# weights from fitting noise on a few dozen pieces.
INVERSE_PENALTY = 1.0


def fit_logistic_regression(x: np.ndarray, y: np.ndarray, inverse_penalty: float = INVERSE_PENALTY,
                            iterations: int = 50) -> tuple[np.ndarray, float]:
    """Weights and intercept minimising sum of log-losses + ||w||^2 / (2 C) (intercept not
    penalised), by Newton's method; labels `y` are 0 or 1."""
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    penalty = np.full(d + 1, 1.0 / inverse_penalty)
    penalty[-1] = 0.0
    theta = np.zeros(d + 1)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -30, 30)))
        gradient = design.T @ (p - y) + penalty * theta
        # A tiny ridge on the intercept too keeps the Hessian invertible for separable sets.
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta[:-1], float(theta[-1])


def predict_logistic_regression(x: np.ndarray, weights: np.ndarray, intercept: float) -> np.ndarray:
    """Predicted labels (0 or 1)."""
    return (x @ weights + intercept > 0).astype(np.int64)


def _prepare(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaN with the training mean, add a where-undefined column for each feature that is
    undefined anywhere, standardise by the training part's mean and spread."""
    undefined = np.isnan(np.vstack([train, test])).any(axis=0)
    means = np.array([np.nanmean(column) if not np.isnan(column).all() else 0.0 for column in train.T])

    def fill(values):
        missing = np.isnan(values)
        return np.hstack([np.where(missing, means, values), missing[:, undefined].astype(np.float64)])

    train, test = fill(train), fill(test)
    centre, spread = train.mean(axis=0), train.std(axis=0)
    spread[spread == 0] = 1.0  # a constant column carries nothing; keep it at 0
    return (train - centre) / spread, (test - centre) / spread


def _stratified_folds(labels: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """A fold number for each piece: each class dealt round the folds in a random order."""
    assignment = np.empty(labels.size, dtype=np.int64)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        assignment[members] = np.arange(members.size) % folds
    return assignment


def two_sample_classifier_accuracy(features_a, features_b, seed: int = 0, folds: int = FOLDS,
                                   repeats: int = REPEATS) -> float:
    """Cross-validated accuracy of telling set A from set B by their feature vectors (one row
    per piece, NaN where a feature is undefined): 0.5 = cannot tell them apart. NaN when either
    set has fewer than `MIN_PIECES` pieces."""
    a, b = np.asarray(features_a, dtype=np.float64), np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or min(len(a), len(b)) < MIN_PIECES:
        return math.nan
    rng = np.random.default_rng(seed)
    size = min(len(a), len(b))
    folds = min(folds, size)
    labels = np.repeat([0, 1], size)
    accuracies = []
    for _ in range(repeats):
        x = np.vstack([a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)]])
        assignment = _stratified_folds(labels, folds, rng)
        correct = 0
        for fold in range(folds):
            test = assignment == fold
            train_x, test_x = _prepare(x[~test], x[test])
            weights, intercept = fit_logistic_regression(train_x, labels[~test])
            correct += int((predict_logistic_regression(test_x, weights, intercept) == labels[test]).sum())
        accuracies.append(correct / labels.size)
    return float(np.mean(accuracies))
