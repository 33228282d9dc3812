"""Corpus sources: listing folders, the music21 corpus and datasets, and skipping bad files."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import datasets
import music21
import pytest
from symusic import Note, Score, Tempo, Track

from midillm.tokenization import sources
from midillm.tokenization.sources import CheckedFile, MidiFile, Skipped, SourceError

TICKS_PER_QUARTER = 480


def make_score(note_length_ticks: int = TICKS_PER_QUARTER, with_notes: bool = True) -> Score:
    """Two tracks at 120 bpm, so one quarter is half a second."""
    score = Score(TICKS_PER_QUARTER)
    score.tempos.append(Tempo(0, 120))
    for program, pitches in ((0, (60, 64, 67, 72)), (32, (36, 43))):
        track = Track(f"program {program}", program=program)
        if with_notes:
            for index, pitch in enumerate(pitches):
                track.notes.append(Note(index * TICKS_PER_QUARTER, note_length_ticks, pitch, 80))
        score.tracks.append(track)
    return score


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Good MIDI files among the kinds of bad files real corpora hold."""
    folder = tmp_path / "corpus"
    (folder / "nested" / "deeper").mkdir(parents=True)
    good = make_score().dumps_midi()
    make_score().dump_midi(folder / "good.mid")
    make_score().dump_midi(folder / "nested" / "deeper" / "also_good.MIDI")
    (folder / "empty.mid").write_bytes(b"")
    (folder / "truncated.mid").write_bytes(good[: len(good) // 2])
    (folder / "random.mid").write_bytes(random.Random(0).randbytes(2000))
    (folder / "text.mid").write_text("This is a shopping list, not a MIDI file.\n")
    make_score(with_notes=False).dump_midi(folder / "no_notes.mid")
    twenty_minutes = 20 * 60 * 2 * TICKS_PER_QUARTER
    make_score(note_length_ticks=twenty_minutes).dump_midi(folder / "stuck_note.mid")
    (folder / "notes.txt").write_text("not listed: wrong suffix")
    return folder


def snapshot(folder: Path) -> dict[Path, tuple[bytes, int]]:
    files = (path for path in folder.rglob("*") if path.is_file())
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in files}


def test_folder_lists_midi_files_recursively_and_skips_bad_ones(mixed_folder: Path) -> None:
    before = snapshot(mixed_folder)

    files, listed_skipped = sources.list_source(str(mixed_folder))
    assert listed_skipped == []
    assert [file.name for file in files] == [
        "empty.mid",
        "good.mid",
        "nested/deeper/also_good.MIDI",
        "no_notes.mid",
        "random.mid",
        "stuck_note.mid",
        "text.mid",
        "truncated.mid",
    ]

    checked, skipped = sources.check_files(files, num_workers=1, progress=False)
    assert [result.file.name for result in checked] == ["good.mid", "nested/deeper/also_good.MIDI"]
    assert all(result.notes == 6 for result in checked)
    # Equal bytes, equal hash: this is what deduplication relies on.
    assert checked[0].content_hash == checked[1].content_hash
    reasons = {result.name: result.reason for result in skipped}
    assert list(reasons) == [
        "empty.mid", "no_notes.mid", "random.mid", "stuck_note.mid", "text.mid", "truncated.mid"
    ]
    assert reasons["empty.mid"] == "empty file"
    assert reasons["no_notes.mid"] == "no notes"
    assert reasons["random.mid"] == "not a valid MIDI file: file header is not MThd"
    assert reasons["text.mid"] == "not a valid MIDI file: file header is not MThd"
    assert reasons["truncated.mid"].startswith("truncated or corrupt MIDI file: ")
    assert reasons["stuck_note.mid"] == "absurd duration: a note lasts 20 minutes (> 10 minute limit)"
    assert all("\n" not in reason for reason in reasons.values())

    assert snapshot(mixed_folder) == before


def test_denser_than_music_is_skipped_and_a_dense_band_is_not(tmp_path: Path) -> None:
    def checked(name: str, notes: list[tuple[int, int]], tracks: int = 1):
        score = Score(TICKS_PER_QUARTER)
        score.tempos.append(Tempo(0, 120))  # a tick is 1/960 s
        for number in range(tracks):
            track = Track(f"track {number}", program=number)
            track.notes.extend(Note(time, TICKS_PER_QUARTER, pitch, 80) for time, pitch in notes)
            score.tracks.append(track)
        score.dump_midi(tmp_path / name)
        return sources.check_midi_file(MidiFile(tmp_path / name, name, {}))

    cluster = checked("cluster.mid", [(0, pitch) for pitch in range(20, 110)])
    assert cluster.reason == "absurd density: 90 notes at one onset of one track (> 88 limit)"
    # 32nd notes at 120 BPM in 16 tracks at once, each with 5-note chords: dense, but music.
    band = checked("band.mid", [(time, pitch) for time in range(0, 8 * TICKS_PER_QUARTER, TICKS_PER_QUARTER // 8)
                                for pitch in (60, 64, 67, 70, 74)], tracks=16)
    assert isinstance(band, CheckedFile)
    # A roll of 65 onsets in one second (one a 65th of a second), 64 is still allowed.
    roll = checked("roll.mid", [(round(index * 960 / 65), 38) for index in range(65)])
    assert roll.reason == "absurd density: 65 onsets within one second in one track (> 64 limit)"
    assert isinstance(checked("fast.mid", [(index * 15, 38) for index in range(64)]), CheckedFile)


def test_limit_keeps_the_first_files(mixed_folder: Path) -> None:
    files, _ = sources.list_source(str(mixed_folder), limit=2)
    assert [file.name for file in files] == ["empty.mid", "good.mid"]


def test_check_files_in_two_workers_keeps_input_order(mixed_folder: Path) -> None:
    files, _ = sources.list_source(str(mixed_folder))
    shuffled = files * 2
    random.Random(1).shuffle(shuffled)

    checked, skipped = sources.check_files(shuffled, num_workers=2, progress=False)

    in_process = [sources.check_midi_file(file) for file in shuffled]
    assert checked == [result for result in in_process if isinstance(result, CheckedFile)]
    assert skipped == [result for result in in_process if isinstance(result, Skipped)]


def test_enormous_file_is_skipped_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.mid"
    path.write_bytes(make_score().dumps_midi() + bytes(3 * 2**10))
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 2**10)

    def read_bytes(self: Path) -> bytes:
        raise AssertionError("an enormous file must be refused before it is read")

    monkeypatch.setattr(Path, "read_bytes", read_bytes)

    result = sources.check_midi_file(MidiFile(path, "big.mid", {}))
    assert result == Skipped("big.mid", "enormous file (3 KiB > 1 KiB limit)")


def test_piece_longer_than_two_hours_is_skipped(tmp_path: Path) -> None:
    score = make_score()
    three_hours = 3 * 60 * 60 * 2 * TICKS_PER_QUARTER
    score.tracks[0].notes.append(Note(three_hours, TICKS_PER_QUARTER, 60, 80))
    path = tmp_path / "marathon.mid"
    score.dump_midi(path)

    result = sources.check_midi_file(MidiFile(path, "marathon.mid", {}))
    assert result == Skipped("marathon.mid", "absurd duration: the piece lasts 3.0 hours (> 2 hour limit)")


def test_events_after_the_last_note_do_not_make_a_piece_long(tmp_path: Path) -> None:
    score = make_score()
    score.tempos.append(Tempo(3 * 60 * 60 * 2 * TICKS_PER_QUARTER, 90))
    path = tmp_path / "late_tempo.mid"
    score.dump_midi(path)

    assert isinstance(sources.check_midi_file(MidiFile(path, "late_tempo.mid", {})), CheckedFile)


def test_unreadable_and_vanished_files_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vanished = sources.check_midi_file(MidiFile(tmp_path / "gone.mid", "gone.mid", {}))
    assert vanished == Skipped("gone.mid", "unreadable file: no such file or directory")

    path = tmp_path / "locked.mid"
    make_score().dump_midi(path)

    def read_bytes(self: Path) -> bytes:
        # Tests often run as root, where chmod 000 does not stop a read.
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    locked = sources.check_midi_file(MidiFile(path, "locked.mid", {}))
    assert locked == Skipped("locked.mid", "unreadable file: permission denied")


def test_unexpected_parser_errors_become_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "odd.mid"
    make_score().dump_midi(path)

    def from_midi(data: bytes) -> Score:
        raise ValueError("something nobody planned for\nwith a second line")

    monkeypatch.setattr(sources, "symusic", SimpleNamespace(Score=SimpleNamespace(from_midi=from_midi)))
    result = sources.check_midi_file(MidiFile(path, "odd.mid", {}))
    assert result == Skipped("odd.mid", "ValueError: something nobody planned for")


@pytest.mark.parametrize(
    ("make_spec", "message"),
    [
        (lambda tmp_path: str(tmp_path / "missing"), "MIDI folder not found"),
        (lambda tmp_path: str(tmp_path / "only_text"), "no .mid or .midi files in folder"),
        (lambda tmp_path: str(tmp_path / "only_text" / "readme.txt"), "not a folder"),
        (lambda tmp_path: "music21:nope", "unknown music21 subset 'nope': choose one of music21:bach"),
        (lambda tmp_path: "spotify:playlist", "unknown source 'spotify:playlist'"),
        (lambda tmp_path: "hf:", "hf: needs a dataset"),
    ],
)
def test_bad_specs_raise_one_line_source_errors(tmp_path: Path, make_spec, message: str) -> None:
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "readme.txt").write_text("no music here")

    with pytest.raises(SourceError, match=message) as raised:
        sources.list_source(make_spec(tmp_path))
    assert "\n" not in str(raised.value)


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIDILLM_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sources.cache_dir() == tmp_path / "xdg" / "midillm"
    assert sources.cache_dir().is_dir()

    monkeypatch.setenv("MIDILLM_CACHE", str(tmp_path / "mine"))
    assert sources.cache_dir() == tmp_path / "mine"


