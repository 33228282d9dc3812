"""Set-to-set comparison of musical features (MGEval: Yang & Lerch 2020).

For each feature: the *intra-set* distances of the reference (absolute differences between
every two reference pieces; Euclidean distance for the note-length histogram) and the
*inter-set* distances (every generated piece against every reference piece) are each smoothed
with a Gaussian kernel density estimate. The overlapped area (OA, 1 = the same distribution)
and the Kullback-Leibler divergence KL(intra-reference || inter) of the two curves say how far
the generated pieces sit from the reference, measured against how far reference pieces sit
from each other. The ceiling is the same figure for half the reference against the other half.

Differences from MGEval's code, on purpose: both curves are evaluated on one common grid (MGEval
evaluates each KL term on its own range), and the density is a binned KDE (data binned onto
the grid, then convolved with the kernel), which is exact to the grid spacing and fast enough
for ten thousand distances per curve. Bandwidth: Scott's rule, as `scipy.stats.gaussian_kde`.
"""

from __future__ import annotations

import math

import numpy as np

from .features import SCALAR_FEATURES

__all__ = ["COMPARED_FEATURES", "feature_values", "nan_counts", "intra_set_distances", "inter_set_distances",
           "gaussian_kde", "overlap_area", "kl_divergence", "compare_sets", "split_half_ceiling",
           "mean_over_features", "summarise_features"]

GRID_POINTS = 512
COMPARED_FEATURES = SCALAR_FEATURES + ("note_length_histogram",)


def feature_values(features: list[dict], name: str) -> np.ndarray:
    """One feature over a set of pieces; pieces where it is NaN are left out. Shape (n,) or (n, k)."""
    rows = [np.asarray(piece[name], dtype=np.float64) for piece in features]
    rows = [row for row in rows if not np.isnan(row).any()]
    if not rows:
        return np.zeros(0)
    return np.stack(rows)


def nan_counts(features: list[dict], names: tuple[str, ...] = COMPARED_FEATURES) -> dict[str, int]:
    """Per feature: the pieces where it is undefined (NaN), which `feature_values` leaves out.
    A set of one-onset samples has no inter-onset interval: the comparison sees none of them,
    and this count is what says so."""
    return {name: sum(bool(np.isnan(np.asarray(piece[name], dtype=np.float64)).any()) for piece in features)
            for name in names}


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a_i - b_j| for scalars, ||a_i - b_j|| for vectors: an (len(a), len(b)) matrix."""
    difference = a[:, None] - b[None, :]
    return np.abs(difference) if difference.ndim == 2 else np.sqrt((difference ** 2).sum(axis=-1))


def intra_set_distances(values: np.ndarray) -> np.ndarray:
    """Distances between every two pieces of one set (each pair once)."""
    if len(values) < 2:
        return np.zeros(0)
    matrix = _distance(values, values)
    return matrix[np.triu_indices(len(values), k=1)]


def inter_set_distances(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Distances from every piece of one set to every piece of the other."""
    if len(values) == 0 or len(reference) == 0:
        return np.zeros(0)
    return _distance(values, reference).ravel()


def _bandwidth(data: np.ndarray) -> float:
    """Scott's rule (n^-1/5 x standard deviation); a tiny width where all values are equal."""
    spread = float(np.std(data, ddof=1)) if data.size > 1 else 0.0
    width = spread * data.size ** (-0.2)
    return width if width > 0 else 1e-3 * max(1.0, abs(float(np.mean(data))))


def _grid(*samples: np.ndarray) -> np.ndarray:
    margin = 4 * max(_bandwidth(sample) for sample in samples)
    low = min(float(sample.min()) for sample in samples) - margin
    high = max(float(sample.max()) for sample in samples) + margin
    return np.linspace(low, high, GRID_POINTS)


