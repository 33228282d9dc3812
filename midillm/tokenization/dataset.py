"""`midillm prepare`: a corpus source -> codec + packed `datasets` splits + a report.

Steps (`prepare`, top to bottom): list the source, check every file (bad ones skipped with a
reason), drop duplicates by content hash, split by hash (stable when files are added), read the
train pieces once to measure the corpus and to learn the codec's music BPE or note compounds,
tokenize in worker processes (optionally transposed copies of the train pieces), lay the pieces
out as rows (`midillm.tokenization.rows`: continuation chunks cut at bar lines, infill and
accompaniment examples), pack them into fixed-length rows, save.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from midillm.version import __version__

from .base_model import DEFAULT_BASE_MODEL
from .caption import score_caption
from .codec import DEFAULT_COMPOUND_VOCAB, DEFAULT_LAYOUT, LAYOUTS, MIDITOK_VERSION, RENDERS, TOKENIZATIONS, MusicCodec
from .prepared import PreparedData
from .profile import CorpusProfile, measure_corpus
from .rows import (ROW_FORMAT_VERSION, accompaniment_order, chunk_piece, infill_example, labelled, pack_rows,
                   reorder_parts)
from .sources import CheckedFile, Skipped, check_files, list_source
from .tonality import in_common_key, named_key, piece_key

if TYPE_CHECKING:
    from symusic import Score

SPLITS = ("train", "validation", "test")


@dataclass
class PrepareConfig:
    """How `midillm prepare` builds a dataset; every field is also a command-line flag."""

    source: str = field(metadata={"help": "A MIDI folder, music21:bach|essen|ryans|palestrina, or hf:<dataset>."})
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
    compound_vocab: int = field(default=DEFAULT_COMPOUND_VOCAB, metadata={
        "help": "Onsets layout: the most note compounds (whole notes as one token) learned from the train split."})
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
    transpose: int = field(default=0, metadata={
        "help": "Augment the train split with copies transposed by -N..N semitones (0: off)."})
    common_key: bool = field(default=False, metadata={
        "help": "Move each piece to C major or C minor (its key from its metadata, else estimated from its "
                "notes) before tokenizing: every piece then teaches the same harmony rows, and generation "
                "writes the asked key by moving the finished music there."})
    validation_share: float = field(default=0.05, metadata={"help": "Share of pieces in the validation split."})
    test_share: float = field(default=0.05, metadata={"help": "Share of pieces in the test split."})
    limit: int | None = field(default=None, metadata={"help": "Use only the first N pieces of the source."})
    num_workers: int = field(default=2, metadata={"help": "Processes that check and tokenize files."})

    def __post_init__(self):
        if self.tokenization not in TOKENIZATIONS:
            raise ValueError(f"tokenization must be one of {', '.join(TOKENIZATIONS)}, not {self.tokenization!r}")
        if self.layout is None:
            self.layout = "bars" if self.vocab_size else DEFAULT_LAYOUT
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")
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
        if self.transpose and self.common_key:
            raise ValueError("transpose and common_key contradict each other: common_key moves every piece "
                             "to C, transpose copies it into other keys")
        if not (0 <= self.infill_ratio <= 4 and 0 <= self.accompany_ratio <= 4):
            raise ValueError("infill_ratio and accompany_ratio must each be between 0 and 4")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be positive, not {self.limit}")


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


def _load_worker_codec(codec_dir: str) -> None:
    global _worker_codec
    import warnings

    warnings.filterwarnings("ignore")
    _worker_codec = MusicCodec.from_pretrained(codec_dir)


def _tokenize_piece(task: tuple) -> dict:
    """One piece (its Score when the main process read it already, else its file) -> caption ids
    and bars for each requested transposition (0 = as is), and for each of them an
    accompaniment version when `accompany_seed` is set (parts reordered)."""
    import random

    from symusic import Score

    source, metadata, shifts, accompany_seed, move_to_common_key = task
    score = source if isinstance(source, Score) else Score(source)
    if move_to_common_key:
        score, metadata, _ = in_common_key(score, metadata)
    versions = []
    for shift in shifts:
        shifted = score.copy()
        if shift:
            for track in shifted.tracks:
                if not track.is_drum:
                    track.shift_pitch(shift, inplace=True)
        versions.append({"caption": _worker_codec.caption_ids(shifted, metadata),
                         "bars": _worker_codec.encode_bars(shifted), "task": "continue"})
        if accompany_seed is not None:
            played = sum(1 for track in shifted.tracks if track.note_num())
            order = accompaniment_order(played, random.Random(accompany_seed + shift))
            if order is not None:
                reordered = reorder_parts(shifted, order)
                versions.append({"caption": _worker_codec.caption_ids(reordered, metadata),
                                 "bars": _worker_codec.encode_bars(reordered), "task": "accompany"})
    return {"notes": score.note_num(), "versions": versions}


def _tokenize_all(tasks: list[tuple], codec_dir: Path, num_workers: int) -> list[dict]:
    progress = dict(total=len(tasks), desc="Tokenizing", unit="file")
    if num_workers <= 1:
        _load_worker_codec(str(codec_dir))
        return [_tokenize_piece(task) for task in tqdm(tasks, **progress)]
    with ProcessPoolExecutor(num_workers, initializer=_load_worker_codec,
                             initargs=(str(codec_dir),)) as executor:
        return list(tqdm(executor.map(_tokenize_piece, tasks, chunksize=4), **progress))


# ------------------------------------------------------------------------- the steps of `prepare`


def fingerprint(config: PrepareConfig, pieces: list[CheckedFile]) -> str:
    """What the output depends on: settings, file contents, and the tokenizer versions."""
    settings = {key: value for key, value in asdict(config).items() if key not in ("out", "num_workers")}
    payload = json.dumps({"settings": settings, "files": sorted(piece.content_hash for piece in pieces),
                          "midillm": __version__, "rows": ROW_FORMAT_VERSION, "miditok": MIDITOK_VERSION},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _usable_pieces(config: PrepareConfig, log) -> tuple[list[CheckedFile], list[Skipped], int]:
    """The source's files that parse and hold music, once each (by content): (pieces, the
    files skipped with their reasons, files read). Checking parses each file in a worker and
    keeps nothing of it: the main process holds no more of the corpus than the train split."""
    files, skipped = list_source(config.source, limit=config.limit)
    files_read = len(files) + len(skipped)
    checked, unreadable = check_files(files, num_workers=config.num_workers)
    skipped = skipped + unreadable
    unique: dict[str, CheckedFile] = {}
    for piece in checked:
        if piece.content_hash in unique:
            skipped.append(Skipped(piece.file.name, f"duplicate of {unique[piece.content_hash].file.name}"))
        else:
            unique[piece.content_hash] = piece
    for item in skipped:
        log(f"skipped {item.name}: {item.reason}")
    if not unique:
        raise ValueError(f"no usable MIDI in {config.source}: all {files_read} files were skipped")
    return list(unique.values()), skipped, files_read


def _read_scores(pieces: list[CheckedFile]) -> dict[str, Score]:
    """Content hash -> Score of each piece: the one read of a train piece, which measuring the
    corpus, training the codec and tokenizing all use."""
    from symusic import Score

    return {piece.content_hash: Score(str(piece.file.path))
            for piece in tqdm(pieces, desc="Measuring the corpus", unit="file")}


def _in_common_key(pieces: list[CheckedFile], scores: dict[str, Score]) -> tuple[dict[str, dict], Counter]:
    """Move the pieces' Scores (in place in `scores`) to C major or C minor; returns each one's
    metadata saying so and how many pieces were in each key before."""
    metadata, keys = {}, Counter()
    for piece in pieces:
        key = piece_key(scores[piece.content_hash], piece.file.metadata)
        if key is not None:
            keys[named_key(*key)] += 1
        scores[piece.content_hash], metadata[piece.content_hash], _ = in_common_key(
            scores[piece.content_hash], piece.file.metadata)
    return metadata, keys


def _measure(pieces: list[CheckedFile], scores: dict[str, Score], metadata: dict[str, dict], log) -> CorpusProfile:
    """What the corpus allows, measured on these (train) pieces."""
    corpus = measure_corpus([scores[piece.content_hash] for piece in pieces],
                            [score_caption(scores[piece.content_hash], metadata.get(piece.content_hash,
                                                                                     piece.file.metadata))
                             for piece in pieces])
    log(f"Corpus: {corpus.pieces} train pieces, programs {corpus.program_list}, at most "
        f"{corpus.max_notes_per_onset} notes per onset (mean {corpus.mean_notes_per_onset:.2f}), "
        f"metres {', '.join(corpus.time_signatures)}, grid 1/{corpus.positions_per_beat} beat")
    return corpus


def _build_codec(config: PrepareConfig, corpus: CorpusProfile, train: list[CheckedFile],
                 scores: dict[str, Score], log) -> MusicCodec:
    """The codec for this corpus: its tokens fitted to the corpus, its music BPE merges or note
    compounds learned from the train split, and the tasks its rows will teach."""
    tasks = ("continue",) + (("infill",) if config.infill_ratio > 0 else ()) + (
        ("accompany", "arrange") if config.accompany_ratio > 0 else ())
    codec = MusicCodec.create(config.tokenization, render=config.render, captions=config.captions,
                              base_model=config.base_model, corpus=corpus, layout=config.layout,
                              adapt_to_corpus=config.adapt_to_corpus, tasks=tasks, common_key=config.common_key)
    if config.render == "tokens" and config.vocab_size > len(codec.music_tokenizer.vocab):
        log(f"Training music BPE ({config.vocab_size} tokens) on {len(train)} pieces")
    elif codec.layout != "onsets":
        log(f"No music BPE: one LM token per {config.tokenization} token")
    train_scores = [scores[piece.content_hash] for piece in train]
    codec.train_bpe([piece.file.path for piece in train], config.vocab_size, scores=train_scores)
    if codec.layout == "onsets":
        codec.train_compounds(train_scores, config.compound_vocab)
        log(f"Onsets layout: {len(codec.compounds)} note compounds learned from the train split")
    return codec


def _tokenize_splits(config: PrepareConfig, codec: MusicCodec, splits: dict[str, list[CheckedFile]],
                     scores: dict[str, Score], metadata: dict[str, dict]) -> list[tuple[str, CheckedFile, dict]]:
    """Every piece tokenized in worker processes: (split, piece, its versions), in split order.
    Train pieces also come transposed and, for some, with their parts reordered for
    accompaniment; the pieces already read travel as Scores, the others are read by the worker."""
    import random
    import tempfile

    shifts_for_train = [0] + [shift for shift in range(-config.transpose, config.transpose + 1) if shift]
    tasks, owners = [], []
    for split in SPLITS:
        for piece in splits[split]:
            # Deterministic by content, like the splits: the same piece gets the same examples.
            rng = random.Random(piece.content_hash)
            accompany = split == "train" and "accompany" in codec.tasks and rng.random() < config.accompany_ratio
            read = piece.content_hash in scores  # read (and moved to the common key) already
            tasks.append((scores[piece.content_hash] if read else str(piece.file.path),
                          dict(metadata.get(piece.content_hash, piece.file.metadata)),
                          shifts_for_train if split == "train" else [0],
                          int(piece.content_hash[:8], 16) if accompany else None,
                          codec.common_key and not read))
            owners.append((split, piece))
    # The workers load the codec from a folder of their own: OUT/codec is written once, complete.
    with tempfile.TemporaryDirectory(prefix="midillm-codec-") as codec_dir:
        codec.save_pretrained(codec_dir)
        results = _tokenize_all(tasks, Path(codec_dir), config.num_workers)
    return [(split, piece, result) for (split, piece), result in zip(owners, results)]


def _examples(config: PrepareConfig, codec: MusicCodec, tokenized: list[tuple[str, CheckedFile, dict]]):
    """The (ids, labels) examples of each split, from each piece's versions: continuation
    chunks, and in the train split about `infill_ratio` infill examples per continuation chunk.
    Returns the examples, the train examples of each task, each split's counts and the
    per-piece report."""
    import random

    examples = {split: [] for split in SPLITS}
    task_counts = {"continue": 0, "infill": 0, "accompany": 0}  # train examples of each task
    split_stats = {split: {"pieces": 0, "notes": 0, "music_tokens": 0} for split in SPLITS}
    piece_reports = []
    for split, piece, result in tokenized:
        music_tokens = _music_tokens(result)
        split_stats[split]["pieces"] += 1
        split_stats[split]["notes"] += result["notes"]
        split_stats[split]["music_tokens"] += music_tokens
        piece_reports.append({"name": piece.file.name, "path": str(piece.file.path), "split": split,
                              "hash": piece.content_hash, "notes": result["notes"],
                              "music_tokens": music_tokens, "metadata": piece.file.metadata})
        rng = random.Random(piece.content_hash + "infill")
        for version in result["versions"]:
            chunks = chunk_piece(version["caption"], version["bars"], codec.music_start_id,
                                 codec.music_end_id, config.seq_len)
            examples[split].extend(labelled(chunk) for chunk in chunks)
            task_counts[version["task"]] += len(chunks) if split == "train" else 0
            if split != "train" or version["task"] != "continue" or "infill" not in codec.tasks:
                continue
            # About infill_ratio infill examples per continuation chunk of this piece.
            wanted = sum(rng.random() < config.infill_ratio for _ in chunks)
            bars = version["bars"]
            for _ in range(wanted):
                if len(bars) < 3:
                    break
                gap_bars = rng.randint(1, min(4, len(bars) - 2))
                example = infill_example(version["caption"], bars, gap_bars, rng.randint(1, len(bars) - gap_bars - 1),
                                         codec.music_start_id, codec.music_end_id, codec.gap_id, codec.fill_id,
                                         config.seq_len)
                if example is not None:
                    examples[split].append(example)
                    task_counts["infill"] += 1
    return examples, task_counts, split_stats, piece_reports


def _music_tokens(result: dict) -> int:
    """The music LM tokens of a tokenized piece as it is (+ `</music>`)."""
    return sum(len(bar) for bar in result["versions"][0]["bars"]) + 1


def _write_rows(config: PrepareConfig, codec: MusicCodec, examples: dict[str, list], split_stats: dict,
                folder: Path) -> float:
    """Each split's examples packed into rows of `seq_len`, saved as a `datasets` DatasetDict;
    adds rows and examples to `split_stats`; returns the padding's share of the ids."""
    from datasets import Dataset, DatasetDict, Features, Sequence, Value

    pad_id = codec.lm_tokenizer.pad_token_id
    if pad_id is None:
        pad_id = codec.lm_tokenizer.eos_token_id if codec.lm_tokenizer.eos_token_id is not None else 0
    features = Features({"input_ids": Sequence(Value("int32")), "labels": Sequence(Value("int32"))})
    dataset_splits, padding_total, ids_total = {}, 0, 0
    for split in SPLITS:
        rows, labels, padding = pack_rows(examples[split], config.seq_len, pad_id)
        split_stats[split]["rows"] = len(rows)
        split_stats[split]["examples"] = len(examples[split])
        padding_total += padding
        ids_total += len(rows) * config.seq_len
        dataset_splits[split] = Dataset.from_dict({"input_ids": rows, "labels": labels}, features=features)
    DatasetDict(dataset_splits).save_to_disk(str(folder))
    return round(padding_total / max(ids_total, 1), 4)