def test_music21_bach_is_converted_once_then_read_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIDILLM_CACHE", str(tmp_path / "cache"))

    files, skipped = sources.list_source("music21:bach", limit=3)

    assert skipped == []
    assert [file.name for file in files] == [
        "music21:bach/bwv1.6", "music21:bach/bwv10.7", "music21:bach/bwv101.7"
    ]
    for file in files:
        assert file.path.parent == tmp_path / "cache" / "music21" / "bach"
        assert file.metadata["composer"] == "J.S. Bach"
        assert file.metadata["source"] == "music21:bach"
        assert file.metadata["key"].endswith((" major", " minor"))
    assert files[1].metadata["title"] == "BWV 10.7"
    assert files[1].metadata["key"] == "G minor"
    checked, check_skipped = sources.check_files(files, num_workers=1, progress=False)
    assert check_skipped == [] and all(result.notes > 100 for result in checked)
    assert not list((tmp_path / "cache").rglob("*.tmp"))

    def no_parsing(*args, **kwargs):
        raise AssertionError("a cached piece must not be parsed again")

    def no_conversion(tasks, description):
        assert tasks == [], "a cached piece must not be converted again"
        return []

    monkeypatch.setattr(music21.corpus, "parse", no_parsing)
    monkeypatch.setattr(sources, "_convert_corpus_files", no_conversion)
    again, _ = sources.list_source("music21:bach", limit=3)
    assert again == files