def gaussian_kde(data: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Density of `data` on an evenly spaced `grid` (binned Gaussian KDE, integrates to ~1)."""
    step = grid[1] - grid[0]
    index = np.clip(np.round((data - grid[0]) / step).astype(np.int64), 0, grid.size - 1)
    counts = np.bincount(index, minlength=grid.size).astype(np.float64)
    width = max(_bandwidth(data), step / 2)  # narrower than the grid would alias
    offsets = (grid[:, None] - grid[None, :]) / width
    kernel = np.exp(-0.5 * offsets ** 2) / (width * math.sqrt(2 * math.pi))
    return kernel @ counts / data.size


def overlap_area(a: np.ndarray, b: np.ndarray) -> float:
    """Area under min(KDE(a), KDE(b)): 1 for one distribution, 0 for disjoint ones."""
    if a.size == 0 or b.size == 0:
        return math.nan
    grid = _grid(a, b)
    return float(min(1.0, np.minimum(gaussian_kde(a, grid), gaussian_kde(b, grid)).sum() * (grid[1] - grid[0])))


def kl_divergence(a: np.ndarray, b: np.ndarray) -> float:
    """KL(KDE(a) || KDE(b)) in nats, on a common grid (as scipy.stats.entropy of the two curves)."""
    if a.size == 0 or b.size == 0:
        return math.nan
    grid = _grid(a, b)
    p, q = gaussian_kde(a, grid), gaussian_kde(b, grid)
    p, q = p / p.sum(), q / q.sum()
    keep = p > 0
    # A floor on q: far tails underflow to 0, which would make the divergence infinite.
    return float((p[keep] * np.log(p[keep] / np.maximum(q[keep], 1e-300))).sum())


def compare_sets(reference: list[dict], generated: list[dict],
                 features: tuple[str, ...] = COMPARED_FEATURES) -> dict[str, dict]:
    """Per feature: OA and KL between the reference intra-set and the generated-to-reference
    inter-set distance curves, with those distances' means and standard deviations, and how
    many pieces of each set the feature is defined for (`*_defined`) or not (`*_nan`)."""
    result = {}
    for name in features:
        ref, gen = feature_values(reference, name), feature_values(generated, name)
        intra_ref, intra_gen = intra_set_distances(ref), intra_set_distances(gen)
        inter = inter_set_distances(gen, ref)
        result[name] = {
            "oa": overlap_area(intra_ref, inter),
            "kl": kl_divergence(intra_ref, inter),
            "intra_reference_mean": _mean(intra_ref), "intra_reference_std": _std(intra_ref),
            "intra_generated_mean": _mean(intra_gen), "intra_generated_std": _std(intra_gen),
            "inter_mean": _mean(inter), "inter_std": _std(inter),
            "reference_defined": int(len(ref)), "reference_nan": len(reference) - int(len(ref)),
            "generated_defined": int(len(gen)), "generated_nan": len(generated) - int(len(gen)),
        }
    return result


def split_half_ceiling(reference: list[dict], seed: int = 0,
                       features: tuple[str, ...] = COMPARED_FEATURES) -> dict[str, dict]:
    """The best a model can score: reference half B compared with reference half A."""
    order = np.random.default_rng(seed).permutation(len(reference))
    half = len(reference) // 2
    return compare_sets([reference[i] for i in order[:half]], [reference[i] for i in order[half:]], features)


def mean_over_features(comparison: dict[str, dict], key: str = "oa") -> float:
    """Mean of one figure over the features where it is defined (NaN if none)."""
    values = [entry[key] for entry in comparison.values() if not math.isnan(entry[key])]
    return float(np.mean(values)) if values else math.nan


def summarise_features(features: list[dict]) -> dict[str, dict]:
    """Mean, standard deviation, count of pieces where defined (`n`) and where not (`nan`) of
    each feature over a set."""
    summary = {}
    for name in COMPARED_FEATURES:
        values = feature_values(features, name)
        undefined = len(features) - int(len(values))
        if name == "note_length_histogram":
            summary[name] = {"mean": values.mean(axis=0).tolist() if len(values) else None, "n": len(values),
                             "nan": undefined}
        else:
            summary[name] = {"mean": _mean(values), "std": _std(values), "n": int(len(values)), "nan": undefined}
    return summary


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else math.nan


def _std(values: np.ndarray) -> float:
    return float(np.std(values)) if values.size else math.nan