# ------------------------------------------------------------------------- the whole job


def prepare(config: PrepareConfig, log=print) -> dict:
    """Run the whole preparation; returns the report also written to OUT/prepare.json.

    Each file is checked once (in a worker), and each piece read once for use: the train
    pieces by this process, which measures the corpus, trains the codec and hands the Scores
    to the tokenizing workers; the held-out pieces by those workers."""
    import datasets

    datasets.disable_progress_bars()  # our own bars already show the long steps
    started = time.time()
    out = Path(config.out)
    prepared = PreparedData(out)
    pieces, skipped, files_read = _usable_pieces(config, log)
    key = fingerprint(config, pieces)
    if prepared.is_complete():
        previous = prepared.read_report()
        if previous.get("fingerprint") == key:
            log(f"{out} is up to date with these files and settings; nothing to do")
            return previous

    splits = assign_splits(pieces, config)
    # What the corpus allows is measured on the train split only, like the BPE merges.
    measured = splits["train"] or pieces
    scores = _read_scores(measured)
    metadata, keys = _in_common_key(measured, scores) if config.common_key else ({}, Counter())
    corpus = _measure(measured, scores, metadata, log)
    corpus.keys = dict(keys.most_common())
    codec = _build_codec(config, corpus, splits["train"], scores, log)
    tokenized = _tokenize_splits(config, codec, splits, scores, metadata)
    del scores
    examples, task_counts, split_stats, piece_reports = _examples(config, codec, tokenized)
    # The music tokens per train piece complete the corpus profile, which the codec carries.
    lengths = [_music_tokens(result) for split, _, result in tokenized if split == "train"] or [1]
    corpus.music_tokens = [int(np.median(lengths)), int(np.quantile(lengths, 0.95)), int(max(lengths))]
    codec.save_pretrained(prepared.codec_dir)
    padding_share = _write_rows(config, codec, examples, split_stats, prepared.dataset_dir)

    notes = sum(stats["notes"] for stats in split_stats.values())
    music_tokens = sum(stats["music_tokens"] for stats in split_stats.values())
    report = {
        "source": config.source,
        "settings": asdict(config),
        "fingerprint": key,
        "files_read": files_read,
        "files_used": len(pieces),
        "files_skipped": [{"name": item.name, "reason": item.reason} for item in skipped],
        "notes": notes,
        "music_tokens": music_tokens,
        "tokens_per_note": round(music_tokens / max(notes, 1), 4),
        "music_vocab_size": len(codec.music_token_parts),
        "lm_vocab_size": len(codec.lm_tokenizer),
        "padding_share": padding_share,
        "corpus": corpus.to_dict(),
        "splits": split_stats,
        "tasks": list(codec.tasks),
        "train_examples_by_task": task_counts,
        "pieces": piece_reports,
        "versions": {"midillm": __version__, "miditok": MIDITOK_VERSION},
        "seconds": round(time.time() - started, 1),
    }
    prepared.report_path.write_text(json.dumps(report, indent=2) + "\n")
    return report