# Two tunes in the layout of the Essen collection; the first one's metre returns to 4/2, which
# makes music21's ABC reader share one TimeSignature between measures.
TWO_TUNES_ABC = """\
X:1
T:Der Graf von Rom oder der Graf im Pfluge
M:4/2
L:1/4
K:G
G2 | G2G2B2G2 | d4d4z2
d2 | e2d2=f2d2 | e4d4z2

X:2
T:Plain
M:3/4
L:1/4
K:D
DFA|dfa|]
"""


def test_corpus_file_with_many_songs_becomes_one_piece_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    abc_path = tmp_path / "tunes.abc"
    abc_path.write_text(TWO_TUNES_ABC)
    # corpus.parse only finds files inside music21's corpus; this one is a file of our own.
    monkeypatch.setattr(music21.corpus, "parse", music21.converter.parse)
    out_dir = tmp_path / "out"

    entry = sources._convert_corpus_file(sources._ConversionTask("essen", abc_path, out_dir, None))

    assert entry["complete"]
    assert [piece["id"] for piece in entry["pieces"]] == ["tunes/1", "tunes/2"]
    assert entry["pieces"][0]["metadata"] == {
        "title": "Der Graf von Rom oder der Graf im Pfluge",
        "key": "G major",
        "source": "music21:essen",
    }
    assert (out_dir / "tunes" / "1.mid").is_file() and (out_dir / "tunes.json").is_file()

    limited = sources._convert_corpus_file(sources._ConversionTask("essen", abc_path, out_dir, 1))
    assert not limited["complete"] and len(limited["pieces"]) == 1


