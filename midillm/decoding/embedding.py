"""One vector per piece from a fine-tuned bundle: the mean of a decoder layer's hidden states
over the piece's music tokens.

The piece is read the way training rows were written (`chunk_piece`): the caption, `<music>`,
then the music cut at bar lines into windows of the training length, so a long piece is seen in
contexts the model knows. Every window starts with the same caption, the corpus's typical one,
not the piece's own: its own caption names the composer and the key, and a vector that read
them would retrieve by metadata (and move with a transposition) instead of by the music. The
caption and `<music>` positions are left out of the mean for the same reason; every music
token counts once, whichever window it fell in.

Transposition: a piece and its copy a tone higher are the same music to a listener, but share
no pitch token, and the mean of the hidden states follows the pitch tokens. So each piece is
first moved to a canonical key: its estimated tonic (Krumhansl-Kessler key profiles, which
rotate with the piece) becomes C, at the octave that brings its mean pitch nearest
`CANONICAL_MEAN_PITCH`. A transposed copy lands on exactly the same notes, and so on the same
vector; what is left to compare is the music itself (intervals, harmony, rhythm, texture).

Which layer: the last layer is shaped for predicting the next token, the early ones for the
token itself; a layer part-way up holds the most about the piece (measured in
scripts/bench_retrieval.py, see docs/retrieval.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from symusic import Score
from tqdm.auto import tqdm

from midillm.tokenization.rows import chunk_piece
from midillm.tokenization.tonality import estimate_key, pitch_weights, transposed

# Where the vector is read, as a share of the decoder's depth (0 = the token embeddings,
# 1 = the last layer): the best of the layers measured on the demo bundle.
DEFAULT_LAYER_DEPTH = 0.5


# Middle of the range where the canonical key puts a piece's mean pitch (E4): the middle of
# the ranges the corpora are written in, so few notes are moved out of a codec's pitch range.
CANONICAL_MEAN_PITCH = 64


class EmbeddingError(ValueError):
    """A piece that cannot be embedded (no music tokens, unreadable); one line for the user."""


def decoder_depth(lm) -> int:
    """The number of decoder layers (hidden states are numbered 0 = embeddings ... depth)."""
    return int(lm.model.config.num_hidden_layers)


def resolve_layer(lm, layer: int | None) -> int:
    """A hidden-state number in [0, depth]: None -> the default depth, negative -> from the top."""
    depth = decoder_depth(lm)
    if layer is None:
        return round(DEFAULT_LAYER_DEPTH * depth)
    resolved = depth + 1 + layer if layer < 0 else layer
    if not 0 <= resolved <= depth:
        raise ValueError(f"layer must be between {-depth - 1} and {depth} for this model, not {layer}")
    return resolved


def canonical_transposition(score: Score) -> int:
    """The shift in semitones that puts the piece in C (major or minor: its estimated tonic,
    `tonality.estimate_key`) at the octave that brings its mean pitch nearest
    `CANONICAL_MEAN_PITCH`. Any transposed copy gets the same canonical notes."""
    key, notes = estimate_key(score), pitch_weights(score)
    if key is None:
        return 0
    tonic = key[0]
    pitch, weight = notes
    mean_pitch = float(np.average(pitch, weights=weight))
    octaves = round((CANONICAL_MEAN_PITCH - mean_pitch + tonic) / 12)
    return 12 * octaves - tonic


def in_canonical_key(score: Score) -> Score:
    """A copy of the score moved by `canonical_transposition` (drum tracks stay as they are)."""
    return transposed(score, canonical_transposition(score))


def embedding_windows(lm, score: Score) -> list[tuple[list[int], int]]:
    """The piece as model inputs: (ids, number of leading ids that are not music) per window."""
    codec = lm.codec
    score = in_canonical_key(score)
    caption_text = lm.typical_text()  # the same neutral caption for every piece, not one piece's
    caption = codec.lm_tokenizer(caption_text.strip() + "\n", add_special_tokens=False).input_ids \
        if caption_text else []
    bars = codec.encode_bars(score)
    if not any(bars):
        raise EmbeddingError("the piece has no notes the model's codec can encode")
    windows = chunk_piece(caption, bars, codec.music_start_id, codec.music_end_id, lm.context_length)
    # The `</music>` that closes the last window says where the piece ends, not what it is.
    return [(ids[:-1] if ids[-1] == codec.music_end_id else ids, head) for ids, head in windows]


@torch.inference_mode()
def layer_means(lm, score: Score, layers: Iterable[int], max_windows: int | None = None) -> dict[int, np.ndarray]:
    """The mean hidden state over the music tokens at each hidden-state number in `layers`
    (one forward pass per window serves them all), in float32. `max_windows` reads only the
    piece's first windows (a quicker, opening-only vector for very long pieces)."""
    layers = sorted(set(layers))
    decoder = lm.model.get_decoder()
    sums = {layer: None for layer in layers}
    count = 0
    for ids, head in embedding_windows(lm, score)[:max_windows]:
        if len(ids) <= head:
            continue
        output = decoder(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False)
        for layer in layers:
            window_sum = output.hidden_states[layer][0, head:].float().sum(dim=0)
            sums[layer] = window_sum if sums[layer] is None else sums[layer] + window_sum
        count += len(ids) - head
    if not count:
        raise EmbeddingError("the piece has no notes the model's codec can encode")
    return {layer: (total / count).numpy().astype(np.float32) for layer, total in sums.items()}


def read_score(piece: Score | str | Path | bytes) -> Score:
    """A Score from a Score, MIDI bytes or a MIDI path; a file that `prepare` would skip (not
    MIDI, truncated, empty, no notes) is one line saying why."""
    if isinstance(piece, Score):
        return piece
    if isinstance(piece, bytes):
        try:
            return Score.from_midi(piece)
        except Exception as error:  # symusic reports a bad file as RuntimeError in its own words
            raise EmbeddingError(f"the MIDI bytes are not a readable MIDI file ({type(error).__name__})") from error
    from midillm.tokenization.sources import MidiFile, Skipped, check_midi_file

    path = Path(piece)
    if not path.is_file():
        raise FileNotFoundError(f"MIDI file not found: {piece}")
    checked = check_midi_file(MidiFile(path, str(piece), {}))
    if isinstance(checked, Skipped):
        raise EmbeddingError(f"{piece}: {checked.reason}")
    return Score(str(path))


def embed_pieces(lm, pieces: Iterable[Score | str | Path | bytes], layer: int | None = None,
                 progress: bool = False, max_windows: int | None = None) -> np.ndarray:
    """One float32 vector per piece (rows of an (n, hidden size) array): the raw mean hidden state.

    Raw, not unit-length: mean hidden states of one model all point much the same way (cosines
    above 0.99 between unrelated pieces), so they are compared after subtracting a collection's
    mean and scaling each dimension by its spread (`midillm.retrieval.Index` does so).
    """
    pieces = list(pieces)
    resolved = resolve_layer(lm, layer)
    vectors = [layer_means(lm, read_score(piece), [resolved], max_windows)[resolved]
               for piece in tqdm(pieces, desc="Embedding", unit="piece", disable=not progress)]
    if not vectors:
        return np.zeros((0, lm.model.config.hidden_size), dtype=np.float32)
    return np.stack(vectors)
