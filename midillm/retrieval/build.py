"""Building and updating an index from a SOURCE, embedding queries, and prompts for a taste.

`build_index` reads a source the way `prepare` does (folder, music21 corpus, Hugging Face
dataset; bad files skipped, each with its reason) and embeds only what the index lacks: a piece
whose name and content hash are already there is kept, a piece whose content is already there
under another name reuses that vector, so a re-run over an unchanged source loads no model.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import numpy as np
from symusic import Score

from midillm.decoding.embedding import EmbeddingError, embed_pieces, read_score, resolve_layer
from midillm.model.bundle import Bundle, BundleError
from midillm.tokenization.caption import caption_fields, write_caption
from midillm.tokenization.profile import first_bars
from midillm.tokenization.sources import check_files, list_source

from .adapt import ADAPT_STEPS, adapted_to_taste
from .index import Index, RetrievalError, content_hash


def resolve_bundle(model: str | Path) -> Path:
    """A bundle folder, or a Hub id downloaded to the local cache."""
    try:
        return Bundle.locate(model).path
    except BundleError as error:
        raise RetrievalError(str(error)) from error


def bundle_fingerprint(bundle: str | Path) -> str:
    """sha256 over the files that decide the vectors: the codec config and the weights.

    From the files rather than the loaded parameters, so that it is the same on a CPU that
    loads the model in bf16 and a GPU that loads it in fp16, and costs no model load.
    """
    try:
        bundle = Bundle(bundle).check()
    except BundleError as error:
        raise RetrievalError(str(error)) from error
    weights = sorted(path for pattern in ("*.safetensors", "*.bin") for path in bundle.path.glob(pattern))
    digest = hashlib.sha256()
    for path in [bundle.codec_config, *weights]:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def load_model(bundle: Path, precision: str | None = None):
    """The bundle's model for embedding, in `precision` (an index's recorded one), else in
    `default_precision("embed")`: a float precision, since int8 weights move the vectors."""
    from midillm.decoding.generate import MidiLM
    from midillm.decoding.precision import default_precision

    return MidiLM.from_pretrained(bundle, dtype=precision or default_precision("embed"))


def build_index(model: str | Path, source: str, out: str | Path, layer: int | None = None,
                limit: int | None = None, num_workers: int = 2, progress: bool = True,
                log: Callable[[str], None] = print) -> dict:
    """Embed the pieces of `source` into the index at `out` (created, or updated in place).

    Returns a report: files read, pieces embedded, kept, reused, skipped (name and reason).
    """
    bundle = resolve_bundle(model)
    fingerprint = bundle_fingerprint(bundle)
    out = Path(out)
    index = Index.load(out) if out.exists() else None
    if index is not None and index.model.get("fingerprint") != fingerprint:
        raise RetrievalError(f"{out} was built with another model ({index.model.get('path')}); "
                             "write this model's index to another --out")
    if index is not None and layer is not None and layer != index.model.get("layer"):
        raise RetrievalError(f"{out} holds layer {index.model.get('layer')} vectors, not layer {layer}; "
                             "write another --out for another layer")

    files, unlisted = list_source(source, limit)
    checked, bad = check_files(files, num_workers=num_workers, progress=progress)
    skipped = unlisted + bad
    pieces = [{"name": item.file.name, "path": str(item.file.path), "metadata": dict(item.file.metadata),
               "content_hash": item.content_hash} for item in checked]

    rows_by_name = {piece["name"]: row for row, piece in enumerate(index.pieces)} if index else {}
    kept, reused, to_embed = 0, 0, []
    vectors = dict()  # position in `pieces` -> vector
    for position, piece in enumerate(pieces):
        row = rows_by_name.get(piece["name"])
        if row is not None and index.pieces[row]["content_hash"] == piece["content_hash"]:
            kept += 1
            continue
        same_content = index.row_of_hash(piece["content_hash"]) if index else None
        if same_content is not None:
            vectors[position] = index.vectors[same_content]
            reused += 1
        else:
            to_embed.append(position)

    resolved_layer = index.model["layer"] if index else None
    # An index grows in the precision it was built in (one before the record: the embed default).
    precision = index.model.get("precision") if index else None
    if to_embed or index is None:
        lm = load_model(bundle, precision)
        precision = lm.precision
        resolved_layer = resolve_layer(lm, layer if index is None else index.model["layer"])
        dim = int(lm.model.config.hidden_size)
        for position in _progress(to_embed, progress):
            try:
                vectors[position] = embed_pieces(lm, [pieces[position]["path"]], layer=resolved_layer)[0]
            except EmbeddingError as error:
                skipped.append(_Skip(pieces[position]["name"], str(error)))
    else:
        dim = index.vectors.shape[1]

    old_pieces = list(index.pieces) if index else []
    old_vectors = list(index.vectors) if index else []
    for position, vector in sorted(vectors.items()):
        piece = pieces[position]
        row = rows_by_name.get(piece["name"])
        if row is None:
            old_pieces.append(piece)
            old_vectors.append(vector)
        else:  # the same name with new content: replaced in place
            old_pieces[row], old_vectors[row] = piece, vector
    model_record = {"path": str(model), "fingerprint": fingerprint, "layer": int(resolved_layer), "dim": dim}
    if precision:
        model_record["precision"] = precision
    updated = Index(np.stack(old_vectors) if old_vectors else np.zeros((0, dim), np.float32), old_pieces,
                    model_record)
    updated.save(out)
    embedded = len(vectors) - reused
    for item in skipped:
        log(f"skipped {item.name}: {item.reason}")
    return {"files_read": len(files) + len(unlisted),
            "pieces": len(updated), "embedded": embedded, "kept": kept, "reused": reused,
            "skipped": [{"name": item.name, "reason": item.reason} for item in skipped]}


class _Skip:
    """A piece that read as MIDI but gave no vector (no notes the codec can encode)."""

    def __init__(self, name: str, reason: str):
        self.name, self.reason = name, reason


def _progress(items: list, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc="Embedding", unit="piece", disable=not enabled)


class QueryEmbedder:
    """Vectors for query files in an index's space: the stored vector of a piece the index holds
    (same content hash), else the index's model embeds it, loaded once and only if needed.

    `model` overrides the index's recorded bundle path (a moved bundle, or a Hub copy); its
    fingerprint must match the index's either way.
    """

    def __init__(self, index: Index, model: str | Path | None = None):
        self.index = index
        self.model = model
        self._lm = None

    def _loaded(self):
        if self._lm is None:
            bundle = resolve_bundle(self.model or self.index.model.get("path"))
            self.index.check_model(bundle_fingerprint(bundle), self.index.model.get("layer"))
            # The precision the index's vectors were made in, so that a query lands in their space.
            self._lm = load_model(bundle, self.index.model.get("precision"))
        return self._lm

    def vector(self, query: str | Path | bytes | Score | np.ndarray) -> np.ndarray:
        if isinstance(query, np.ndarray):
            return query
        if isinstance(query, Score):
            return embed_pieces(self._loaded(), [query], layer=self.index.model["layer"])[0]
        if isinstance(query, bytes):
            data = query
        else:
            path = Path(query)
            if not path.is_file():
                raise FileNotFoundError(f"query file not found: {query}")
            data = path.read_bytes()
        row = self.index.row_of_hash(content_hash(data))
        if row is not None:
            return self.index.vectors[row]
        score = read_score(data if isinstance(query, bytes) else path)
        return embed_pieces(self._loaded(), [score], layer=self.index.model["layer"])[0]

    def vectors(self, queries: Iterable) -> list[np.ndarray]:
        # Every file is read (and checked) before the slow model load.
        queries = list(queries)
        for query in queries:
            if isinstance(query, (str, Path)) and not Path(query).is_file():
                raise FileNotFoundError(f"query file not found: {query}")
        return [self.vector(query) for query in queries]


def similar(index: Index, query, k: int = 10, diverse: bool = False, model: str | Path | None = None) -> list[dict]:
    """`Index.similar` for a query file, bytes, Score or vector."""
    index.require_pieces()
    return index.similar(QueryEmbedder(index, model).vector(query), k=k, diverse=diverse)


def recommend(index: Index, likes: Iterable, dislikes: Iterable = (), k: int = 10, diverse: bool = False,
              model: str | Path | None = None) -> list[dict]:
    """`Index.recommend` for liked and disliked files, bytes, Scores or vectors."""
    index.require_pieces()
    embedder = QueryEmbedder(index, model)
    return index.recommend(embedder.vectors(likes), embedder.vectors(dislikes), k=k, diverse=diverse)


# ------------------------------------------------------------------------- generating for a taste

# Caption lines a plain MIDI file cannot say (it names no composer), taken from the corpus's
# typical caption when the prompt's piece lacks them; every other line comes from that piece.
_METADATA_CAPTION_LABELS = ("Composer", "Genre")


# Features that judge a candidate against the liked pieces: rates and means, which do not grow
# with a piece's length (a candidate is a few bars, a liked piece a whole chorale), with MusPy's
# definitions (`midillm.eval.piece_features`).
TASTE_FEATURES = ("pitch_class_entropy", "scale_consistency", "polyphony", "polyphony_rate", "empty_beat_rate",
                  "groove_consistency", "note_density", "mean_ioi")


def taste_features(scores: Iterable[Score]) -> np.ndarray:
    """One row of `TASTE_FEATURES` per score (NaN where a feature is undefined)."""
    from midillm.eval import piece_features

    return np.array([[piece_features(score)[name] for name in TASTE_FEATURES] for score in scores], dtype=float)


class TastePrompt(NamedTuple):
    """What `generate --like` starts from: the prompt, the caption, the liked pieces, and their
    vectors (the model's representation) and `TASTE_FEATURES` (after their opening bars)."""

    prompt: Score
    text: str | None
    pieces: list[Score]
    vectors: np.ndarray
    features: np.ndarray


def taste_prompt(lm, liked: Iterable[str | Path | Score], opening_bars: int = 2) -> TastePrompt:
    """A prompt and caption for new music in the style of the liked pieces.

    The prompt is the opening of the liked piece nearest the taste (the mean of their vectors):
    the most typical of them sets the start. The caption is that piece's own caption without its
    title, so caption and prompt agree as in every training row: the parts it names are the
    parts the prompt plays, and the corpus constraints keep each to its range. What a plain MIDI
    file cannot say (composer, genre) comes from the corpus's typical caption.
    """
    scores = [read_score(piece) for piece in liked]
    if not scores:
        raise ValueError("--like needs at least one MIDI file")
    scores = [lm.codec.in_training_key(score) for score in scores]  # prompted in the key it writes in
    vectors = embed_pieces(lm, scores)
    nearest = int(np.argmax(vectors @ vectors.mean(axis=0)))
    opening = first_bars(scores[nearest], opening_bars)
    own = caption_fields(lm.codec.caption(scores[nearest]))
    typical = caption_fields(lm.typical_text())
    # In the order `score_caption` writes them: metadata first, then the music.
    fields = {label: own.get(label) or typical.get(label) for label in _METADATA_CAPTION_LABELS}
    fields.update((label, value) for label, value in own.items() if label != "Title")
    text = write_caption(fields)
    # The liked pieces' music after the opening the prompt copies, as the candidates are.
    after_opening = [ticks.clip(first_bars(ticks, opening_bars).end(), ticks.end() + 1)
                     for ticks in (score.to("tick") for score in scores)]
    return TastePrompt(opening, text or lm.default_text(None), scores, vectors, taste_features(after_opening))


# Candidates drawn per sample that `generate --like` keeps: the nearest to the taste of each
# `CANDIDATES_PER_SAMPLE`, judged by `TASTE_RANKING` (scripts/bench_like.py measures what each
# choice buys).
CANDIDATES_PER_SAMPLE = 3
TASTE_RANKINGS = ("model", "features", "both")
TASTE_RANKING = "features"


def _standardised(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


def rank_by_taste(lm, candidates: list[Score], taste: TastePrompt, by: str = TASTE_RANKING) -> list[int]:
    """Candidate indices, nearest the taste first.

    by="model": the model's own representation. Mean hidden states all point much the same way,
    so (as an index does with its collection) each dimension is centred and scaled over the
    candidates and the liked pieces together before the cosine to the liked pieces' mean.
    by="features": the distance to the liked pieces' mean in `TASTE_FEATURES` (what a listener
    hears: how busy, how many voices at once, how regular the rhythm, how diatonic), each
    feature scaled by its spread over the candidates and the liked pieces together.
    by="both": the sum of the two, each standardised over the candidates.
    A candidate with nothing to embed or measure comes last.
    """
    if by not in TASTE_RANKINGS:
        raise ValueError(f"ranking by {by!r}: choose one of {', '.join(TASTE_RANKINGS)}")
    nearness = np.zeros(len(candidates))
    usable = np.ones(len(candidates), dtype=bool)
    if by in ("model", "both"):
        vectors = np.zeros((len(candidates), taste.vectors.shape[1]))
        for index, score in enumerate(candidates):
            try:
                vectors[index] = embed_pieces(lm, [score])[0]
            except EmbeddingError:
                usable[index] = False
        if usable.any():
            pool = np.concatenate([vectors[usable], taste.vectors])
            center, spread = pool.mean(axis=0), pool.std(axis=0) + 1e-6
            normalised = (vectors - center) / spread
            liked = ((taste.vectors - center) / spread).mean(axis=0)
            cosines = normalised @ liked / (np.linalg.norm(normalised, axis=1) * np.linalg.norm(liked) + 1e-12)
            nearness[usable] += _standardised(cosines[usable])
    if by in ("features", "both"):
        rows = taste_features(candidates)
        with warnings.catch_warnings():  # a feature no piece defines (one onset: no rhythm) stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            spread = np.nanstd(np.concatenate([rows, taste.features]), axis=0)
            spread = np.where(spread > 0, spread, 1.0)
            distances = np.sqrt(np.nanmean(((rows - np.nanmean(taste.features, axis=0)) / spread) ** 2, axis=1))
        usable &= np.isfinite(distances)
        if usable.any():
            nearness[usable] += _standardised(-distances[usable])
    order = np.argsort(-nearness, kind="stable")
    return [int(index) for index in order if usable[index]] + [int(index) for index in order if not usable[index]]


def generate_for_taste(lm, liked: Iterable[str | Path | Score], num_samples: int = 1, text: str | None = None,
                       settings=None, seed: int | None = 0, candidates_per_sample: int = CANDIDATES_PER_SAMPLE,
                       progress: bool = False, taste: TastePrompt | None = None, rank_by: str = TASTE_RANKING,
                       adapt_steps: int = ADAPT_STEPS, **sampling) -> list[list[int]]:
    """New music for the taste of the liked pieces (`taste_prompt`), prompt + new ids each.

    The model is first adapted to the liked pieces for `adapt_steps` steps (`adapted_to_taste`;
    0: not at all; the loaded model is unchanged afterwards). `candidates_per_sample`
    continuations are drawn for each sample asked and the ones nearest the taste (`rank_by_taste`
    by `rank_by`, on the new music only) are kept; `lm.last_generation` then describes the kept
    ones. `taste`: the liked pieces' `taste_prompt`, if already made. Other keyword arguments go
    to `MidiLM.generate_ids` (programs, constrain...).
    """
    if candidates_per_sample < 1:
        raise ValueError(f"candidates per sample must be at least 1, not {candidates_per_sample}")
    if adapt_steps < 0:
        raise ValueError(f"adaptation steps must be 0 or more, not {adapt_steps}")
    taste = taste or taste_prompt(lm, liked)
    text = text or taste.text
    prompt_ids = lm.prompt_ids(taste.prompt, text)
    with adapted_to_taste(lm, taste.pieces, text, steps=adapt_steps, seed=seed, progress=progress):
        ids = lm.generate_ids(num_samples * candidates_per_sample, taste.prompt, text, settings, seed,
                              progress=progress, **sampling)
    if candidates_per_sample == 1:
        return ids
    # Ranked by the model as loaded, the one that embedded the liked pieces.
    records = list(lm.last_generation)
    continuations = [lm.codec.decode([lm.codec.music_start_id] + row[len(prompt_ids):]) for row in ids]
    kept = rank_by_taste(lm, continuations, taste, by=rank_by)[:num_samples]
    lm.last_generation = [records[index] for index in kept]
    return [ids[index] for index in kept]
