"""The index: one unit vector per piece, with who the piece is and which model made the vector.

On disk an index is a folder of two files, readable without midillm:

- `vectors.npy`: float32 (pieces, hidden size), each piece's raw mean hidden state;
- `index.json`: the format, the model (bundle path, fingerprint of its files, the layer the
  vectors were read at, the precision of the weights) and one record per row: name, path,
  metadata, content hash.

Raw mean hidden states of one model all point much the same way (cosines above 0.99 between
unrelated pieces), so similarity is the cosine after standardising: each dimension minus the
index's mean, over the index's spread. Queries go through the same transform; the transform is
fitted on load, so an index that grows refits it.

A query vector made by another model, or at another layer, lives in another space: the
fingerprint lets every command refuse such a mix in one line rather than return noise.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

INDEX_FORMAT = "midillm-index"
INDEX_FORMAT_VERSION = 1
VECTORS_FILE = "vectors.npy"
INDEX_FILE = "index.json"
# Two results at least this similar are the same music for the diversity option. A copy or a
# transposition scores 1 (the canonical key); on the demo bundle, variants of one Essen song
# score 0.98-0.996 and the nearest distinct chorale or fiddle tune at most 0.979
# (docs/retrieval.md).
NEAR_DUPLICATE_COSINE = 0.98
# How much a disliked piece pulls the taste away, against a liked piece's pull towards it.
DISLIKE_WEIGHT = 0.5


class RetrievalError(ValueError):
    """An index or query that cannot be used (foreign file, other model, empty); one line."""


def content_hash(data: bytes) -> str:
    """The hash that says a piece is unchanged: sha256 of its MIDI bytes (as sources compute it)."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class Index:
    """Raw vectors (one row per piece), the pieces' records, and the model they came from;
    `unit` holds the standardised unit rows that similarity is measured on.

    `model` holds `path` (the bundle), `fingerprint` (`bundle_fingerprint`), `layer` (the hidden
    state the vectors were read at), `dim` and `precision` (the weights they were made with, which
    queries and updates load again; absent in an index from before it was recorded).
    """

    vectors: np.ndarray
    pieces: list[dict]
    model: dict
    _row_of_hash: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.pieces):
            raise RetrievalError(f"{self.vectors.shape[0] if self.vectors.ndim else 0} vectors for "
                                 f"{len(self.pieces)} pieces")
        # With one piece there is no spread to measure: it is compared as it is.
        if len(self.pieces) >= 2:
            self.center = self.vectors.mean(axis=0)
            spread = self.vectors.std(axis=0)
            self.scale = np.where(spread > 1e-6 * max(float(spread.max()), 1e-12), spread, 1.0).astype(np.float32)
        else:
            self.center = np.zeros(self.vectors.shape[1], dtype=np.float32)
            self.scale = np.ones(self.vectors.shape[1], dtype=np.float32)
        self.unit = self._standardized(self.vectors)
        self._row_of_hash = {}
        for row, piece in enumerate(self.pieces):
            self._row_of_hash.setdefault(piece.get("content_hash"), row)

    def __len__(self) -> int:
        return len(self.pieces)

    # ----------------------------------------------------------------------------- files

    @classmethod
    def load(cls, path: str | Path) -> Index:
        """Read an index folder; anything else (a file, another format, a torn write) is one line."""
        path = Path(path)
        if not path.exists():
            raise RetrievalError(f"index not found: {path}")
        if not path.is_dir() or not (path / INDEX_FILE).is_file():
            raise RetrievalError(f"{path} is not a midillm index (a folder written by `midillm embed`)")
        try:
            header = json.loads((path / INDEX_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RetrievalError(f"{path / INDEX_FILE} is not readable JSON: {error}") from error
        if not isinstance(header, dict) or header.get("format") != INDEX_FORMAT:
            raise RetrievalError(f"{path} is not a midillm index ({INDEX_FILE} has another format)")
        if header.get("format_version", 0) > INDEX_FORMAT_VERSION:
            raise RetrievalError(f"{path} was written in index format {header['format_version']}; this midillm "
                                 f"reads format {INDEX_FORMAT_VERSION} at most: upgrade midillm")
        try:
            vectors = np.load(path / VECTORS_FILE, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise RetrievalError(f"{path / VECTORS_FILE} is missing or not a numpy array") from error
        pieces = header.get("pieces") or []
        model = header.get("model") or {}
        if vectors.ndim != 2 or vectors.shape[0] != len(pieces) or vectors.shape[1] != model.get("dim"):
            raise RetrievalError(f"{path}: {VECTORS_FILE} has shape {vectors.shape}, but {INDEX_FILE} lists "
                                 f"{len(pieces)} pieces of dimension {model.get('dim')} (files mixed or torn)")
        return cls(vectors, pieces, model)

    def save(self, path: str | Path) -> Path:
        """Write both files, each through a temporary file and a rename."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RetrievalError(f"{path} is a file; an index is a folder")
        path.mkdir(parents=True, exist_ok=True)
        header = {"format": INDEX_FORMAT, "format_version": INDEX_FORMAT_VERSION,
                  "model": {**self.model, "dim": int(self.vectors.shape[1])}, "pieces": self.pieces}
        self.model = header["model"]
        # The vectors first: a reader that finds a new header with old vectors sees a shape mismatch.
        _write_atomically(path / VECTORS_FILE, lambda stream: np.save(stream, self.vectors, allow_pickle=False))
        _write_atomically(path / INDEX_FILE, lambda stream: stream.write(
            json.dumps(header, ensure_ascii=False, indent=1).encode("utf-8")))
        return path

    # ----------------------------------------------------------------------------- lookups

    def row_of_hash(self, digest: str) -> int | None:
        """The row of a piece with this content hash, if the index holds one."""
        return self._row_of_hash.get(digest)

    def check_model(self, fingerprint: str, layer: int) -> None:
        """Refuse a model (or layer) other than the one that made these vectors."""
        if fingerprint != self.model.get("fingerprint"):
            raise RetrievalError(f"the index was built with another model ({self.model.get('path')}, fingerprint "
                                 f"{str(self.model.get('fingerprint'))[:12]}), not this one ({fingerprint[:12]})")
        if layer != self.model.get("layer"):
            raise RetrievalError(f"the index holds layer {self.model.get('layer')} vectors, not layer {layer}")

    def require_pieces(self) -> None:
        """Refuse to rank an empty index (before any query is embedded)."""
        if not len(self):
            raise RetrievalError("the index holds no pieces: add some with `midillm embed MODEL SOURCE --out INDEX`")

    def _standardized(self, vectors: np.ndarray) -> np.ndarray:
        vectors = (vectors - self.center) / self.scale
        norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
        return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    def _as_query(self, vector: np.ndarray) -> np.ndarray:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.vectors.shape[1]:
            raise RetrievalError(f"a query vector of dimension {vector.shape[0]} does not fit an index of "
                                 f"dimension {self.vectors.shape[1]} (another model)")
        return self._standardized(vector[None])[0]

    # ----------------------------------------------------------------------------- queries

    def similar(self, query: np.ndarray, k: int = 10, diverse: bool = False) -> list[dict]:
        """The `k` pieces nearest a query vector by cosine similarity, best first.

        `diverse`: at most one result from each group of near-duplicates (`NEAR_DUPLICATE_COSINE`).
        """
        self.require_pieces()
        scores = self.unit @ self._as_query(query)
        return self._ranked(scores, k, diverse)

    def recommend(self, likes: list[np.ndarray], dislikes: list[np.ndarray] = (), k: int = 10,
                  diverse: bool = False) -> list[dict]:
        """Pieces for a taste: near what is liked, away from what is disliked.

        A piece scores its mean similarity to the liked pieces minus `DISLIKE_WEIGHT` times its
        mean similarity to the disliked ones. The liked and disliked pieces themselves are never
        recommended, nor is any piece more similar to some disliked piece than to every liked one.
        """
        self.require_pieces()
        if not len(likes):
            raise RetrievalError("recommend needs at least one liked piece")
        liked = np.stack([self._as_query(vector) for vector in likes])
        liked_similarity = self.unit @ liked.T
        scores = liked_similarity.mean(axis=1)
        excluded = np.isclose(liked_similarity, 1.0, atol=1e-5).any(axis=1)
        if len(dislikes):
            disliked = np.stack([self._as_query(vector) for vector in dislikes])
            disliked_similarity = self.unit @ disliked.T
            scores = scores - DISLIKE_WEIGHT * disliked_similarity.mean(axis=1)
            excluded |= np.isclose(disliked_similarity, 1.0, atol=1e-5).any(axis=1)
            excluded |= disliked_similarity.max(axis=1) > liked_similarity.max(axis=1)
        return self._ranked(np.where(excluded, -np.inf, scores), k, diverse)

    def _ranked(self, scores: np.ndarray, k: int, diverse: bool) -> list[dict]:
        if k < 1:
            raise RetrievalError(f"k must be at least 1, not {k}")
        if diverse:
            order = np.argsort(-scores, kind="stable")
        else:
            # A partial sort: at 100,000 rows, argpartition + a sort of k is ~10x a full argsort.
            top = np.argpartition(-scores, min(k, len(scores) - 1))[:k] if len(scores) > k else np.arange(len(scores))
            order = top[np.argsort(-scores[top], kind="stable")]
        chosen: list[int] = []
        hashes: set = set()
        for row in order:
            if len(chosen) == k:
                break
            if not np.isfinite(scores[row]):  # excluded (recommend): never a result
                continue
            if diverse:
                digest = self.pieces[row].get("content_hash")
                if digest in hashes or (chosen and (self.unit[chosen] @ self.unit[row]).max()
                                        >= NEAR_DUPLICATE_COSINE):
                    continue
                hashes.add(digest)
            chosen.append(int(row))
        return [{"rank": rank + 1, "score": float(scores[row]), **self.pieces[row]}
                for rank, row in enumerate(chosen)]


def _write_atomically(path: Path, write) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
        # mkstemp makes the file private (0600); an index is as readable as any file the user writes.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
