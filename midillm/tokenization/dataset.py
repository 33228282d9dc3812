"""`midillm prepare`: a corpus source -> codec + packed `datasets` splits + a report.

Steps (`prepare`, top to bottom): list the source, check every file in worker processes (bad
ones skipped with a reason), drop duplicates by content hash, split by hash (stable when files
are added), measure the corpus and learn the codec's note compounds or music BPE on a bounded
sample of the train split, then make the rows shard by shard: worker processes tokenize each
piece (optionally transposed copies of the train pieces) and lay it out as examples
(`midillm.tokenization.rows`: continuation chunks cut at bar lines, infill and accompaniment
examples); the examples of a shard are packed into fixed-length rows and written to disk as an
Arrow file. Finally the shards are published as one `save_to_disk` folder, by renames.

Memory stays flat in the corpus's size: no step holds more than a shard's examples (two while
the workers run ahead), the sample's counts, and a few numbers per file. Work is kept in
OUT/partial (`PrepareWork`) as it is finished, so a stopped run resumes where it stopped and
ends with the same bytes as a run that was never stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from midillm.version import __version__

from .base_model import DEFAULT_BASE_MODEL
from .caption import score_caption
from .codec import (DEFAULT_COMPOUND_COVERAGE, DEFAULT_COMPOUND_VOCAB, DEFAULT_LAYOUT, DEFAULT_ONSET_TIME, LAYOUTS,
                    MIDITOK_VERSION, ONSET_TIMES, PART_NUMBERINGS, RENDERS, TOKENIZATIONS, MusicCodec)
from .prepared import PreparedData, PrepareWork
from .profile import CorpusProfile, measure_corpus
from .roles import program_role
from .rows import (ROW_FORMAT_VERSION, accompaniment_order, chunk_piece, infill_example, labelled, pack_rows,
                   reorder_parts)
from .sources import CheckedFile, Skipped, check_files, describe_error, list_sources
from .tonality import COMMON_KEYS, in_common_key, key_before_move

if TYPE_CHECKING:
    from datasets import Features
    from symusic import Score

SPLITS = ("train", "validation", "test")


@dataclass
class PrepareConfig:
    """How `midillm prepare` builds a dataset; every field is also a command-line flag."""

    source: str | list[str] = field(metadata={
        "help": "A MIDI folder, music21:bach|essen|ryans|palestrina, or hf:<dataset>; or several of them (each "
                "row's caption then names its source on a Corpus line)."})
    out: str = field(metadata={"help": "Output folder: codec/, dataset/ and prepare.json go here."})
    base_model: str = field(default=DEFAULT_BASE_MODEL, metadata={
        "help": "Base LM whose tokenizer receives the music tokens (Hub id, folder, .gguf; default: offline SmolLM2)."})
    tokenization: str = field(default="REMI", metadata={"help": f"miditok tokenization: {', '.join(TOKENIZATIONS)}."})
    vocab_size: int = field(default=0, metadata={
        "help": "Music BPE vocabulary size (0 or at most the base vocabulary: no BPE). No BPE learns the most per "
                "note in a short run; BPE 4096 writes ~2.4x fewer tokens per note but learns less per note "
                "(docs/benchmarks.md)."})
    layout: str | None = field(default=None, metadata={
        "help": "How parts are laid out: onsets (time order, a chord's notes together, each note one LM token "
                "where a note compound covers it) or bars (bar by bar, part by part; what music BPE needs). "
                f"Default: {DEFAULT_LAYOUT}, or bars when --vocab-size asks for music BPE."})
    onset_time: str = field(default=DEFAULT_ONSET_TIME, metadata={
        "help": "Onsets layout: when an onset falls, as a shift from the bar's last onset (shift: a beat's "
                "move is one token wherever the bar stands) or as its position in the bar (position: REMI's)."})
    part_numbering: str | None = field(default=None, metadata={
        "help": "Onsets layout: how parts are numbered, by role (role: <Part_13> is the bass in every piece, "
                "<Part_14> the drums; 6.5 fewer bits per note on a band corpus at equal steps) or in the file's "
                "track order (order). Default: role where the corpus's instruments come from more than one "
                "General MIDI family (a band; the Bach chorales, whose few instrumental parts make nine "
                "programs), else order."})
    compound_vocab: int = field(default=DEFAULT_COMPOUND_VOCAB, metadata={
        "help": "Onsets layout: the most note compounds (whole notes as one token) learned from the train split."})
    compound_coverage: float = field(default=DEFAULT_COMPOUND_COVERAGE, metadata={
        "help": "Onsets layout: keep the note compounds only if they write at least this share of the train "
                "sample's notes as one token each (the chorales: 0.99, a band corpus: about 0.6); otherwise each of "
                "a note's fields is its own token: lower bits per note on a band corpus, but 2.2x the positions "
                "per note and no better samples at 100 steps (docs/bands.md). 0 (default): always keep them."})
    render: str = field(default="tokens", metadata={
        "help": "tokens: one new LM token per music token; text: plain text through the LM tokenizer (baseline)."})
    captions: bool = field(default=True, metadata={"help": "Put a metadata caption before each piece."})
    adapt_to_corpus: bool = field(default=True, metadata={
        "help": "Drop tokens that carry nothing in this corpus (constant velocity, repeated programs) and "
                "fit the time grid, durations and metres to it; off: miditok's general-purpose settings."})
    seq_len: int = field(default=1024, metadata={"help": "Length of a packed training row, in LM tokens."})
    infill_ratio: float = field(default=0.25, metadata={
        "help": "Bar-infilling examples per continuation example in the train split (music before and "
                "after a gap, then the gap); 0: the model cannot infill."})
    accompany_ratio: float = field(default=0.15, metadata={
        "help": "Accompaniment examples per continuation example in the train split (some parts moved "
                "first, to be kept while the others are written); 0: the model cannot accompany or arrange."})
    window_captions: bool = field(default=False, metadata={
        "help": "Onsets layout with parts: a row cut from inside a piece names in its caption only the parts "
                "that play in that row (a band's strings resting for the row are left off), so a caption's "
                "parts are the parts that play, as a request means them. Off (default): every row has the "
                "whole piece's. On the band tunes it halved the parts that strike once and fall silent, but "
                "the model alone was no saner and rarely ended, and worse still with the default prompts drawn from "
                "the rows' own captions (docs/bands.md, sessions 26 and 27)."})
    transpose: int = field(default=0, metadata={
        "help": "Augment the train split with copies transposed by -N..N semitones (0: off)."})
    common_key: bool = field(default=True, metadata={
        "help": "Move each piece to C major or A minor (its key from its metadata, else estimated from its "
                "notes) before tokenizing: every piece then teaches the same harmony rows, and generation "
                "writes the asked key exactly by moving the finished music there. Off with --transpose, "
                "which copies pieces into other keys instead."})
    validation_share: float = field(default=0.05, metadata={"help": "Share of pieces in the validation split."})
    test_share: float = field(default=0.05, metadata={"help": "Share of pieces in the test split."})
    limit: int | None = field(default=None, metadata={"help": "Use only the first N pieces of the source (of each)."})
    num_workers: int = field(default=2, metadata={"help": "Processes that check and tokenize files."})
    profile_pieces: int = field(default=1000, metadata={
        "help": "The corpus profile and the note compounds (or music BPE) are learned from at most this many "
                "train pieces, the ones with the lowest content hashes (a fixed random sample); all of them in a "
                "smaller corpus."})
    shard_pieces: int = field(default=512, metadata={
        "help": "Pieces per dataset shard: each shard's rows are packed and written to disk on their own, so "
                "memory does not grow with the corpus, and a stopped run keeps its finished shards."})

    def __post_init__(self):
        if self.tokenization not in TOKENIZATIONS:
            raise ValueError(f"tokenization must be one of {', '.join(TOKENIZATIONS)}, not {self.tokenization!r}")
        if self.layout is None:
            self.layout = "bars" if self.vocab_size else DEFAULT_LAYOUT
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")
        if self.part_numbering is not None and self.part_numbering not in PART_NUMBERINGS:
            raise ValueError(f"part_numbering must be one of {', '.join(PART_NUMBERINGS)}, not {self.part_numbering!r}")
        if self.onset_time not in ONSET_TIMES:
            raise ValueError(f"onset_time must be one of {', '.join(ONSET_TIMES)}, not {self.onset_time!r}")
        if self.layout == "onsets" and self.vocab_size:
            raise ValueError("music BPE (vocab_size) needs layout=bars; the onsets layout has note compounds")
        if self.render not in RENDERS:
            raise ValueError(f"render must be one of {', '.join(RENDERS)}, not {self.render!r}")
        if self.seq_len < 64:
            raise ValueError(f"seq_len must be at least 64, not {self.seq_len}")
        if not (0 <= self.validation_share < 0.5 and 0 <= self.test_share < 0.5):
            raise ValueError("validation_share and test_share must each be in [0, 0.5)")
        if self.transpose < 0 or self.transpose > 12:
            raise ValueError(f"transpose must be between 0 and 12 semitones, not {self.transpose}")
        if self.transpose:  # copies in other keys: moving every piece to C would undo them
            self.common_key = False
        if not 0 <= self.compound_coverage <= 1:
            raise ValueError(f"compound_coverage must be between 0 and 1, not {self.compound_coverage}")
        if not (0 <= self.infill_ratio <= 4 and 0 <= self.accompany_ratio <= 4):
            raise ValueError("infill_ratio and accompany_ratio must each be between 0 and 4")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be positive, not {self.limit}")
        if self.profile_pieces < 1 or self.shard_pieces < 1:
            raise ValueError("profile_pieces and shard_pieces must each be at least 1")
        if not isinstance(self.source, str):  # several sources; one is kept a string, as before
            self.source = list(self.source) if len(self.source) > 1 else self.source[0]

    @property
    def sources(self) -> list[str]:
        """The sources, one or several."""
        return [self.source] if isinstance(self.source, str) else list(self.source)


def split_of(content_hash: str, validation_share: float, test_share: float) -> str:
    """Deterministic by content: a piece keeps its split when other files come and go."""
    position = int(content_hash[:8], 16) / 0x1_0000_0000
    if position < test_share:
        return "test"
    if position < test_share + validation_share:
        return "validation"
    return "train"


def assign_splits(pieces: list[CheckedFile], config: PrepareConfig) -> dict[str, list[CheckedFile]]:
    splits = {name: [] for name in SPLITS}
    for piece in pieces:
        splits[split_of(piece.content_hash, config.validation_share, config.test_share)].append(piece)
    # Small corpora: make sure held-out splits exist, taking the train pieces whose hashes lie
    # closest to the held-out ranges so the choice stays deterministic.
    for name, share in (("test", config.test_share), ("validation", config.validation_share)):
        if share > 0 and not splits[name] and len(splits["train"]) >= 3:
            splits["train"].sort(key=lambda piece: piece.content_hash)
            splits[name].append(splits["train"].pop(0))
    return splits


# ------------------------------------------------------------------------- worker processes

_worker_codec: MusicCodec | None = None
_worker_row_settings: tuple[int, float, bool] = (0, 0.0, False)  # seq_len, infill_ratio, window_captions


def _start_worker(codec_dir: str, seq_len: int, infill_ratio: float, window_captions: bool = False) -> None:
    global _worker_codec, _worker_row_settings
    import warnings

    warnings.filterwarnings("ignore")
    _worker_codec = MusicCodec.from_pretrained(codec_dir)
    _worker_row_settings = (seq_len, infill_ratio, window_captions)


@dataclass(frozen=True)
class _PieceTask:
    """What a worker needs to make one piece's examples (small: it crosses to the worker)."""

    path: str
    metadata: dict
    content_hash: str
    split: str
    shifts: tuple[int, ...]  # the transpositions to write, 0 = as is
    accompany_seed: int | None  # set: each version also with its parts reordered for accompaniment


