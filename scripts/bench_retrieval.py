"""Retrieval precision@10 on a labelled mix of the music21 corpora, and index timings.

    .venv/bin/python scripts/bench_retrieval.py --model runs/demo/bach-smollm2 \
        --per-collection 40 --max-windows 2 --out docs/retrieval-bench.md

For each piece of the mix (Bach chorales, Palestrina, Essen folk songs, Ryan's fiddle tunes) the
other pieces are ranked by cosine similarity (the index's standardised cosine, as `Index.similar`
ranks them), and precision@10 is the share of the 10 nearest from the query's own collection and,
for queries whose composer music21 names, with the same composer. Vectors from:

- the fine-tuned bundle, at several decoder layers (one forward pass reads them all);
- the untrained base with the bundle's new token rows (the same base model and codec, no adapter);
- a feature baseline: MusPy's features as `midillm.eval.features` implements them (MusPy itself is
  not a dependency), plus the pitch-class and note-length histograms, z-scored.

Every piece is moved to the canonical key first (`in_canonical_key`), for all three, so the
comparison is of the same music. Also timed: embedding a piece, and a query against 100,000 vectors.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from harness.load import base_with_rows
from harness.machine import machine
from harness.report import write_json, write_markdown, written_header

warnings.filterwarnings("ignore")

COLLECTIONS = ("bach", "palestrina", "essen", "ryans")


def load_mix(per_collection: int):
    from symusic import Score

    from midillm.tokenization.sources import check_files, list_source

    pieces = []
    for collection in COLLECTIONS:
        files, _ = list_source(f"music21:{collection}", limit=per_collection * 2)
        checked, _ = check_files(files, num_workers=1, progress=False)
        for item in checked[:per_collection]:
            pieces.append({"name": item.file.name, "collection": collection,
                           "composer": item.file.metadata.get("composer"), "score": Score(str(item.file.path))})
    return pieces


def model_vectors(lm, pieces, layers, max_windows, label):
    from tqdm.auto import tqdm

    from midillm.decoding.embedding import embedding_windows, layer_means

    vectors = {layer: [] for layer in layers}
    seconds, tokens = [], []
    for piece in tqdm(pieces, desc=f"Embedding ({label})", unit="piece"):
        start = time.perf_counter()
        means = layer_means(lm, piece["score"], layers, max_windows)
        seconds.append(time.perf_counter() - start)
        tokens.append(sum(len(ids) for ids, _ in embedding_windows(lm, piece["score"])[:max_windows]))
        for layer in layers:
            vectors[layer].append(means[layer])
    return {layer: np.stack(rows) for layer, rows in vectors.items()}, np.array(seconds), np.array(tokens)


def embedding_timing(seconds, tokens) -> dict:
    """What `model_vectors` timed, per piece and per 1000 tokens (pieces differ in length)."""
    return {"seconds_per_piece": float(seconds.mean()),
            "seconds_per_1000_tokens": float(1000 * seconds.sum() / tokens.sum()),
            "tokens_per_piece": float(tokens.mean())}


def feature_vectors(pieces):
    from midillm.decoding.embedding import in_canonical_key
    from midillm.eval.features import SCALAR_FEATURES, piece_features

    rows = []
    for piece in pieces:
        score = in_canonical_key(piece["score"])
        features = piece_features(score)
        pitch_classes = np.zeros(12)
        for track in score.tracks:
            if not track.is_drum and len(track.notes):
                notes = track.notes.numpy()
                pitch_classes += np.bincount(notes["pitch"] % 12, weights=notes["duration"], minlength=12)
        pitch_classes /= max(pitch_classes.sum(), 1e-9)
        rows.append(np.concatenate([[features[name] for name in SCALAR_FEATURES],
                                    features["note_length_histogram"], pitch_classes]).astype(np.float64))
    matrix = np.stack(rows)
    column_means = np.nanmean(matrix, axis=0)
    matrix = np.where(np.isnan(matrix), column_means, matrix)
    return matrix.astype(np.float32)


def standardized_unit(vectors):
    from midillm.retrieval import Index

    return Index(vectors, [{"name": str(row)} for row in range(len(vectors))], {}).unit


def precision_at(unit, labels, k=10):
    """Mean share of the k nearest others with the query's label, over the queries whose label
    at least k other pieces share (a composer of one fiddle tune cannot score; music21 names no
    composer for the Essen songs and most of Ryan's tunes)."""
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1)[:, :k]
    shares = [np.mean([labels[other] == labels[row] for other in nearest[row]])
              for row in range(len(labels)) if labels[row] is not None and labels.count(labels[row]) > k]
    return float(np.mean(shares))


