"""Retrieval: one vector per piece from a fine-tuned bundle, an index of them, similar pieces,
recommendations for a taste, and prompts that generate for it.

    midillm embed MODEL SOURCE --out INDEX
    midillm similar INDEX QUERY.mid [-k 10]
    midillm recommend INDEX --likes A.mid B.mid [--dislikes C.mid] [-k 10]
    midillm generate MODEL --like A.mid B.mid --out DIR

In Python: `MidiLM.embed(pieces)` gives the vectors; `Index.load(path)` reads an index, whose
`similar(vector)` / `recommend(likes, dislikes)` rank its pieces; `similar(index, "q.mid")` and
`recommend(index, likes=[...])` embed query files first (or reuse the stored vector of a piece
the index already holds).
"""

from .adapt import ADAPT_STEPS, adapted_to_taste
from .build import (CANDIDATES_PER_SAMPLE, TASTE_FEATURES, TASTE_RANKING, TASTE_RANKINGS, QueryEmbedder, TastePrompt,
                    build_index, bundle_fingerprint, generate_for_taste, rank_by_taste, recommend, resolve_bundle,
                    similar, taste_features, taste_prompt)
from .index import DISLIKE_WEIGHT, NEAR_DUPLICATE_COSINE, Index, RetrievalError, content_hash

__all__ = ["ADAPT_STEPS", "CANDIDATES_PER_SAMPLE", "DISLIKE_WEIGHT", "Index", "NEAR_DUPLICATE_COSINE", "QueryEmbedder", "RetrievalError",
           "TASTE_FEATURES", "TASTE_RANKING", "TASTE_RANKINGS", "TastePrompt", "adapted_to_taste", "build_index", "bundle_fingerprint",
           "content_hash", "generate_for_taste", "rank_by_taste", "recommend", "resolve_bundle", "similar",
           "taste_features", "taste_prompt"]
