"""`midillm prepare`: mixed good and bad folders, splits, chunking, packing, caching."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from datasets import load_from_disk

from midillm.cli import main
from midillm.tokenization.dataset import split_of
from midillm.tokenization.rows import IGNORE_INDEX, chunk_piece, infill_example, labelled, pack_rows


@pytest.fixture
def mixed_folder(tmp_path, bach_midi_files, band_midi_files):
    folder = tmp_path / "mixed"
    (folder / "nested").mkdir(parents=True)
    for path in bach_midi_files[:12]:
        shutil.copy(path, folder / path.name)
    shutil.copy(band_midi_files[0], folder / "nested" / "band.MIDI")
    shutil.copy(bach_midi_files[0], folder / "nested" / "copy-of-first.mid")
    (folder / "empty.mid").write_bytes(b"")
    (folder / "truncated.mid").write_bytes(bach_midi_files[1].read_bytes()[:200])
    (folder / "random.mid").write_bytes(bytes(range(256)) * 8)
    (folder / "letter.mid").write_text("Dear Johann, this is not a MIDI file.")
    (folder / "readme.txt").write_text("ignored: not a MIDI file name")
    return folder


def snapshot(folder):
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in folder.rglob("*") if path.is_file()}


def test_prepare_skips_bad_files_and_writes_the_dataset(mixed_folder, tmp_path, tiny_lm_tokenizer_path,
                                                       bach_midi_files, capsys):
    before = snapshot(mixed_folder)
    out = tmp_path / "out"
    code = main(["prepare", str(mixed_folder), "--out", str(out), "--base-model", str(tiny_lm_tokenizer_path),
                 "--vocab-size", "800", "--seq-len", "256", "--num-workers", "2"])
    captured = capsys.readouterr()
    assert code == 0
    assert "Traceback" not in captured.out + captured.err
    report = json.loads((out / "prepare.json").read_text())
    reasons = {item["name"]: item["reason"] for item in report["files_skipped"]}
    # Files are listed by relative path, so the nested copy is the one seen second.
    assert set(reasons) == {"empty.mid", "truncated.mid", "random.mid", "letter.mid",
                            "nested/copy-of-first.mid"}
    assert "empty" in reasons["empty.mid"]
    assert "not a valid MIDI" in reasons["random.mid"] and "not a valid MIDI" in reasons["letter.mid"]
    assert reasons["nested/copy-of-first.mid"] == f"duplicate of {bach_midi_files[0].name}"
    for name in reasons:
        assert f"skipped {name}" in captured.out
    assert report["files_read"] == 18 and report["files_used"] == 13
    assert report["notes"] > 0 and 0 < report["tokens_per_note"] < 4.0
    dataset = load_from_disk(str(out / "dataset"))
    assert set(dataset) == {"train", "validation", "test"}
    assert all(len(dataset[split]) > 0 for split in dataset)
    row = dataset["train"][0]
    assert len(row["input_ids"]) == len(row["labels"]) == 256
    assert (out / "codec" / "midillm_codec.json").is_file()
    assert snapshot(mixed_folder) == before  # nothing the user passed in was touched


def test_second_run_reuses_the_result(mixed_folder, tmp_path, tiny_lm_tokenizer_path, capsys):
    arguments = ["prepare", str(mixed_folder), "--out", str(tmp_path / "out"), "--base-model",
                 str(tiny_lm_tokenizer_path), "--vocab-size", "800", "--seq-len", "256", "--num-workers", "1"]
    assert main(arguments) == 0
    first = (tmp_path / "out" / "prepare.json").read_text()
    capsys.readouterr()
    assert main(arguments) == 0
    assert "up to date" in capsys.readouterr().out
    assert (tmp_path / "out" / "prepare.json").read_text() == first
    # A changed setting is a new build.
    assert main(arguments[:-2] + ["--num-workers", "1", "--seq-len", "300"]) == 0
    assert "up to date" not in capsys.readouterr().out


def test_transposition_augments_only_the_train_split(mixed_folder, tmp_path, tiny_lm_tokenizer_path):
    common = ["--base-model", str(tiny_lm_tokenizer_path), "--vocab-size", "0", "--seq-len", "2048",
              "--num-workers", "1", "--no-captions"]
    assert main(["prepare", str(mixed_folder), "--out", str(tmp_path / "plain"), *common]) == 0
    assert main(["prepare", str(mixed_folder), "--out", str(tmp_path / "shifted"), "--transpose", "2", *common]) == 0
    plain = json.loads((tmp_path / "plain" / "prepare.json").read_text())["splits"]
    shifted = json.loads((tmp_path / "shifted" / "prepare.json").read_text())["splits"]
    assert shifted["train"]["examples"] >= 5 * plain["train"]["examples"] - 4
    assert shifted["test"]["examples"] == plain["test"]["examples"]


def test_bad_source_is_one_clear_line(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("midillm: error:") and "\n" not in error


def test_bad_setting_is_one_clear_line(tmp_path, capsys):
    assert main(["prepare", str(tmp_path), "--out", str(tmp_path / "out"), "--tokenization", "Nope"]) == 1
    error = capsys.readouterr().err.strip()
    assert "tokenization must be one of" in error and "\n" not in error


def test_split_is_deterministic_by_hash():
    assert split_of("00000000" + "f" * 56, 0.05, 0.05) == "test"
    assert split_of("0e000000" + "f" * 56, 0.05, 0.05) == "validation"
    assert split_of("ffffffff" + "0" * 56, 0.05, 0.05) == "train"


def test_chunks_cut_at_bar_lines_and_repeat_the_caption():
    caption, start, end = [1, 2, 3], 10, 11
    bars = [[20 + bar] * 5 for bar in range(10)]
    chunks = chunk_piece(caption, bars, start, end, seq_len=20)
    assert len(chunks) > 1
    for ids, prompt_length in chunks:
        assert len(ids) <= 20
        assert ids[:prompt_length] == caption + [start]
        music = ids[prompt_length:]
        assert len(set(music[:5])) == 1  # starts on a whole bar
    assert chunks[-1][0][-1] == end and all(ids[-1] != end for ids, _ in chunks[:-1])
    music_out = [token for ids, length in chunks for token in ids[length:] if token != end]
    assert music_out == [token for bar in bars for token in bar]


def test_a_chunk_takes_its_own_caption_where_one_is_given_for_its_bars():
    caption, start, end = [1, 2, 3], 10, 11
    bars = [[20 + bar] * 5 for bar in range(10)]
    asked = []

    def caption_of(first, last):
        asked.append((first, last))
        return {(3, 6): [4], (6, 9): [5, 5, 5, 5]}.get((first, last))  # the second: longer than `caption`

    chunks = chunk_piece(caption, bars, start, end, seq_len=20, caption_of=caption_of)
    plain = chunk_piece(caption, bars, start, end, seq_len=20)
    # Cut where the whole caption would cut them: three bars of five ids a chunk.
    assert asked == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert [ids[:length] for ids, length in chunks] == [caption + [start], [4, start], caption + [start],
                                                       caption + [start]]
    assert [ids[length:] for ids, length in chunks] == [ids[length:] for ids, length in plain]


def test_packing_fills_rows_and_masks_prompts_and_padding():
    chunks = [([1, 2, 30, 31, 32], 2), ([1, 2, 40], 2), ([1, 2, 50, 51, 52, 53, 54, 55], 2), ([1, 2, 60], 2)]
    rows, labels, padding = pack_rows([labelled(chunk) for chunk in chunks], seq_len=8, pad_id=0)
    assert all(len(row) == 8 for row in rows)
    assert len(rows) == 3 and padding == 3 * 8 - sum(len(ids) for ids, _ in chunks)
    for row, row_labels in zip(rows, labels):
        for token, label in zip(row, row_labels):
            assert label in (token, IGNORE_INDEX)
    assert sum(label != IGNORE_INDEX for row_labels in labels for label in row_labels) == 3 + 1 + 6 + 1


def test_infill_rows_learn_the_music_around_the_gap_but_not_the_markers():
    caption, start, end, gap, fill = [1, 2], 10, 11, 12, 13
    bars = [[20 + bar, 40 + bar] for bar in range(6)]
    ids, labels = infill_example(caption, bars, gap_bars=2, gap_start=2, start_id=start, end_id=end,
                                 gap_id=gap, fill_id=fill, seq_len=64)
    assert ids == [1, 2, 10, 20, 40, 21, 41, 12, 12, 24, 44, 25, 45, 13, 22, 42, 23, 43, 11]
    learned = [token for token, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert all(label in (token, IGNORE_INDEX) for token, label in zip(ids, labels))
    # Every bar's music (context and the missing bars) carries loss; caption, <music>, <gap>, <fill> do not.
    assert learned == [20, 40, 21, 41, 24, 44, 25, 45, 22, 42, 23, 43, 11]


# ----------------------------------------------------------------------------- at scale: shards, resuming, counts


@pytest.fixture(scope="module")
def band_corpus(tmp_path_factory):
    """Two dozen band scores of 40 bars (~1,800 notes each): enough pieces for many shards,
    long enough that a run can be stopped halfway."""
    from conftest import make_band_score

    folder = tmp_path_factory.mktemp("band-corpus")
    for seed in range(24):
        make_band_score(seed, bars=40).dump_midi(folder / f"band{seed:02d}.mid")
    return folder


def prepare_arguments(source, out, tokenizer):
    return ["prepare", str(source), "--out", str(out), "--base-model", str(tokenizer), "--seq-len", "256",
            "--num-workers", "1", "--shard-pieces", "2"]


def digests(folder):
    import hashlib

    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def comparable_report(out):
    report = json.loads((out / "prepare.json").read_text())
    del report["settings"]["out"], report["seconds"]
    return report


def run_and_kill(arguments, out, share, total_shards):
    """Run `midillm prepare` in a process of its own and SIGKILL it once `share` of the shards are
    written; returns its output so far and the finished shards' (inode, size) by name."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "midillm.cli", *arguments], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        while len(list(out.glob("partial/*/shards/*.json"))) < share * total_shards:
            assert process.poll() is None, "prepare finished before it could be stopped: make the corpus larger"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        output = process.communicate()[0]
    finished = {path.stem: (path.with_suffix(".arrow").stat().st_ino, path.with_suffix(".arrow").stat().st_size)
                for path in out.glob("partial/*/shards/*.json")}
    return output, finished


