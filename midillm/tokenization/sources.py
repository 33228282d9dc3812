"""Corpus sources: where training MIDI comes from, and which files are fit to train on.

A source spec names one of three kinds of corpus:

- a folder: every ``.mid`` / ``.midi`` file under it;
- ``music21:<subset>``: a part of the corpus bundled with music21 (``bach``, ``essen``, ``ryans``,
  ``palestrina``), converted once to MIDI and cached;
- ``hf:<dataset>``: a ``datasets`` dataset (a ``save_to_disk`` folder, or a Hub name) with a column
  of MIDI bytes or MIDI file paths.

Every source yields MIDI files on disk, so one checker (`check_midi_file`) decides for all of them
which files are fit to train on. Real corpora hold broken files (empty, truncated, not MIDI at all,
minutes-long stuck notes); each becomes a `Skipped` with a one-line reason instead of an error,
because one bad file must not stop a run over thousands of good ones.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import music21
import numpy as np
import symusic
from tqdm.auto import tqdm

MIDI_SUFFIXES = (".mid", ".midi")
# Checked before reading: a file this large is a dump or a mistake, not a piece, and reading it
# into every worker would only waste memory.
MAX_FILE_BYTES = 64 * 2**20
MAX_PIECE_SECONDS = 2 * 60 * 60
MAX_NOTE_SECONDS = 10 * 60
# Denser than any player or sequenced part: such files are generator output or corruption (say
# 200,000 notes one tick apart in one track), and would drag the corpus profile (notes per
# onset, gaps, grid) that the grammar and the sanity check trust. Per track, so a full band
# striking together is fine. More notes struck at once than a piano has keys:
MAX_TRACK_NOTES_PER_ONSET = 88
# More separate onsets within one second than a 64th-note roll at 240 BPM (chords count once):
MAX_TRACK_ONSETS_PER_SECOND = 64
# `check_files` records its results per this many files when asked to, so a stopped run that
# checked 100,000 files does not check them again.
CHECK_BATCH_FILES = 1024

# Workers are spawned, not forked: the CLI process may already run threads (tokenizers, torch),
# and forking a threaded process can deadlock the child.
_SPAWN_CONTEXT = multiprocessing.get_context("spawn")
_CONVERSION_PROCESSES = 2


@dataclass(frozen=True)
class MidiFile:
    """A MIDI file on disk: the user's own file, or a cached conversion."""

    path: Path
    # How messages name it: the path relative to the source folder, or e.g. "music21:bach/bwv10.7".
    name: str
    # str -> str, where known: composer, title, key (e.g. "A major"), genre, source.
    metadata: dict


@dataclass(frozen=True)
class Skipped:
    """A file or piece left out of the corpus, with a one-line human-readable reason."""

    name: str
    reason: str


@dataclass(frozen=True)
class CheckedFile:
    """A file that parsed, has notes and sane durations."""

    file: MidiFile
    # sha256 of the file bytes: duplicates share it, and splits are drawn from it so that a piece
    # never lands in two splits.
    content_hash: str
    notes: int


class SourceError(Exception):
    """A failure the CLI prints as one line (unknown source, missing folder, dataset not loadable...)."""


def cache_dir() -> Path:
    """The cache root: $MIDILLM_CACHE, else $XDG_CACHE_HOME/midillm, else ~/.cache/midillm."""
    if os.environ.get("MIDILLM_CACHE"):
        root = Path(os.environ["MIDILLM_CACHE"])
    else:
        xdg_cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(xdg_cache) / "midillm"
    root = root.expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SourceError(f"cannot create the cache folder {root}: {_describe_os_error(error)}") from error
    return root