def test_music21_conversion_failures_become_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    abc_path = tmp_path / "tunes.abc"
    abc_path.write_text(TWO_TUNES_ABC)
    monkeypatch.setattr(music21.corpus, "parse", music21.converter.parse)

    def badly_formed(stream):
        raise music21.repeat.ExpanderException("badly formed repeats\nsecond line")

    monkeypatch.setattr(music21.midi.translate, "streamToMidiFile", badly_formed)
    entry = sources._convert_corpus_file(sources._ConversionTask("essen", abc_path, tmp_path, None))
    assert entry["pieces"][0] == {
        "id": "tunes/1",
        "skipped": "music21 could not convert it to MIDI: ExpanderException: badly formed repeats",
    }

    absent = sources._ConversionTask("essen", tmp_path / "absent.abc", tmp_path, None)
    unparsable = sources._convert_corpus_file(absent)
    assert unparsable["pieces"][0]["id"] == "absent"
    assert unparsable["pieces"][0]["skipped"].startswith("music21 could not parse it: ")


@pytest.mark.parametrize("layout", ["bytes", "bytes_dict", "path"])
def test_hf_dataset_saved_to_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    monkeypatch.setenv("MIDILLM_CACHE", str(tmp_path / "cache"))
    tunes = [make_score().dumps_midi(), make_score(note_length_ticks=240).dumps_midi()]
    if layout == "bytes":
        column = tunes
    elif layout == "bytes_dict":
        column = [{"bytes": data, "path": f"{index}.mid"} for index, data in enumerate(tunes)]
    else:
        column = []
        for index, data in enumerate(tunes):
            (tmp_path / f"{index}.mid").write_bytes(data)
            column.append(str(tmp_path / f"{index}.mid"))
    train = datasets.Dataset.from_dict(
        {"title": ["First", "Second"], "artist": ["Anon", None], "midi": column}
    )
    held_out = datasets.Dataset.from_dict({"title": ["Third"], "artist": ["Anon"], "midi": column[:1]})
    saved = tmp_path / "dataset"
    datasets.DatasetDict({"train": train, "test": held_out}).save_to_disk(str(saved))

    files, skipped = sources.list_source(f"hf:{saved}")

    assert skipped == []
    assert [file.name for file in files] == [
        f"hf:{saved}/train/0", f"hf:{saved}/train/1", f"hf:{saved}/test/0"
    ]
    assert [file.path.read_bytes() for file in files] == [tunes[0], tunes[1], tunes[0]]
    assert files[0].metadata == {"source": f"hf:{saved}", "title": "First", "composer": "Anon"}
    assert files[1].metadata == {"source": f"hf:{saved}", "title": "Second"}
    checked, _ = sources.check_files(files, num_workers=1, progress=False)
    assert len(checked) == 3

    limited, _ = sources.list_source(f"hf:{saved}", limit=1)
    assert [file.name for file in limited] == [f"hf:{saved}/train/0"]


def test_hf_dataset_without_midi_column(tmp_path: Path) -> None:
    saved = tmp_path / "lyrics"
    datasets.Dataset.from_dict({"text": ["la la la"], "label": [1]}).save_to_disk(str(saved))

    with pytest.raises(SourceError, match=r"no MIDI column .* columns found: text .*, label"):
        sources.list_source(f"hf:{saved}")


def test_hf_dataset_not_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(name: str):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)\ndetails follow")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SourceError) as raised:
        sources.list_source("hf:someone/midi-set")
    assert str(raised.value) == (
        "could not load dataset 'someone/midi-set': "
        "ConnectionError: Couldn't reach 'someone/midi-set' on the Hub (LocalEntryNotFoundError)"
    )


def test_a_gguf_is_dequantized_once_for_every_install_of_the_same_file(tmp_path: Path, monkeypatch) -> None:
    """The dequantized base model is cached by the GGUF's content: two virtual environments (two
    paths) holding the same file share one cache folder; a file with other bytes gets its own."""
    from midillm.tokenization.base_model import gguf_cache_folder as _gguf_cache_folder

    monkeypatch.setenv("MIDILLM_CACHE", str(tmp_path / "cache"))
    first, second, other = (tmp_path / name / "model.Q4_1.gguf" for name in ("venv-a", "venv-b", "venv-c"))
    for path, payload in ((first, b"GGUF weights"), (second, b"GGUF weights"), (other, b"GGUF weighTs")):
        path.parent.mkdir()
        path.write_bytes(payload)
    assert _gguf_cache_folder(first) == _gguf_cache_folder(second)
    assert _gguf_cache_folder(first) != _gguf_cache_folder(other)
    assert _gguf_cache_folder(first).parent == tmp_path / "cache" / "base-models"
    assert _gguf_cache_folder(first).name.startswith("model.Q4_1-")