def test_killed_prepare_resumes_to_the_same_dataset(band_corpus, tmp_path, tiny_lm_tokenizer_path, capsys):
    """SIGKILL at about 30% and again at about 80% of the shards; a third run finishes: the same
    bytes as a run never stopped, and the shards finished before a kill are kept, not redone."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(prepare_arguments(band_corpus, straight, tiny_lm_tokenizer_path)) == 0
    total = json.loads((straight / "prepare.json").read_text())["shards"]
    assert total >= 10

    arguments = prepare_arguments(band_corpus, stopped, tiny_lm_tokenizer_path)
    _, kept_first = run_and_kill(arguments, stopped, 0.3, total)
    output, kept_second = run_and_kill(arguments, stopped, 0.8, total)
    assert not (stopped / "prepare.json").exists()  # never half-valid: no report until it is whole
    assert f"Resuming: {len(kept_first)} of {total} shards" in output
    assert all(kept_second[name] == kept for name, kept in kept_first.items())  # the same files, untouched
    capsys.readouterr()
    assert main(arguments) == 0
    assert f"Resuming: {len(kept_second)} of {total} shards" in capsys.readouterr().out
    assert not (stopped / "partial").exists()

    assert digests(stopped / "dataset") == digests(straight / "dataset")
    assert digests(stopped / "codec") == digests(straight / "codec")
    assert comparable_report(stopped) == comparable_report(straight)
    fingerprints = {split: data._fingerprint for split, data in load_from_disk(str(straight / "dataset")).items()}
    assert {split: data._fingerprint for split, data in load_from_disk(str(stopped / "dataset")).items()} == fingerprints
    # The published files are the shards the first killed run wrote (hard links, same inodes).
    for name, (inode, _) in kept_first.items():
        split, number = name.rsplit("-", 1)
        (published,) = (stopped / "dataset" / split).glob(f"data-{number}-of-*.arrow")
        assert published.stat().st_ino == inode


def test_sharded_dataset_is_memory_mapped_and_whole(band_corpus, tmp_path, tiny_lm_tokenizer_path):
    out = tmp_path / "out"
    assert main(prepare_arguments(band_corpus, out, tiny_lm_tokenizer_path)) == 0
    report = json.loads((out / "prepare.json").read_text())
    dataset = load_from_disk(str(out / "dataset"))
    train_shards = sorted((out / "dataset" / "train").glob("data-*.arrow"))
    assert len(train_shards) == -(-report["splits"]["train"]["pieces"] // 2)
    # One memory-mapped file per shard, nothing read into memory.
    assert [Path(file["filename"]) for file in dataset["train"].cache_files] == train_shards
    for split, stats in report["splits"].items():
        assert len(dataset[split]) == stats["rows"] > 0
        assert all(len(row) == 256 for row in dataset[split][:]["input_ids"])
    names = [piece["name"] for piece in report["pieces"]]
    assert sorted(names) == sorted(path.name for path in band_corpus.glob("*.mid"))


def test_absurd_density_is_skipped_and_the_counts_add_up(mixed_folder, tmp_path, tiny_lm_tokenizer_path, capsys):
    from symusic import Note, Score, Track

    # 200,000 notes one tick apart in one track: generator output, not music.
    score = Score(480)
    track = Track(name="machine", program=0)
    track.notes.extend([Note(tick, 1, 60 + tick % 12, 90) for tick in range(200_000)])
    score.tracks.append(track)
    score.dump_midi(mixed_folder / "machine.mid")
    out = tmp_path / "out"
    assert main(["prepare", str(mixed_folder), "--out", str(out), "--base-model", str(tiny_lm_tokenizer_path),
                 "--seq-len", "256", "--num-workers", "1"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "prepare.json").read_text())
    reasons = {item["name"]: item["reason"] for item in report["files_skipped"]}
    # 960 onsets a second at 120 BPM (give or take one, as times in seconds are rounded)
    assert re.fullmatch(r"absurd density: 96\d onsets within one second in one track \(> 64 limit\)",
                        reasons["machine.mid"])
    counts = report["counts"]
    assert counts == {"read": 19, "used": 13, "skipped": 5, "duplicates": 1}
    assert counts["read"] == counts["used"] + counts["skipped"] + counts["duplicates"] == report["files_read"]
    assert counts["used"] == report["files_used"] == len(report["pieces"])
    assert "Files: 19 read = 13 used + 5 skipped + 1 duplicates" in printed
    assert report["corpus"]["max_notes_per_onset"] < 20  # the machine did not reach the corpus profile


def test_several_sources_in_one_call_and_each_caption_names_its_own(tmp_path, bach_midi_files, band_midi_files,
                                                                     tiny_lm_tokenizer_path, capsys):
    from midillm.tokenization.caption import caption_fields
    from midillm.tokenization.codec import MusicCodec

    chorales, band = tmp_path / "chorales", tmp_path / "band"
    for folder, paths in ((chorales, bach_midi_files[:8]), (band, band_midi_files)):
        folder.mkdir()
        for path in paths:
            shutil.copy(path, folder / path.name)
    (band / "broken.mid").write_bytes(b"")
    out = tmp_path / "out"
    assert main(["prepare", str(chorales), str(band), "--out", str(out), "--base-model", str(tiny_lm_tokenizer_path),
                 "--seq-len", "256", "--num-workers", "1"]) == 0
    report = json.loads((out / "prepare.json").read_text())
    assert report["source"] == [str(chorales), str(band)]
    assert report["files_read"] == 12 and report["files_used"] == 11
    # A folder's files are named with their folder: two folders may hold the same names.
    assert [item["name"] for item in report["files_skipped"]] == ["band/broken.mid"]
    corpora = {caption_fields(caption).get("Corpus") for caption in MusicCodec.from_pretrained(out / "codec").corpus.captions}
    assert corpora == {str(chorales), str(band)}
    # One source: no Corpus line, as before.
    assert main(["prepare", str(band), "--out", str(tmp_path / "one"), "--base-model", str(tiny_lm_tokenizer_path),
                 "--seq-len", "256", "--num-workers", "1"]) == 0
    assert json.loads((tmp_path / "one" / "prepare.json").read_text())["source"] == str(band)
    assert not any("Corpus" in caption for caption in MusicCodec.from_pretrained(tmp_path / "one" / "codec").corpus.captions)
    capsys.readouterr()
    assert main(["prepare", str(band), str(band), "--out", str(tmp_path / "twice")]) == 1
    assert "given twice" in capsys.readouterr().err