def list_source(spec: str, limit: int | None = None) -> tuple[list[MidiFile], list[Skipped]]:
    """The MIDI files of a source, in a stable order, and the pieces that could not become one.

    `limit` keeps the first `limit` pieces (files plus skipped), and is applied before any
    conversion, so that a quick run converts only what it uses.
    """
    if limit is not None and limit < 0:
        raise SourceError(f"limit must be 0 or more, not {limit}")
    if spec.startswith("music21:"):
        return _list_music21(spec.removeprefix("music21:"), limit)
    if spec.startswith("hf:"):
        return _list_hf_dataset(spec.removeprefix("hf:"), limit)
    return _list_folder(spec, limit)


def list_sources(specs: list[str], limit: int | None = None) -> tuple[list[MidiFile], list[Skipped]]:
    """The MIDI files of several sources, one after the other (`limit`: the first pieces of
    each). With more than one, each file's metadata names its source ("corpus": the caption's
    Corpus line, so a model learns which corpus a row comes from and a request can ask for one),
    and a folder's files are named with the folder (two folders may both hold "a.mid")."""
    if len(specs) == 1:
        return list_source(specs[0], limit)
    if len(set(specs)) < len(specs):
        raise SourceError(f"a source is given twice: {' '.join(specs)}")
    files, skipped = [], []
    for spec in specs:
        listed, unfit = list_source(spec, limit)
        in_folder = not spec.startswith(("music21:", "hf:"))
        for file in listed:
            name = f"{Path(spec).name}/{file.name}" if in_folder else file.name
            files.append(dataclasses.replace(file, name=name, metadata={**file.metadata, "corpus": spec}))
        skipped += [Skipped(f"{Path(spec).name}/{item.name}" if in_folder else item.name, item.reason)
                    for item in unfit]
    return files, skipped


def check_midi_file(file: MidiFile) -> CheckedFile | Skipped:
    """Parse `file` (reading it, never writing it) and decide whether it is fit to train on."""

    def skip(reason: str) -> Skipped:
        return Skipped(file.name, reason)

    try:
        size = file.path.stat().st_size
        if size == 0:
            return skip("empty file")
        if size > MAX_FILE_BYTES:
            return skip(f"enormous file ({_format_size(size)} > {_format_size(MAX_FILE_BYTES)} limit)")
        data = file.path.read_bytes()
    except OSError as error:
        return skip(f"unreadable file: {_describe_os_error(error)}")

    try:
        score = symusic.Score.from_midi(data).to("second")
    except RuntimeError as error:
        return skip(_describe_midi_error(error))
    except Exception as error:  # a parser bug on one odd file must not end a corpus-wide run
        return skip(describe_error(error))

    notes = [track.notes.numpy() for track in score.tracks if len(track.notes)]
    if not notes:
        return skip("no notes")
    # Measured on notes: a stray controller or marker hours after the last note does not make
    # the music itself long.
    piece_seconds = max((track_notes["time"] + track_notes["duration"]).max() for track_notes in notes)
    if piece_seconds > MAX_PIECE_SECONDS:
        return skip(
            f"absurd duration: the piece lasts {piece_seconds / 3600:.1f} hours "
            f"(> {MAX_PIECE_SECONDS // 3600} hour limit)"
        )
    longest_note = max(track_notes["duration"].max() for track_notes in notes)
    if longest_note > MAX_NOTE_SECONDS:
        return skip(
            f"absurd duration: a note lasts {longest_note / 60:.0f} minutes "
            f"(> {MAX_NOTE_SECONDS // 60} minute limit)"
        )
    density = _absurd_density(notes)
    if density:
        return skip(density)
    return CheckedFile(file, hashlib.sha256(data).hexdigest(), score.note_num())