def query_timing(dim: int, count: int = 100_000, queries: int = 20):
    from midillm.retrieval import Index

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    start = time.perf_counter()
    index = Index(vectors, [{"name": f"piece-{row}", "content_hash": str(row)} for row in range(count)], {})
    build = time.perf_counter() - start
    timings = []
    for row in range(queries):
        start = time.perf_counter()
        index.similar(vectors[row], k=10)
        timings.append(time.perf_counter() - start)
    start = time.perf_counter()
    index.similar(vectors[0], k=10, diverse=True)
    diverse = time.perf_counter() - start
    return {"vectors": count, "dim": dim, "load_seconds": build, "query_ms": 1000 * float(np.median(timings)),
            "diverse_query_ms": 1000 * diverse}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/demo/bach-smollm2", help="The fine-tuned bundle (default: the demo's).")
    parser.add_argument("--per-collection", type=int, default=40, help="Pieces from each collection.")
    parser.add_argument("--max-windows", type=int, default=2,
                        help="Windows of the training length read per piece (the opening; CPU time).")
    parser.add_argument("--layers", default="0,5,10,15,20,25,30", help="Hidden states to compare.")
    parser.add_argument("--out", default="docs/retrieval-bench.md", help="Markdown table to write.")
    parser.add_argument("--time-pieces", type=int, default=12,
                        help="Pieces to time the embedding on when the vectors come from the cache.")
    parser.add_argument("--cache", default=None,
                        help="Vectors, reused when present (default: runs/bench-retrieval/vectors-<the bundle's "
                             "fingerprint>.npz, so another bundle never reuses them).")
    arguments = parser.parse_args()

    import torch

    from midillm.decoding.generate import MidiLM
    from midillm.decoding.precision import default_precision

    torch.set_grad_enabled(False)

    layers = [int(value) for value in arguments.layers.split(",")]
    pieces = load_mix(arguments.per_collection)
    collections = [piece["collection"] for piece in pieces]
    composers = [piece["composer"] for piece in pieces]
    print(f"{len(pieces)} pieces: " + ", ".join(f"{name} {collections.count(name)}" for name in COLLECTIONS))

    from midillm.retrieval import bundle_fingerprint

    cache = Path(arguments.cache or f"runs/bench-retrieval/vectors-{bundle_fingerprint(arguments.model)[:12]}.npz")
    stored = dict(np.load(cache)) if cache.is_file() else {}
    results = {}
    lm = MidiLM.from_pretrained(arguments.model, dtype=default_precision("embed"))  # as an index embeds
    depth = lm.model.config.num_hidden_layers
    layers = [layer for layer in layers if layer <= depth]
    timing = {}
    for label in ("fine-tuned", "untrained base"):
        keys = [f"{label}/{layer}" for layer in layers]
        if all(key in stored for key in keys):
            vectors = {layer: stored[f"{label}/{layer}"] for layer in layers}
        else:
            if label == "untrained base":
                lm = MidiLM(base_with_rows(lm.codec), lm.codec, dtype=lm.precision, context_length=lm.context_length)
            vectors, seconds, tokens = model_vectors(lm, pieces, layers, arguments.max_windows, label)
            timing[label] = embedding_timing(seconds, tokens)
            stored.update({f"{label}/{layer}": vectors[layer] for layer in layers})
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, **stored)
        for layer in layers:
            unit = standardized_unit(vectors[layer])
            raw = vectors[layer] / np.linalg.norm(vectors[layer], axis=1, keepdims=True)
            results[(label, layer)] = {
                "collection": precision_at(unit, collections), "composer": precision_at(unit, composers),
                "collection_raw_cosine": precision_at(raw, collections)}
    features = feature_vectors(pieces)
    unit = standardized_unit(features)
    results[("features", None)] = {"collection": precision_at(unit, collections),
                                   "composer": precision_at(unit, composers),
                                   "collection_raw_cosine": float("nan")}
    chance = {"collection": float(np.mean([(collections.count(c) - 1) / (len(pieces) - 1) for c in collections]))}

    # Near-duplicates: how similar the most similar other piece is, at the default layer.
    from midillm.decoding.embedding import resolve_layer
    from midillm.retrieval import NEAR_DUPLICATE_COSINE

    default_layer = resolve_layer(lm, None)
    duplicate_stats = {}
    if ("fine-tuned", default_layer) in results:
        unit = standardized_unit(stored[f"fine-tuned/{default_layer}"])
        similarity = unit @ unit.T
        np.fill_diagonal(similarity, -np.inf)
        nearest_other = similarity.max(axis=1)
        duplicate_stats = {"nearest_other_median": float(np.median(nearest_other)),
                           "nearest_other_p95": float(np.quantile(nearest_other, 0.95)),
                           "nearest_other_max": float(nearest_other.max()),
                           "pairs_at_or_above_near_duplicate_cosine": int((np.triu(similarity, 1) >= NEAR_DUPLICATE_COSINE).sum())}
    if "fine-tuned" not in timing:  # vectors from the cache: time the embedding on a few pieces again
        fine_tuned = MidiLM.from_pretrained(arguments.model)
        sample = pieces[::max(len(pieces) // arguments.time_pieces, 1)][:arguments.time_pieces]
        _, seconds, tokens = model_vectors(fine_tuned, sample, [default_layer], arguments.max_windows, "timing")
        timing["fine-tuned"] = {**embedding_timing(seconds, tokens), "pieces_timed": len(sample)}
    timing["query"] = query_timing(lm.model.config.hidden_size)

    composer_queries = sum(1 for composer in composers if composer and composers.count(composer) > 10)
    # The date, command and machine first: the timings below are this machine's.
    lines = [*written_header(machine()), "",
             f"Retrieval precision@10 on {len(pieces)} music21 pieces ({arguments.per_collection} each of "
             f"{', '.join(COLLECTIONS)}); first {arguments.max_windows} windows of "
             f"{lm.context_length} tokens per piece; chance (collection) {chance['collection']:.2f}. "
             f"Composer: the {composer_queries} queries whose composer music21 names for more than 10 pieces.", "",
             "| vectors | layer | P@10 collection | P@10 composer | P@10 collection, raw cosine |",
             "|---|---|---|---|---|"]
    for (label, layer), values in results.items():
        raw_cosine = values["collection_raw_cosine"]
        marker = " (default)" if layer == default_layer and label != "features" else ""
        lines.append(f"| {label if label != 'features' else 'MusPy-style features'} | "
                     f"{'-' if layer is None else f'{layer}/{depth}{marker}'} | {values['collection']:.3f} | "
                     f"{values['composer']:.3f} | "
                     f"{'-' if raw_cosine != raw_cosine else format(raw_cosine, '.3f')} |")
    lines += ["", "Timings (on the hardware above):", ""]
    for label, values in timing.items():
        lines.append(f"- {label}: " + ", ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                                                for key, value in values.items()))
    if duplicate_stats:
        lines.append(f"- nearest other piece at layer {default_layer} (standardised cosine): "
                     + ", ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                                 for key, value in duplicate_stats.items()))
    text = "\n".join(lines) + "\n"
    print(text)
    out = write_markdown(arguments.out, text)
    write_json(out.with_suffix(".json"),
               {"results": {f"{label}/{layer}": values for (label, layer), values in results.items()},
                "timing": timing, "near_duplicates": duplicate_stats, "chance": chance})


if __name__ == "__main__":
    main()