def _tokenize_piece(task: _PieceTask) -> dict:
    """One piece -> caption ids and bars for each requested transposition, and for each of them
    an accompaniment version when `accompany_seed` is set (parts reordered)."""
    import random

    from symusic import Score

    score, metadata = Score(task.path), task.metadata
    if _worker_codec.common_key:
        score, metadata, _ = in_common_key(score, metadata, _worker_codec.common_keys)
    versions = []
    for shift in task.shifts:
        shifted = score.copy()
        if shift:
            for track in shifted.tracks:
                if not track.is_drum:
                    track.shift_pitch(shift, inplace=True)
        bars = _worker_codec.encode_bars(shifted)
        versions.append({"caption": _worker_codec.caption_ids(shifted, metadata), "bars": bars, "task": "continue",
                         "window_caption": _window_captions(_worker_codec, shifted, metadata, bars)
                         if _worker_row_settings[2] else None})
        # A role-numbered codec writes the parts in role order whatever their order in the file:
        # an accompaniment's given parts keep their places, and the row is the continuation's.
        if task.accompany_seed is not None and _worker_codec.part_numbering == "order":
            played = sum(1 for track in shifted.tracks if track.note_num())
            order = accompaniment_order(played, random.Random(task.accompany_seed + shift))
            if order is not None:
                reordered = reorder_parts(shifted, order)
                versions.append({"caption": _worker_codec.caption_ids(reordered, metadata),
                                 "bars": _worker_codec.encode_bars(reordered), "task": "accompany"})
    return {"notes": score.note_num(), "versions": versions}