def _absurd_density(tracks_notes: list[np.ndarray]) -> str | None:
    """Why these tracks' notes (times in seconds) are denser than music is, or None."""
    for track_notes in tracks_notes:
        onsets, notes_per_onset = np.unique(track_notes["time"], return_counts=True)
        if notes_per_onset.max() > MAX_TRACK_NOTES_PER_ONSET:
            return (f"absurd density: {notes_per_onset.max()} notes at one onset of one track "
                    f"(> {MAX_TRACK_NOTES_PER_ONSET} limit)")
        # Onsets from each one to one second later (the window that starts at an onset holds the most).
        within_a_second = np.searchsorted(onsets, onsets + 1.0, side="left") - np.arange(len(onsets))
        if within_a_second.max() > MAX_TRACK_ONSETS_PER_SECOND:
            return (f"absurd density: {within_a_second.max()} onsets within one second in one track "
                    f"(> {MAX_TRACK_ONSETS_PER_SECOND} limit)")
    return None


def check_files(
    files: list[MidiFile], num_workers: int = 2, progress: bool = True, record_dir: Path | None = None
) -> tuple[list[CheckedFile], list[Skipped]]:
    """`check_midi_file` over `files` in worker processes; both lists keep the input order.

    With `record_dir`, the results are written there per `CHECK_BATCH_FILES` files as they are
    made, and a batch an earlier call recorded for the same files (names, sizes, modification
    times) is read back instead of checked again: a stopped `prepare` resumes its checking."""
    step = CHECK_BATCH_FILES if record_dir is not None else max(len(files), 1)
    batches = [files[start:start + step] for start in range(0, len(files), step)]
    workers = min(num_workers, len(files))
    bar = tqdm(total=len(files), desc="Checking files", unit="file", disable=not progress)
    results: list[CheckedFile | Skipped] = []
    executor = None
    try:
        for number, batch in enumerate(batches):
            record = record_dir / f"{number:05d}.json" if record_dir is not None else None
            stamps = _stamps(batch) if record is not None else None
            recorded = _read_check_record(record, stamps, batch) if record is not None else None
            if recorded is not None:
                bar.update(len(batch))
                results.extend(recorded)
                continue
            if workers > 1 and executor is None:
                executor = concurrent.futures.ProcessPoolExecutor(workers, mp_context=_SPAWN_CONTEXT)
            # Small chunks keep the bar moving; big enough ones keep the inter-process traffic low.
            checked = (executor.map(check_midi_file, batch, chunksize=max(1, min(32, len(batch) // (workers * 16))))
                       if executor is not None else map(check_midi_file, batch))
            batch_results = []
            for result in checked:
                batch_results.append(result)
                bar.update(1)
            if record is not None:
                _write_check_record(record, stamps, batch_results)
            results.extend(batch_results)
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    return _split_checked(results)


def _stamps(files: list[MidiFile]) -> list:
    """What says a file is unchanged since it was checked: its name, size and modification time."""
    stamps = []
    for file in files:
        try:
            status = file.path.stat()
            stamps.append([file.name, status.st_size, status.st_mtime_ns])
        except OSError:
            stamps.append([file.name, None, None])
    return stamps


def _read_check_record(record: Path, stamps: list, files: list[MidiFile]) -> list[CheckedFile | Skipped] | None:
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved["files"] != stamps:
            return None
        return [Skipped(file.name, result["skipped"]) if "skipped" in result
                else CheckedFile(file, result["hash"], result["notes"])
                for file, result in zip(files, saved["results"], strict=True)]
    except (OSError, ValueError, KeyError, TypeError):  # not recorded yet, or recorded for other files
        return None


def _write_check_record(record: Path, stamps: list, results: list[CheckedFile | Skipped]) -> None:
    saved = [{"skipped": result.reason} if isinstance(result, Skipped)
             else {"hash": result.content_hash, "notes": result.notes} for result in results]
    _write_atomically(record, json.dumps({"files": stamps, "results": saved}).encode("utf-8"))


def _split_checked(results: Iterable[CheckedFile | Skipped]) -> tuple[list[CheckedFile], list[Skipped]]:
    checked: list[CheckedFile] = []
    skipped: list[Skipped] = []
    for result in results:
        (checked if isinstance(result, CheckedFile) else skipped).append(result)
    return checked, skipped


# ---------------------------------------------------------------------------------------------
# Folders


def _list_folder(spec: str, limit: int | None) -> tuple[list[MidiFile], list[Skipped]]:
    folder = Path(spec).expanduser()
    if not folder.exists():
        if re.match(r"[A-Za-z][\w.+-]*:", spec):
            raise SourceError(
                f"unknown source {spec!r}: expected a MIDI folder, music21:<subset> or hf:<dataset>"
            )
        raise SourceError(f"MIDI folder not found: {spec}")
    if not folder.is_dir():
        raise SourceError(f"not a folder: {spec} (a source is a folder of .mid/.midi files)")
    paths = sorted(
        (path for path in folder.rglob("*") if path.suffix.lower() in MIDI_SUFFIXES and path.is_file()),
        key=lambda path: path.relative_to(folder).as_posix(),
    )
    if not paths:
        raise SourceError(f"no .mid or .midi files in folder: {spec}")
    files = [MidiFile(path, path.relative_to(folder).as_posix(), {}) for path in paths[:limit]]
    return files, []


# ---------------------------------------------------------------------------------------------
# The music21 corpus


@dataclass(frozen=True)
class _Music21Subset:
    corpus_name: str  # the name music21.corpus.getComposer knows it by
    default_composer: str | None  # for pieces whose own metadata names none


_MUSIC21_SUBSETS = {
    "bach": _Music21Subset("bach", "J.S. Bach"),
    "essen": _Music21Subset("essenFolksong", None),
    "ryans": _Music21Subset("ryansMammoth", None),
    "palestrina": _Music21Subset("palestrina", "Palestrina"),
}
# Some pieces ship in two formats (bach/bwv277 as .mxl and .krn): keep the first found in this
# order. Other formats are left out: the .rntxt files beside the chorales are Roman-numeral
# analyses of them, not further pieces.
_SCORE_FORMATS = (".mxl", ".musicxml", ".xml", ".krn", ".abc")
# Bump when the conversion changes; cached pieces with another stamp, or written by another
# music21 version, are converted again.
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class _ConversionTask:
    subset: str
    corpus_path: Path
    out_dir: Path
    max_pieces: int | None  # an .abc file can hold hundreds of songs; a quick run needs a few

    @property
    def stem(self) -> str:
        return self.corpus_path.stem

    @property
    def index_path(self) -> Path:
        return self.out_dir / f"{self.stem}.json"


def _list_music21(subset: str, limit: int | None) -> tuple[list[MidiFile], list[Skipped]]:
    if subset not in _MUSIC21_SUBSETS:
        choices = ", ".join(f"music21:{name}" for name in _MUSIC21_SUBSETS)
        raise SourceError(f"unknown music21 subset {subset!r}: choose one of {choices}")
    out_dir = cache_dir() / "music21" / subset
    # Each corpus file's pieces, from the cache or from a conversion, in corpus order. A file yields
    # at least one piece or one skip, so counting an unconverted file as one is enough to know
    # which files a `limit` needs before converting any.
    entries: dict[Path, dict | None] = {}
    expected_pieces = 0
    for corpus_path in _music21_corpus_files(subset):
        if limit is not None and expected_pieces >= limit:
            break
        entries[corpus_path] = _read_cached_entry(out_dir / f"{corpus_path.stem}.json", limit)
        expected_pieces += len(entries[corpus_path]["pieces"]) if entries[corpus_path] else 1

    tasks = [
        _ConversionTask(subset, corpus_path, out_dir, limit)
        for corpus_path, entry in entries.items()
        if entry is None
    ]
    for task, entry in zip(tasks, _convert_corpus_files(tasks, f"Converting music21:{subset}")):
        entries[task.corpus_path] = entry

    pieces = [piece for entry in entries.values() for piece in entry["pieces"]][:limit]
    files: list[MidiFile] = []
    skipped: list[Skipped] = []
    for piece in pieces:
        name = f"music21:{subset}/{piece['id']}"
        if "skipped" in piece:
            skipped.append(Skipped(name, piece["skipped"]))
        else:
            files.append(MidiFile(out_dir / f"{piece['id']}.mid", name, piece["metadata"]))
    return files, skipped


def _music21_corpus_files(subset: str) -> list[Path]:
    corpus_name = _MUSIC21_SUBSETS[subset].corpus_name
    def preference(path: Path) -> int:
        return _SCORE_FORMATS.index(path.suffix.lower())

    by_stem: dict[str, Path] = {}
    for path in map(Path, music21.corpus.getComposer(corpus_name)):
        if path.suffix.lower() in _SCORE_FORMATS:
            kept = by_stem.setdefault(path.stem, path)
            if preference(path) < preference(kept):
                by_stem[path.stem] = path
    return [by_stem[stem] for stem in sorted(by_stem)]


def _cache_stamp() -> str:
    return f"{_CACHE_FORMAT}/music21-{music21.__version__}"


def _read_cached_entry(index_path: Path, limit: int | None) -> dict | None:
    """A corpus file's cached pieces, or None when they must be converted (again)."""
    try:
        entry = json.loads(index_path.read_text(encoding="utf-8"))
        if entry["stamp"] != _cache_stamp():
            return None
        if not entry["complete"] and (limit is None or len(entry["pieces"]) < limit):
            return None
        converted = [piece for piece in entry["pieces"] if "skipped" not in piece]
        if not all((index_path.parent / f"{piece['id']}.mid").is_file() for piece in converted):
            return None
    except (OSError, ValueError, KeyError, TypeError):  # unreadable or hand-edited: convert again
        return None
    return entry


def _convert_corpus_files(tasks: list[_ConversionTask], description: str) -> list[dict]:
    if not tasks:
        return []
    with _SPAWN_CONTEXT.Pool(min(_CONVERSION_PROCESSES, len(tasks))) as pool:
        converted = pool.imap(_convert_corpus_file, tasks)
        return list(tqdm(converted, total=len(tasks), desc=description, unit="file"))


def _convert_corpus_file(task: _ConversionTask) -> dict:
    """Convert the pieces of one corpus file to MIDI files, and cache what became of each.

    Runs in a worker process. The index JSON is written last, so a run stopped halfway leaves
    no index pointing at missing pieces; the next run converts that file again.
    """
    # music21 warns about oddities in corpus files that the user can do nothing about, and the
    # warnings would break up the progress bar.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parsed = music21.corpus.parse(task.corpus_path)
        except Exception as error:
            pieces = [{"id": task.stem, "skipped": f"music21 could not parse it: {describe_error(error)}"}]
            complete = True
        else:
            if isinstance(parsed, music21.stream.Opus):
                scores = list(parsed.scores)
                piece_ids = [f"{task.stem}/{number}" for number in range(1, len(scores) + 1)]
            else:
                scores, piece_ids = [parsed], [task.stem]
            chosen = list(zip(scores, piece_ids))[: task.max_pieces]
            pieces = [_convert_score(score, piece_id, task) for score, piece_id in chosen]
            complete = len(chosen) == len(scores)
    entry = {"stamp": _cache_stamp(), "complete": complete, "pieces": pieces}
    _write_atomically(task.index_path, json.dumps(entry, ensure_ascii=False, indent=1).encode("utf-8"))
    return entry


def _convert_score(score: music21.stream.Score, piece_id: str, task: _ConversionTask) -> dict:
    metadata = _music21_metadata(score, piece_id, task.subset)
    try:
        _unshare_elements(score)
        midi_bytes = music21.midi.translate.streamToMidiFile(score).writestr()
    except Exception as error:
        return {"id": piece_id, "skipped": f"music21 could not convert it to MIDI: {describe_error(error)}"}
    _write_atomically(task.out_dir / f"{piece_id}.mid", midi_bytes)
    return {"id": piece_id, "metadata": metadata}


def _unshare_elements(score: music21.stream.Score) -> None:
    """Give each placement of an element its own copy.

    music21's ABC reader puts one TimeSignature object in every measure that returns to that
    metre, and its MIDI writer then fails ("already found in this Stream") on about a fifth of
    the Essen songs.
    """
    seen: set[int] = set()
    repeated = []
    for element in score.recurse():
        if id(element) in seen:
            repeated.append((element.activeSite, element))
        seen.add(id(element))
    for site, element in repeated:
        site.replace(element, copy.deepcopy(element))


def _music21_metadata(score: music21.stream.Score, piece_id: str, subset: str) -> dict[str, str]:
    metadata: dict[str, str] = {}
    own = score.metadata
    composer = (own.composer if own else None) or _MUSIC21_SUBSETS[subset].default_composer
    if composer:
        metadata["composer"] = composer
    metadata["title"] = _music21_title(score, piece_id)
    try:
        key = score.analyze("key")
        # music21 spells flats with "-" ("B- major"); captions should read like prose.
        metadata["key"] = f"{key.tonic.name.replace('-', 'b')} {key.mode}"
    except Exception:  # pieces without pitches have no key; that is not a reason to skip them
        pass
    metadata["source"] = f"music21:{subset}"
    return metadata


def _music21_title(score: music21.stream.Score, piece_id: str) -> str:
    own = score.metadata
    stem, _, number = piece_id.partition("/")
    for title in (own.title, own.movementName) if own else ():
        # The MusicXML chorales carry their file name ("bwv10.7.mxl") as the movement name.
        if title and not title.lower().endswith(_SCORE_FORMATS):
            return title
    bwv = re.fullmatch(r"bwv(.+)", stem, re.IGNORECASE)
    readable = f"BWV {bwv[1]}" if bwv else re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", stem.replace("_", " "))
    return f"{readable} no. {number}" if number else readable


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets

# Column name -> metadata key, in order of preference when a dataset has both.
_HF_METADATA_COLUMNS = {
    "composer": "composer",
    "artist": "composer",
    "title": "title",
    "name": "title",
    "key": "key",
    "genre": "genre",
}


def _list_hf_dataset(name: str, limit: int | None) -> tuple[list[MidiFile], list[Skipped]]:
    # Imported here: `datasets` takes most of a second to import, and the checker workers,
    # which import this module, never need it.
    import datasets

    if not name:
        raise SourceError("hf: needs a dataset: hf:<folder written by save_to_disk> or hf:<owner/name>")
    local_folder = Path(name).expanduser()
    try:
        if local_folder.is_dir():
            loaded = datasets.load_from_disk(str(local_folder))
        else:
            loaded = datasets.load_dataset(name)
    except Exception as error:
        raise SourceError(f"could not load dataset {name!r}: {describe_error(error)}") from error
    if isinstance(loaded, datasets.Dataset):
        splits = {str(loaded.split or "train"): loaded}
    else:
        splits = dict(loaded)

    hf_cache = cache_dir() / "hf"
    files: list[MidiFile] = []
    skipped: list[Skipped] = []
    for split, dataset in splits.items():
        midi_column = _find_midi_column(dataset)
        metadata_columns = {
            column: key for column in dataset.column_names
            if column != midi_column and (key := _HF_METADATA_COLUMNS.get(column.lower()))
        }
        rows = dataset.select_columns([midi_column, *metadata_columns])
        if limit is not None:
            rows = rows.select(range(min(len(rows), limit - len(files) - len(skipped))))
        progress = tqdm(_iter_rows(rows), total=len(rows), desc=f"Reading hf:{name}/{split}")
        for index, row in enumerate(progress):
            piece_name = f"hf:{name}/{split}/{index}"
            value = row[midi_column]
            if isinstance(value, dict):
                value = value.get("bytes")
            if isinstance(value, str):
                path = _resolve_dataset_path(value, local_folder)
                if not path.is_file():
                    skipped.append(Skipped(piece_name, f"file not found: {value}"))
                    continue
            elif value:
                path = hf_cache / f"{hashlib.sha256(value).hexdigest()}.mid"
                if not path.is_file():
                    _write_atomically(path, value)
            else:
                skipped.append(Skipped(piece_name, f"no MIDI data in column {midi_column!r}"))
                continue
            metadata = {"source": f"hf:{name}"}
            for column, key in metadata_columns.items():
                text = _metadata_text(row[column])
                if text and key not in metadata:
                    metadata[key] = text
            files.append(MidiFile(path, piece_name, metadata))
    return files, skipped


def _iter_rows(dataset: Any) -> Iterable[dict]:
    # Batched reads: row-by-row access to an Arrow table costs a conversion per row.
    for batch in dataset.iter(batch_size=256):
        columns = list(batch)
        for values in zip(*(batch[column] for column in columns)):
            yield dict(zip(columns, values))


def _find_midi_column(dataset: Any) -> str:
    """The column holding MIDI: bytes, {"bytes": ...} dicts, or paths of .mid/.midi files."""
    import datasets

    features = dataset.features
    # Columns named like "midi" first, so that a dataset with audio and MIDI picks the MIDI.
    for column in sorted(features, key=lambda column: "midi" not in column.lower()):
        feature = features[column]
        if isinstance(feature, dict) and "bytes" in feature:
            return column
        if isinstance(feature, datasets.Value) and feature.dtype in ("binary", "large_binary"):
            return column
        if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            first_values = dataset[: min(8, len(dataset))][column]
            if any(str(value).lower().endswith(MIDI_SUFFIXES) for value in first_values if value):
                return column
    found = ", ".join(f"{column} ({features[column]})" for column in features) or "none"
    raise SourceError(
        "no MIDI column in the dataset (expected bytes, {'bytes': ...} or .mid/.midi paths); "
        f"columns found: {found}"
    )


def _resolve_dataset_path(value: str, local_folder: Path) -> Path:
    # Relative paths in a dataset saved to disk are most likely relative to that dataset.
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists() and local_folder.is_dir():
        return local_folder / path
    return path


def _metadata_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value if item is not None)
    return "" if value is None else str(value).strip()


# ---------------------------------------------------------------------------------------------
# Small helpers


def _write_atomically(path: Path, data: bytes) -> None:
    """Write through a temporary file and a rename, so no reader ever sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def describe_error(error: BaseException) -> str:
    """Exception type and the first line of its message: enough to search for, one line long."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _describe_os_error(error: OSError) -> str:
    return error.strerror.lower() if error.strerror else describe_error(error)


# symusic's reader reports problems in its own words ("MiniMidi: Invaild midi file! File header is
# not MThd!: iostream error"); these markers say which kind of problem a message describes.
_MIDI_ERROR_KINDS = (
    (("mthd", "file size is less than", "first chunk length", "midi format"), "not a valid MIDI file"),
    (("division type",), "unsupported MIDI file"),
    (("eof", "chunk length"), "truncated or corrupt MIDI file"),
)


def _describe_midi_error(error: RuntimeError) -> str:
    message = str(error).strip().splitlines()[0] if str(error).strip() else "unknown error"
    message = message.removeprefix("MiniMidi: ").removesuffix(": iostream error")
    message = message.replace("Invaild midi file! ", "").replace("Invaild", "Invalid").rstrip("!")
    message = re.sub(r"^Get (\w+)=(-?\d+)$", r"out-of-range \1 \2", message)
    message = message[:1].lower() + message[1:]
    lowered = message.lower()
    for markers, kind in _MIDI_ERROR_KINDS:
        if any(marker in lowered for marker in markers):
            return f"{kind}: {message}"
    return f"corrupt MIDI file: {message}"


def _format_size(size: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.0f} {unit}"
    return f"{size} bytes"
