"""The scripts' shared harness (scripts/harness/), offline and fast: no real model, no corpus.

The benchmarks themselves take 10-40 minutes each and are not run here; what is checked is what
they share (the subprocess protocol, the machine line, the dated report, the loaders, the corpus
stretches) and the house rules of scripts/: no script imports another, no default points into a
temporary folder, every script answers --help. The register diagnostic is read against an
oracle on the tiny band data.
"""

from __future__ import annotations

import ast
import collections
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from symusic import Note, Score, TimeSignature, Track

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))  # as `python scripts/NAME.py` has it: the harness is beside the scripts

from harness import load, machine, report, run, stretches  # noqa: E402

SCRIPT_FILES = sorted(SCRIPTS.glob("*.py"))
PYTHON_FILES = SCRIPT_FILES + sorted((SCRIPTS / "harness").glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_script_imports_another_script():
    scripts = {path.stem for path in SCRIPT_FILES}
    for path in PYTHON_FILES:
        assert not imported_modules(path) & scripts, f"{path.name} imports a sibling script: move it into the harness"


def test_no_default_points_into_a_temporary_folder():
    for path in PYTHON_FILES:
        strings = [node.value for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)]
        assert not [value for value in strings if value.startswith("/tmp") or "/tmp/" in value], path.name
        assert "tempfile" not in imported_modules(path), path.name


@pytest.mark.parametrize("script", SCRIPT_FILES, ids=lambda path: path.name)
def test_every_script_answers_help_without_loading_torch(script):
    # -X importtime lists every module imported: --help must not wait for torch or midillm.
    output = subprocess.run([sys.executable, "-X", "importtime", str(script), "--help"], capture_output=True,
                            text=True, timeout=60)
    assert output.returncode == 0, output.stderr[-2000:]
    assert output.stdout.startswith("usage: " + script.name)
    loaded = {line.split("|")[-1].strip().split(".")[0] for line in output.stderr.splitlines() if "|" in line}
    assert not loaded & {"torch", "midillm", "transformers"}, script.name


# ----------------------------------------------------------------------------- variants in subprocesses


CHILD = """import json, sys
print("progress on stdout is not a result")
print("RESULT " + json.dumps({"first": 1}))
print("RESULT " + json.dumps({"argv": sys.argv[1:]}))
"""