def _window_captions(codec: MusicCodec, score, metadata, bars: list[list[int]]):
    """For a row of bars [first, end): the caption ids of the piece with only the parts that play
    in those bars (`MusicCodec.caption_ids` of those tracks), or None where that is the whole
    piece's caption, or where the parts left would be numbered otherwise on their own (a second
    guitar whose first rests would become the first): a caption's parts are then numbered as the
    row writes them, as the request path numbers them."""
    parts_of_bar = codec.parts_in_bars(bars)
    if parts_of_bar is None:
        return None
    ordered, _, numbers = codec.ordered_parts(score)
    every = set(numbers)
    cache: dict[frozenset, list[int] | None] = {}

    def caption_of(first: int, end: int) -> list[int] | None:
        playing = frozenset(set().union(*parts_of_bar[first:end]) & every)
        if not playing or playing == every:
            return None
        if playing not in cache:
            kept = [index for index, number in enumerate(numbers) if number in playing]
            window = ordered.copy()
            window.tracks = [ordered.tracks[index].copy() for index in kept]
            cache[playing] = codec.caption_ids(window, metadata) \
                if codec.ordered_parts(window)[2] == [numbers[index] for index in kept] else None
        return cache[playing]

    return caption_of


def _piece_examples(task: _PieceTask) -> dict:
    """One piece -> its (ids, labels) examples as int32 arrays (continuation chunks, and in the
    train split about `infill_ratio` infill examples per continuation chunk), its notes, music
    tokens and train examples per task; or {"error": reason} when it cannot be tokenized: the
    files were checked, but one odd file must not end a corpus-wide run."""
    import random

    codec = _worker_codec
    seq_len, infill_ratio, _ = _worker_row_settings
    try:
        tokenized = _tokenize_piece(task)
        examples = []
        task_counts = {"continue": 0, "infill": 0, "accompany": 0}  # train examples of each task
        # Deterministic by content, like the splits: the same piece gets the same examples.
        rng = random.Random(task.content_hash + "infill")
        for version in tokenized["versions"]:
            chunks = chunk_piece(version["caption"], version["bars"], codec.music_start_id,
                                 codec.music_end_id, seq_len, caption_of=version.get("window_caption"))
            examples.extend(labelled(chunk) for chunk in chunks)
            task_counts[version["task"]] += len(chunks) if task.split == "train" else 0
            if task.split != "train" or version["task"] != "continue" or "infill" not in codec.tasks:
                continue
            # About infill_ratio infill examples per continuation chunk of this piece.
            wanted = sum(rng.random() < infill_ratio for _ in chunks)
            bars = version["bars"]
            for _ in range(wanted):
                if len(bars) < 3:
                    break
                gap_bars = rng.randint(1, min(4, len(bars) - 2))
                example = infill_example(version["caption"], bars, gap_bars, rng.randint(1, len(bars) - gap_bars - 1),
                                         codec.music_start_id, codec.music_end_id, codec.gap_id, codec.fill_id,
                                         seq_len)
                if example is not None:
                    examples.append(example)
                    task_counts["infill"] += 1
    except Exception as error:
        return {"error": f"could not tokenize it: {describe_error(error)}"}
    return {"notes": tokenized["notes"], "music_tokens": _music_tokens(tokenized), "tasks": task_counts,
            "examples": [(np.asarray(ids, dtype=np.int32), np.asarray(labels, dtype=np.int32))
                         for ids, labels in examples]}


