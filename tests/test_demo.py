"""`midillm demo` end to end on a tiny model, and the `max_minutes` training budget."""

from __future__ import annotations

import json

import pytest

from conftest import make_band_score


@pytest.fixture(scope="module")
def band_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo-band")
    for seed in range(10):
        make_band_score(seed, bars=6).dump_midi(folder / f"band{seed}.mid")
    return folder


def test_demo_writes_every_output(tmp_path, tiny_models, band_folder):
    from midillm.demo import run_demo

    lines = []
    out = tmp_path / "demo"
    # The eval samples as short as the showcase's: this checks what the demo writes and says, not
    # the music (eval's default of 512 tokens per sample made this test most of the suite's time).
    result = run_demo(out, base_model=str(tiny_models["tied"]), source=str(band_folder), train_minutes=None,
                      num_samples=2, eval_samples=2, max_new_tokens=24, eval_max_new_tokens=24,
                      train_overrides={"max_steps": 2, "batch_size": 2, "seq_len": 128, "eval_every": 0,
                                       "report_to": "none", "logging_every": 1,
                                       "base_layers": 1},  # the recipe's cut, on the 2-layer model
                      prepare_options={"num_workers": 1}, log=lines.append)
    bundle = result["bundle"]
    assert (bundle / "adapter_config.json").is_file() and (bundle / "midillm_codec.json").is_file()
    assert json.loads((bundle / "training_summary.json").read_text())["steps"] == 2
    for index in range(2):
        for fmt in ("mid", "musicxml", "wav", "png"):
            assert (out / "samples" / f"sample-{index:03d}.{fmt}").is_file()
    assert (out / "eval" / "metrics.json").is_file() and (out / "eval" / "report.html").is_file()
    # One held-out melody harmonised, beside the original: the melody is kept note for note.
    assert result["harmonised"] is not None
    from symusic import Score

    harmonised = Score(str(out / "samples" / "harmonised-000.mid"))
    reference = Score(str(out / "samples" / "reference-000.mid"))
    melody = [(note.time, note.pitch, note.duration) for note in reference.tracks[0].notes]
    assert [(note.time, note.pitch, note.duration) for note in harmonised.tracks[0].notes] == melody
    assert harmonised.tracks[0].name == reference.tracks[0].name
    card = (bundle / "README.md").read_text()
    assert "From `eval/metrics.json`" in card and (bundle / "samples" / "piano-roll.png").is_file()
    assert json.loads((bundle / "config.json").read_text())["base_layers"] == 1  # Hub-ready, and cut as trained

    text = "\n".join(lines)
    for header in range(1, 6):
        assert f"[{header}/5]" in text
    for path in (bundle, out / "samples", out / "eval" / "report.html", bundle / "README.md"):
        assert str(path) in text
    for words in ("valid samples", "bits per note", "mean overlapped area", "copying > 4 bars",
                  "midillm generate", "midillm eval", "midillm push", "pipeline("):
        assert words in text
    # The metrics lead with the listener measures (model / untrained / held-out / shuffled), then the sane share.
    metrics = text.split("Metrics (held-out chorales):\n", 1)[1].splitlines()
    assert metrics[0].strip() == "listener measures:        model / untrained / held-out pieces / shuffled control"
    assert [line.split(":")[0].strip() for line in metrics[1:6]] == [
        "chords on the beat", "parallels per move", "rests inside voices", "classifier accuracy",
        "sane samples (the floor)"]
    assert all(line.count(" / ") == 3 for line in metrics[1:5])

    # A second run reuses the prepared data. Its training is not compiled: the first run compiled
    # the demo config's layers (`compile: true`), and compiling again is most of a second run.
    lines.clear()
    run_demo(out, base_model=str(tiny_models["tied"]), source=str(band_folder), train_minutes=None,
             num_samples=1, eval_samples=1, max_new_tokens=8, eval_max_new_tokens=8,
             train_overrides={"max_steps": 1, "batch_size": 2, "seq_len": 128, "eval_every": 0,
                              "report_to": "none", "compile": False, "base_layers": 1},
             prepare_options={"num_workers": 1}, log=lines.append)
    assert any("up to date" in line for line in lines)


def test_demo_metrics_lead_with_the_listener_measures_then_the_sane_floor():
    from midillm.demo import _print_summary

    summary = {"sane_share": 1.0, "sane_share_model_alone": 0.875, "untrained_sane_share": 1.0,
               "corpus_sane_share": 1.0, "chord_on_beat": 0.62, "untrained_chord_on_beat": 0.1,
               "corpus_chord_on_beat": 0.85, "shuffled_chord_on_beat": 0.83, "parallels_per_move": 0.051,
               "corpus_parallels_per_move": 0.004, "rests_inside_voices": 0.12, "classifier_accuracy": 0.734,
               "untrained_classifier_accuracy": None, "corpus_classifier_accuracy": 0.5,
               "shuffled_classifier_accuracy": 0.61, "bits_per_note": 3.25}
    lines = []
    _print_summary({"source": "music21:bach", "summary": summary, "timings": {"total": 60.0}, "bundle": "b",
                    "data": "d", "card": "c", "samples": "s", "report": "r", "metrics": "m",
                    "showcase_sane": 4, "showcase_samples": 4}, lines.append)
    metrics = lines[lines.index("Metrics (held-out chorales):") + 1:]
    assert metrics[:6] == [
        "  listener measures:        model / untrained / Bach (held-out) / shuffled control",
        "  chords on the beat:       62% / 10% / 85% / 83%",
        "  parallels per move:       0.051 / n/a / 0.004 / n/a",
        "  rests inside voices:      0.120 / n/a / n/a / n/a",
        "  classifier accuracy:      0.73 / n/a / 0.50 / 0.61 (0.5: cannot tell from the held-out pieces)",
        "  sane samples (the floor): 100% with the corpus constraints, 88% with the model alone "
        "(untrained: 100%, held-out pieces: 100%)"]
    assert metrics[6].startswith("  bits per note:            3.250")


def test_max_minutes_stops_training(tmp_path, tiny_models, tiny_data):
    from midillm.finetune.config import load_config
    from midillm.finetune.train import train

    lines = []
    config = load_config(None, [f"data_dir={tiny_data}", f"output_dir={tmp_path / 'run'}",
                                f"base_model={tiny_models['tied']}", "max_steps=50", "batch_size=2",
                                "max_minutes=0.0001", "report_to=none", "eval_every=0", "save_every=0"])
    assert config.max_minutes == pytest.approx(0.0001)
    train(config, log=lines.append)
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["steps"] == 1 < config.max_steps
    assert summary["validation"] is not None  # validated and saved as usual
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()
    assert any("max_minutes" in line for line in lines)


def test_max_minutes_is_validated(tmp_path):
    from midillm.finetune.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="max_minutes"):
        load_config(None, [f"data_dir={tmp_path}", f"output_dir={tmp_path}", "max_minutes=0"])


def test_demo_command_errors_are_one_line(tmp_path, capsys):
    from midillm.cli import main

    assert main(["demo", "--out", str(tmp_path), "--train-minutes", "0"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("midillm: error:") and "train-minutes" in error and "\n" not in error