def test_a_variant_runs_with_the_parents_arguments_and_returns_its_last_result(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    result = run.run_in_subprocess(str(script), ["--minutes", "2", "--work", "runs/x y"], "midillm", show_progress=False)
    assert result == {"argv": ["--minutes", "2", "--work", "runs/x y", "--one", "midillm"]}


def test_a_failed_variant_gives_none_and_the_tail_of_its_log(tmp_path, capsys):
    script = tmp_path / "child.py"
    script.write_text("import sys\nprint('x' * 5000, file=sys.stderr)\nprint('the traceback', file=sys.stderr)\n"
                      "sys.exit(3)\n")
    assert run.run_in_subprocess(str(script), [], "bf16", show_progress=False) is None
    message = capsys.readouterr().err
    assert message.startswith("bf16: failed (exit 3)\n") and message.rstrip().endswith("the traceback")
    assert len(message) < run.FAILURE_TAIL_CHARS + 100
    # A child that exits 0 without a result line failed too.
    script.write_text("print('no result')\n")
    assert run.run_in_subprocess(str(script), [], "fp32", show_progress=False) is None
    assert "fp32: failed (exit 0)" in capsys.readouterr().err


def test_the_child_option_and_the_result_line_round_trip(capsys):
    import argparse

    parser = argparse.ArgumentParser()
    run.add_child_option(parser)
    assert parser.parse_args(["--one", "text"]).one == "text"
    assert "--one" not in parser.format_help()  # internal: not offered to a reader
    run.print_result({"notes_per_s": 12.5, "label": "(a) midillm"})
    assert run.result_in("noise\n" + capsys.readouterr().out) == {"notes_per_s": 12.5, "label": "(a) midillm"}
    assert run.result_in("no result here\n") is None


def test_memory_figures_are_in_mib():
    # Both in MiB: the peak is at least about what is resident now (the kernel updates it lazily).
    now, peak = run.rss_mib(), run.peak_rss_mib()
    assert 10 < now < 2**20 and 0.9 * now < peak < 2**20


# ----------------------------------------------------------------------------- the machine and the report


CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile

processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu
"""


def test_the_machine_line_names_the_cpu_its_bf16_flags_cores_and_torch():
    model, flags = machine.parse_cpuinfo(CPUINFO)
    assert model == "Intel(R) Xeon(R) Processor" and {"avx512_bf16", "amx_bf16"} <= flags
    # The line bench.py wrote into docs/benchmarks.md before the harness, to the letter.
    assert machine.describe(model, ["avx512_bf16", "amx_bf16"], 2, 24.3, "2.13.0+cpu", 2, None) == (
        "Intel(R) Xeon(R) Processor (avx512_bf16, amx_bf16), 2 cores, 24 GiB RAM, torch 2.13.0+cpu (2 threads), no GPU")
    assert "(neither avx512_bf16 nor amx_bf16)" in machine.describe("EPYC", [], 2, 8, "2.13.0", 2, None)
    assert machine.describe("x", [], 1, 1, "2.13.0", 1, "NVIDIA H200") == "NVIDIA H200, torch 2.13.0"
    assert machine.parse_cpuinfo("") == (None, set())
    # A generic name gets the family and model numbers that tell one generation from the next.
    epyc = "processor\t: 0\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2\n"
    assert machine.parse_cpuinfo(epyc) == ("AMD EPYC, family 25 model 1", {"fpu", "avx2"})
    assert set(machine.cpu_flags()) <= set(machine.BF16_FLAGS)


def test_the_command_is_written_as_typed_from_the_repository_root():
    assert report.command_line("/abs/path/scripts/bench.py", ["--minutes", "8", "--work", "runs/a b"]) == (
        "python scripts/bench.py --minutes 8 --work 'runs/a b'")
    header = report.written_header("the machine", "python scripts/bench_retrieval.py --per-collection 40")
    assert header == [f"Written by `scripts/bench_retrieval.py` on {report.today()}.", "",
                      "- Command: `python scripts/bench_retrieval.py --per-collection 40`", "- Hardware: the machine"]


def test_a_json_result_carries_when_and_where_it_was_measured(tmp_path):
    written = {"date": "2026-12-04", "command": "python scripts/bench_like.py", "machine": {"cpu": "x"}}
    path = report.write_json(tmp_path / "deep" / "report.json", {"tastes": {}, "nan": float("nan"),
                                                                  "numpy": np.float32(0.5)}, written=written)
    data = json.loads(path.read_text())
    assert list(data)[0] == "written" and data["written"] == written and data["numpy"] == 0.5


def test_a_rewritten_markdown_report_keeps_what_people_wrote_below_the_marker(tmp_path):
    marker = "<!-- Written by hand below this line -->"
    path = tmp_path / "docs" / "benchmarks.md"
    report.write_markdown(path, "# Run 1\n", keep_below=marker)
    assert path.read_text() == "# Run 1\n"
    path.write_text(path.read_text() + marker + "\nWhy target 3 is missed.\n")
    report.write_markdown(path, "# Run 2\n", keep_below=marker)
    assert path.read_text() == "# Run 2\n\n" + marker + "\nWhy target 3 is missed.\n"
    report.write_markdown(path, "# Run 3\n")  # no marker: the whole file is the script's
    assert path.read_text() == "# Run 3\n"


# ----------------------------------------------------------------------------- loading what midillm wrote


def test_the_prepared_folders_pieces_and_held_out_tokens_per_note(tmp_path):
    (tmp_path / "prepare.json").write_text(json.dumps({
        "pieces": [{"path": "a.mid", "split": "train"}, {"path": "b.mid", "split": "test"},
                   {"path": "c.mid", "split": "validation"}, {"path": "d.mid", "split": "test"}],
        "splits": {"train": {"music_tokens": 1000, "notes": 10}, "validation": {"music_tokens": 30, "notes": 20},
                   "test": {"music_tokens": 60, "notes": 40}}}))
    assert load.prepared_pieces(tmp_path, "test") == [Path("b.mid"), Path("d.mid")]
    assert load.held_out_tokens_per_note(load.prepared_report(tmp_path)) == pytest.approx(1.5)  # train left out


# ----------------------------------------------------------------------------- corpus stretches


def three_four(bars: int, tpq: int = 480) -> Score:
    """One note on every beat of `bars` bars of 3/4, pitch = the bar's number."""
    score = Score(tpq)
    score.time_signatures.append(TimeSignature(0, 3, 4))
    track = Track("voice")
    for bar in range(bars):
        for beat in range(3):
            track.notes.append(Note((3 * bar + beat) * tpq, tpq, 60 + bar, 64))
    score.tracks.append(track)
    return score


def test_excerpts_are_whole_bars_of_the_scores_own_metre():
    score = three_four(10)
    assert stretches.bar_ticks(score) == 3 * 480
    assert stretches.bars_spanned(score) == 10
    part = stretches.excerpt(score, 2, 3)
    assert stretches.bars_spanned(part) == 3 and part.start() == 0
    assert sorted({note.pitch for note in part.tracks[0].notes}) == [62, 63, 64]
    no_signature = Score(480)
    no_signature.tracks.append(Track("x"))
    no_signature.tracks[0].notes.append(Note(0, 480 * 5, 60, 64))
    assert stretches.bar_ticks(no_signature) == 4 * 480 and stretches.bars_spanned(no_signature) == 2


def test_distances_skip_undefined_features_and_a_flat_feature_counts_one():
    rows = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, 2.0]])
    center, spread = stretches.center_and_spread(rows)
    assert center.tolist() == [2.0, 5.0, 2.0] and spread.tolist() == [1.0, 1.0, 1.0]
    assert stretches.distances(rows, center, spread).tolist() == pytest.approx([np.sqrt(0.5), np.sqrt(1 / 3)])