def _music_tokens(tokenized: dict) -> int:
    """The music LM tokens of a tokenized piece as it is (+ `</music>`)."""
    return sum(len(bar) for bar in tokenized["versions"][0]["bars"]) + 1


# ------------------------------------------------------------------------- the steps of `prepare`


def fingerprint(config: PrepareConfig, pieces: list[CheckedFile]) -> str:
    """What the output depends on: settings, file contents, and the tokenizer versions."""
    settings = {key: value for key, value in asdict(config).items() if key not in ("out", "num_workers")}
    payload = json.dumps({"settings": settings, "files": sorted(piece.content_hash for piece in pieces),
                          "midillm": __version__, "rows": ROW_FORMAT_VERSION, "miditok": MIDITOK_VERSION},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class _Sources:
    """The source's files, sorted into what is used and what is not: read = used + skipped + duplicates."""

    pieces: list[CheckedFile]  # parsed, fit to train on, once each by content
    skipped: list[Skipped]  # unfit, each with its reason
    duplicates: list[Skipped]  # the same bytes as a piece listed before them
    files_read: int


def _usable_pieces(config: PrepareConfig, prepared: PreparedData, log) -> _Sources:
    """The source's files that parse and hold music, once each (by content). Checking parses
    each file in a worker and keeps nothing of it but its hash, its note count or its reason;
    the results are recorded in OUT/partial as they come, so a stopped run does not check
    the same files again."""
    files, skipped = list_sources(config.sources, limit=config.limit)
    files_read = len(files) + len(skipped)
    checked, unreadable = check_files(files, num_workers=config.num_workers,
                                      record_dir=PrepareWork.checks_dir(prepared.work_dir))
    skipped = skipped + unreadable
    unique: dict[str, CheckedFile] = {}
    duplicates = []
    for piece in checked:
        if piece.content_hash in unique:
            duplicates.append(Skipped(piece.file.name, f"duplicate of {unique[piece.content_hash].file.name}"))
        else:
            unique[piece.content_hash] = piece
    for item in skipped + duplicates:
        log(f"skipped {item.name}: {item.reason}")
    if not unique:
        raise ValueError(f"no usable MIDI in {' '.join(config.sources)}: all {files_read} files were skipped")
    return _Sources(list(unique.values()), skipped, duplicates, files_read)


def _profile_sample(pieces: list[CheckedFile], size: int) -> list[CheckedFile]:
    """At most `size` of these pieces, in their order: those with the lowest content hashes,
    a random sample that stays put as files come and go (a hash does not depend on the others)."""
    if len(pieces) <= size:
        return pieces
    kept = set(sorted(piece.content_hash for piece in pieces)[:size])
    return [piece for piece in pieces if piece.content_hash in kept]


def _read_piece(piece: CheckedFile, common_key: bool) -> tuple[Score, dict, str | None]:
    """A piece's Score and metadata as its rows will have them (moved to the common key if
    asked), and the key it was in before the move (None: not moved)."""
    from symusic import Score

    score, metadata = Score(str(piece.file.path)), dict(piece.file.metadata)
    if not common_key:
        return score, metadata, None
    moved, metadata, shift = in_common_key(score, metadata)
    # Not moved (no pitched notes, no key it could name): its metadata's key is not a common one.
    if metadata.get("key") not in COMMON_KEYS.values():
        return moved, metadata, None
    return moved, metadata, key_before_move(metadata["key"], shift)


def _measure(pieces: list[CheckedFile], common_key: bool, log) -> CorpusProfile:
    """What the corpus allows, measured on these (train) pieces (moved to the common key if
    asked; their own keys counted before). Each file is read once and its score dropped once
    measured: a score of a band piece takes far more memory than reading it takes time."""
    captions, keys = [], Counter()

    def scores():
        for piece in tqdm(pieces, desc="Measuring the corpus", unit="file"):
            score, metadata, own = _read_piece(piece, common_key)
            keys.update([own] if own else [])
            captions.append(score_caption(score, metadata))
            yield score

    corpus = measure_corpus(scores(), captions)
    corpus.keys = dict(keys.most_common())
    log(f"Corpus: {corpus.pieces} train pieces measured, programs {corpus.program_list}, at most "
        f"{corpus.max_notes_per_onset} notes per onset (mean {corpus.mean_notes_per_onset:.2f}), "
        f"metres {', '.join(corpus.time_signatures)}, grid 1/{corpus.positions_per_beat} beat")
    return corpus


def default_part_numbering(corpus: CorpusProfile) -> str:
    """"role" where the corpus's instruments come from more than one General MIDI family (drums
    one of them): a band, whose file order says nothing of what a part plays; else "order"."""
    families = {program_role(int(program)) for program in corpus.programs}
    return "role" if len(families) > 1 else "order"


def _build_codec(config: PrepareConfig, corpus: CorpusProfile, train: list[CheckedFile], log) -> MusicCodec:
    """The codec for this corpus: its tokens fitted to the corpus, its music BPE merges or note
    compounds learned from the train sample, and the tasks its rows will teach."""
    tasks = ("continue",) + (("infill",) if config.infill_ratio > 0 else ()) + (
        ("accompany", "arrange") if config.accompany_ratio > 0 else ())
    codec = MusicCodec.create(config.tokenization, render=config.render, captions=config.captions,
                              base_model=config.base_model, corpus=corpus, layout=config.layout,
                              adapt_to_corpus=config.adapt_to_corpus, tasks=tasks, common_key=config.common_key,
                              onset_time=config.onset_time,
                              part_numbering=config.part_numbering or default_part_numbering(corpus))
    # The default prompts (the train pieces' captions, measured before the codec was chosen)
    # list their parts in the order the codec writes them, as the training rows' captions do.
    ordered: Counter = Counter()
    for caption, count in corpus.captions.items():
        ordered[codec.caption_in_part_order(caption)[0]] += count
    corpus.captions = dict(ordered.most_common())
    paths = [piece.file.path for piece in train]
    if config.render == "tokens" and config.vocab_size > len(codec.music_tokenizer.vocab):
        log(f"Training music BPE ({config.vocab_size} tokens) on {len(train)} pieces")
        codec.train_bpe(paths, config.vocab_size,
                        scores=[_read_piece(piece, config.common_key)[0] for piece in train])
    elif codec.layout != "onsets":
        log(f"No music BPE: one LM token per {config.tokenization} token")
    if codec.layout == "onsets":
        scores = (_read_piece(piece, config.common_key)[0] for piece in train)
        coverage = codec.train_compounds(tqdm(scores, desc="Learning note compounds", unit="file", total=len(paths)),
                                         config.compound_vocab, min_coverage=config.compound_coverage)
        if codec.compounds:
            log(f"Onsets layout: {len(codec.compounds)} note compounds learned from {len(train)} train pieces "
                f"write {coverage:.0%} of their notes as one token each")
        else:
            log(f"Onsets layout: note compounds would write only {coverage:.0%} of the train pieces' notes as one "
                f"token each (--compound-coverage {config.compound_coverage:g}): each note field is its own token")
    return codec


def _codec_for(config: PrepareConfig, splits: dict[str, list[CheckedFile]], work: PrepareWork,
               log) -> MusicCodec:
    """The codec of this build: learned on a bounded sample of the train split and saved in the
    work folder, or loaded from there when an earlier run got that far. Either way the codec is
    the saved one, which the workers load too, so a resumed run writes what a straight one does."""
    if not work.codec_dir.is_dir():
        # What the corpus allows is measured on the train split only, like the BPE merges.
        measured = _profile_sample(splits["train"] or [piece for split in SPLITS for piece in splits[split]],
                                   config.profile_pieces)
        corpus = _measure(measured, config.common_key, log)
        codec = _build_codec(config, corpus, _profile_sample(splits["train"], config.profile_pieces), log)
        temporary = work.codec_dir.with_name(f"{work.codec_dir.name}.tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        codec.save_pretrained(temporary)
        os.replace(temporary, work.codec_dir)
    return MusicCodec.from_pretrained(work.codec_dir)


@dataclass(frozen=True)
class _Shard:
    """Consecutive pieces of one split whose rows are packed together and written as one file."""

    split: str
    number: int
    pieces: tuple[CheckedFile, ...]

    @property
    def name(self) -> str:
        return f"{self.split}-{self.number:05d}"


def _plan_shards(splits: dict[str, list[CheckedFile]], shard_pieces: int) -> list[_Shard]:
    """The shards of each split in order; a split without pieces gets one empty shard, so that
    every split exists in the dataset."""
    shards = []
    for split in SPLITS:
        pieces = splits[split]
        for number, start in enumerate(range(0, max(len(pieces), 1), shard_pieces)):
            shards.append(_Shard(split, number, tuple(pieces[start:start + shard_pieces])))
    return shards


def _piece_tasks(config: PrepareConfig, codec: MusicCodec, shard: _Shard) -> list[_PieceTask]:
    """The shard's pieces as worker tasks: train pieces also transposed and, for some, with
    their parts reordered for accompaniment."""
    import random

    shifts_for_train = (0,) + tuple(shift for shift in range(-config.transpose, config.transpose + 1) if shift)
    tasks = []
    for piece in shard.pieces:
        # Deterministic by content, like the splits: the same piece gets the same examples.
        rng = random.Random(piece.content_hash)
        accompany = shard.split == "train" and "accompany" in codec.tasks and rng.random() < config.accompany_ratio
        tasks.append(_PieceTask(str(piece.file.path), dict(piece.file.metadata), piece.content_hash, shard.split,
                                shifts_for_train if shard.split == "train" else (0,),
                                int(piece.content_hash[:8], 16) if accompany else None))
    return tasks


def _make_shards(config: PrepareConfig, codec: MusicCodec, shards: list[_Shard], work: PrepareWork, log) -> None:
    """Write every shard not finished yet: its pieces tokenized in worker processes, its
    examples packed into rows and saved. At most two shards are in flight (the one being
    written and the one the workers are on), so memory does not grow with the corpus."""
    todo = [shard for shard in shards if not work.is_done(shard.name)]
    total = sum(len(shard.pieces) for shard in shards)
    done = total - sum(len(shard.pieces) for shard in todo)
    if len(todo) < len(shards):
        log(f"Resuming: {len(shards) - len(todo)} of {len(shards)} shards ({done} of {total} pieces) "
            f"were finished by an earlier run")
    if not todo:
        return
    pad_id = codec.lm_tokenizer.pad_token_id
    if pad_id is None:
        pad_id = codec.lm_tokenizer.eos_token_id if codec.lm_tokenizer.eos_token_id is not None else 0
    worker_settings = (str(work.codec_dir), config.seq_len, config.infill_ratio, config.window_captions)
    bar = tqdm(total=total, initial=done, desc="Tokenizing", unit="file")

    def finish(shard: _Shard, results) -> None:
        collected = []
        for result in results:
            collected.append(result)
            bar.update(1)
        _write_shard(shard, collected, work, config.seq_len, pad_id)

    try:
        if config.num_workers <= 1:
            _start_worker(*worker_settings)
            for shard in todo:
                finish(shard, map(_piece_examples, _piece_tasks(config, codec, shard)))
            return
        with ProcessPoolExecutor(config.num_workers, initializer=_start_worker,
                                 initargs=worker_settings) as executor:
            in_flight: deque = deque()
            for shard in todo:
                in_flight.append((shard, [executor.submit(_piece_examples, task)
                                          for task in _piece_tasks(config, codec, shard)]))
                # The workers start on this shard while the one before it is collected and written.
                if len(in_flight) > 1:
                    shard_done, futures = in_flight.popleft()
                    finish(shard_done, (future.result() for future in futures))
            while in_flight:
                shard_done, futures = in_flight.popleft()
                finish(shard_done, (future.result() for future in futures))
    finally:
        bar.close()


def _row_features() -> Features:
    """The columns of a packed row, as `datasets` types them."""
    from datasets import Features, Sequence, Value

    return Features({"input_ids": Sequence(Value("int32")), "labels": Sequence(Value("int32"))})


def _write_shard(shard: _Shard, results: list[dict], work: PrepareWork, seq_len: int, pad_id: int) -> None:
    """A shard's examples packed into rows and written with `datasets`' own Arrow writer (the
    format `save_to_disk` writes), then its report; each under a temporary name first."""
    import pyarrow as pa
    from datasets.arrow_writer import ArrowWriter

    examples, piece_reports, failed, train_music_tokens = [], [], [], []
    task_counts = {"continue": 0, "infill": 0, "accompany": 0}
    for piece, result in zip(shard.pieces, results):
        if "error" in result:
            failed.append({"name": piece.file.name, "reason": result["error"]})
            continue
        examples.extend(result["examples"])
        for task, count in result["tasks"].items():
            task_counts[task] += count
        if shard.split == "train":
            train_music_tokens.append(result["music_tokens"])
        piece_reports.append({"name": piece.file.name, "path": str(piece.file.path), "split": shard.split,
                              "hash": piece.content_hash, "notes": result["notes"],
                              "music_tokens": result["music_tokens"], "metadata": piece.file.metadata})
    input_ids, labels, padding = pack_rows(examples, seq_len, pad_id)

    def column(values: np.ndarray) -> pa.ListArray:
        offsets = np.arange(0, values.size + 1, seq_len, dtype=np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.reshape(-1)))

    temporary = work.shard_rows(shard.name).with_suffix(".arrow.tmp")
    writer = ArrowWriter(features=_row_features(), path=str(temporary))
    try:
        writer.write_table(pa.table({"input_ids": column(input_ids), "labels": column(labels)}))
        writer.finalize()
    finally:
        writer.close()
    digest = hashlib.sha256(temporary.read_bytes()).hexdigest()
    os.replace(temporary, work.shard_rows(shard.name))
    report = {"split": shard.split, "pieces": len(piece_reports), "rows": len(input_ids), "examples": len(examples),
              "padding": padding, "notes": sum(piece["notes"] for piece in piece_reports),
              "music_tokens": sum(piece["music_tokens"] for piece in piece_reports), "tasks": task_counts,
              "train_music_tokens": train_music_tokens, "sha256": digest, "failed": failed,
              "piece_reports": piece_reports}
    temporary = work.shard_report(shard.name).with_suffix(".json.tmp")
    temporary.write_text(json.dumps(report))
    os.replace(temporary, work.shard_report(shard.name))


def _shard_reports(shards: list[_Shard], work: PrepareWork):
    for shard in shards:
        yield shard, json.loads(work.shard_report(shard.name).read_text())


def _assemble_dataset(shards: list[_Shard], work: PrepareWork, folder: Path) -> None:
    """The shards as one `save_to_disk` folder of splits, made of hard links to the shard files
    (nothing is copied, and the shards stay whole until the result is published). Each split's
    `state.json` lists its files and carries a fingerprint of their contents, as `load_from_disk`
    reads it; `Dataset._fingerprint` then tells two preparations of the same data apart from
    different ones."""
    from datasets import DatasetInfo

    info = asdict(DatasetInfo(features=_row_features()))
    for split in SPLITS:
        members = [shard for shard in shards if shard.split == split]
        split_dir = folder / split
        split_dir.mkdir(parents=True)
        names, digests = [], []
        for index, (shard, report) in enumerate(_shard_reports(members, work)):
            names.append(f"data-{index:05d}-of-{len(members):05d}.arrow")
            digests.append(report["sha256"])
            try:
                os.link(work.shard_rows(shard.name), split_dir / names[-1])
            except OSError:  # a file system without hard links
                shutil.copyfile(work.shard_rows(shard.name), split_dir / names[-1])
        state = {"_data_files": [{"filename": name} for name in names],
                 "_fingerprint": hashlib.sha256(" ".join(digests).encode()).hexdigest()[:16],
                 "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
                 "_output_all_columns": False, "_split": None}
        (split_dir / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
        (split_dir / "dataset_info.json").write_text(json.dumps({key: info[key] for key in sorted(info)}, indent=2))
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": list(SPLITS)}))


def _write_report(path: Path, report: dict, shards: list[_Shard], work: PrepareWork) -> None:
    """prepare.json, its list of pieces streamed from the shard reports (one line per piece)
    rather than built in memory: a Lakh-sized corpus has 170,000 of them."""
    head = json.dumps(report, indent=2)
    with open(path, "w") as stream:
        stream.write(head[:-2] + ',\n  "pieces": [')
        separator = "\n    "
        for _, shard_report in _shard_reports(shards, work):
            for piece in shard_report["piece_reports"]:
                stream.write(separator + json.dumps(piece))
                separator = ",\n    "
        stream.write("\n  ]\n}\n")


# ------------------------------------------------------------------------- the whole job


def prepare(config: PrepareConfig, log=print) -> dict:
    """Run the whole preparation; returns the report also written to OUT/prepare.json (without
    its list of pieces, which only the file holds).

    Killed at any point and run again with the same arguments, it keeps what was finished
    (file checks, the codec, shards), redoes the rest and ends with the same dataset."""
    import datasets

    datasets.disable_progress_bars()  # our own bars already show the long steps
    started = time.time()
    prepared = PreparedData(config.out)
    sources = _usable_pieces(config, prepared, log)
    pieces = sources.pieces
    key = fingerprint(config, pieces)
    if prepared.is_complete():
        previous = prepared.read_report()
        if previous.get("fingerprint") == key:
            shutil.rmtree(prepared.work_dir, ignore_errors=True)
            log(f"{prepared.folder} is up to date with these files and settings; nothing to do")
            previous.pop("pieces", None)
            return previous

    work = PrepareWork(prepared.work_dir, key)
    if work.open():
        log(f"Dropped the unfinished work of a run with other files or settings in {prepared.work_dir}")
    splits = assign_splits(pieces, config)
    codec = _codec_for(config, splits, work, log)
    shards = _plan_shards(splits, config.shard_pieces)
    _make_shards(config, codec, shards, work, log)

    split_stats = {split: {"pieces": 0, "notes": 0, "music_tokens": 0, "rows": 0, "examples": 0}
                   for split in SPLITS}
    task_counts = {"continue": 0, "infill": 0, "accompany": 0}
    failed, train_lengths, padding = [], [], 0
    for shard, shard_report in _shard_reports(shards, work):
        for name in ("pieces", "notes", "music_tokens", "rows", "examples"):
            split_stats[shard.split][name] += shard_report[name]
        for task, count in shard_report["tasks"].items():
            task_counts[task] += count
        failed += [Skipped(item["name"], item["reason"]) for item in shard_report["failed"]]
        train_lengths += shard_report["train_music_tokens"]
        padding += shard_report["padding"]
    for item in failed:
        log(f"skipped {item.name}: {item.reason}")
    skipped = sources.skipped + failed
    used = sum(stats["pieces"] for stats in split_stats.values())
    log(f"Files: {sources.files_read} read = {used} used + {len(skipped)} skipped "
        f"+ {len(sources.duplicates)} duplicates")

    staging = work.staging_dir
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    _assemble_dataset(shards, work, staging / "dataset")
    # The music tokens per train piece complete the corpus profile, which the codec carries.
    lengths = train_lengths or [1]
    codec.corpus.music_tokens = [int(np.median(lengths)), int(np.quantile(lengths, 0.95)), int(max(lengths))]
    codec.save_pretrained(staging / "codec")
    notes = sum(stats["notes"] for stats in split_stats.values())
    music_tokens = sum(stats["music_tokens"] for stats in split_stats.values())
    rows = sum(stats["rows"] for stats in split_stats.values())
    report = {
        "source": config.source,
        "settings": asdict(config),
        "fingerprint": key,
        "files_read": sources.files_read,
        "files_used": used,
        # Every file left out with its reason, duplicates too; `counts` tells them apart.
        "files_skipped": [{"name": item.name, "reason": item.reason}
                          for item in sources.skipped + sources.duplicates + failed],
        "counts": {"read": sources.files_read, "used": used, "skipped": len(skipped),
                   "duplicates": len(sources.duplicates)},
        "notes": notes,
        "music_tokens": music_tokens,
        "tokens_per_note": round(music_tokens / max(notes, 1), 4),
        "music_vocab_size": len(codec.music_token_parts),
        "lm_vocab_size": len(codec.lm_tokenizer),
        "padding_share": round(padding / max(rows * config.seq_len, 1), 4),
        "corpus": codec.corpus.to_dict(),
        "splits": split_stats,
        "tasks": list(codec.tasks),
        "train_examples_by_task": task_counts,
        "shards": len(shards),
        "versions": {"midillm": __version__, "miditok": MIDITOK_VERSION},
        "seconds": round(time.time() - started, 1),
    }
    _write_report(staging / prepared.report_path.name, report, shards, work)
    prepared.publish(staging)
    shutil.rmtree(prepared.work_dir, ignore_errors=True)
    return report