def test_corpus_stretches_start_after_the_opening_and_are_measured_once_per_length(monkeypatch):
    measured = []

    def fake_features(scores):  # one "feature": the first pitch of each stretch
        measured.append(len(scores))
        return np.array([[float(min(note.pitch for note in score.tracks[0].notes))] for score in scores])

    monkeypatch.setattr(stretches, "feature_matrix", fake_features)
    reference = stretches.Stretches([three_four(10), three_four(12)], opening_bars=2)
    rows, center, spread = reference.of(4)
    assert rows.tolist() == [[62.0], [62.0]] and center.tolist() == [62.0] and spread.tolist() == [1.0]
    assert reference.of(4)[0] is rows and measured == [2]
    reference.of(3)
    assert measured == [2, 2]


def test_pace_counts_onsets_notes_and_long_gaps_per_beat(tmp_path):
    from symusic import Note, Score, Track

    import diagnose_time

    score = Score(4)
    track = Track("Soprano")
    # Onsets at beats 0, 1, 2 (two notes) and 5: 4 onsets and 5 notes over 6 beats, one gap of 3 beats.
    for time, pitch in ((0, 60), (4, 62), (8, 64), (8, 67), (20, 65)):
        track.notes.append(Note(time, 4, pitch, 80))
    score.tracks.append(track)
    score.dump_midi(tmp_path / "piece.mid")
    measured = diagnose_time.pace([tmp_path / "piece.mid"])
    assert measured == pytest.approx({"onsets_per_beat": 4 / 6, "notes_per_beat": 5 / 6, "gaps_over_a_beat": 1 / 3})


def test_the_register_diagnostic_reads_the_pitch_each_part_writes_at_the_right_position(tiny_data):
    """An oracle that puts all its mass on the next token: every note's expected pitch is the one
    written, each under its own part, and no token costs a bit. A position off by one, or a
    note's part read from the wrong token, breaks both."""
    from types import SimpleNamespace

    import torch

    import diagnose_register
    from midillm.model.data import load_prepared

    codec, dataset, _ = load_prepared(tiny_data)
    vocabulary = len(codec.lm_tokenizer)

    def oracle(ids):
        logits = torch.zeros(1, ids.shape[1], vocabulary)
        logits[0, torch.arange(ids.shape[1] - 1), ids[0, 1:]] = 60.0
        return SimpleNamespace(logits=logits)

    rows = dataset["train"]
    measured = diagnose_register.measure(SimpleNamespace(codec=codec, model=oracle), rows, max_rows=3)
    pitch_of, part_of, _ = diagnose_register.token_fields(codec)
    written = collections.defaultdict(list)
    for row in range(3):
        part = None
        for previous, lm_id, label in zip(rows[row]["input_ids"], rows[row]["input_ids"][1:], rows[row]["labels"][1:]):
            part = part_of.get(previous, part)
            if label != -100 and lm_id in pitch_of:
                written[part_of.get(lm_id, part)].append(pitch_of[lm_id])
    registers = measured["registers"]
    assert len(registers) >= 2 and {part: [pitch for pitch, _ in pairs] for part, pairs in registers.items()} == written
    assert all(expected == pytest.approx(pitch, abs=1e-6) for pairs in registers.values() for pitch, expected in pairs)
    assert max(bits for values in measured["bits"].values() for bits in values) < 1e-6
    assert "| token kind |" in diagnose_register.report(measured)


def test_the_caption_diagnostic_varies_one_line_over_the_first_piece_of_each_row(tiny_data, tiny_bundle, capsys):
    """Each held-out row gives its first piece: the caption before `<music>` (its fields read
    back), the music through `</music>` with its own labels. The measure then runs on a bundle
    and reports every value of the field, or one line where the captions hold only one."""
    import diagnose_caption
    from midillm.model.data import load_prepared
    from midillm.tokenization.caption import caption_fields

    codec, dataset, _ = load_prepared(tiny_data)
    pieces = diagnose_caption.first_pieces(dataset, codec)
    assert pieces
    for text, music, labels in pieces:
        assert caption_fields(text).get("Parts")
        assert music[0] == codec.music_start_id and len(labels) == len(music)
        assert music.count(codec.music_start_id) == 1 and codec.music_end_id not in music[:-1]
        assert any(label != -100 for label in labels)
    assert diagnose_caption.main([str(tiny_bundle), "--data", str(tiny_data), "--field", "Parts",
                                  "--max-pieces", "6", "--value", "Soprano, Alto, Tenor, Bass"]) == 0
    out = capsys.readouterr().out
    assert "| true Parts |" in out and f"{len(pieces[:6])} held-out pieces" in out
    assert "the true value most likely on" in out
    # A field the captions do not vary: one line, exit 1.
    assert diagnose_caption.main([str(tiny_bundle), "--data", str(tiny_data), "--field", "Tempo-less"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: the held-out captions hold 0 value(s)")
