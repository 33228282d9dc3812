"""A bundle made ready for the Hub, and a merged plain-transformers export of it.

`prepare_bundle_for_hub(bundle)` adds what a Hub repository needs beyond what `midillm train`
writes: `config.json` + `midi_generation.py` (so `pipeline("midi-generation", model=...,
trust_remote_code=True)` works in a process that never imported midillm), a rendered sample
(`samples/sample.mid`, `samples/piano-roll.png`) and the full model card. It is idempotent.

`export_merged(bundle, out)` writes the base model with the adapter merged and the new rows in
place, as a folder `AutoModelForCausalLM` / `AutoTokenizer` load, plus the codec files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from midillm.decoding.generate import BundleError
from midillm.tokenization.codec import CODEC_CONFIG_FILE
from midillm.version import __version__

from .pipeline import MODEL_TYPE, TASK

REMOTE_CODE_FILE = "midi_generation.py"
SAMPLES_DIR = "samples"
PIANO_ROLL = f"{SAMPLES_DIR}/piano-roll.png"
SAMPLE_MIDI = f"{SAMPLES_DIR}/sample.mid"
SUMMARY_FILE = "training_summary.json"
EVAL_METRICS = "eval/metrics.json"
# Only what belongs on the Hub is uploaded (checkpoints hold optimizer state).
UPLOAD_IGNORE = ["checkpoints/**", "*.partial*", "__pycache__/**", ".cache/**"]

REMOTE_CODE = '''"""Remote code for `pipeline("midi-generation", model=..., trust_remote_code=True)`.

The implementation is the midillm package (https://pypi.org/project/midillm/); this file only
points transformers at it.
"""

try:
    from midillm.hub import pipeline as _midillm_pipeline
except ImportError as error:
    raise ImportError("this model needs the midillm package: pip install midillm") from error

MidiGenerationPipeline = _midillm_pipeline.MidiGenerationPipeline
MidiLLMForCausalLM = _midillm_pipeline.MidiLLMForCausalLM


class MidiLLMConfig(_midillm_pipeline.MidiLLMConfig):
    keep_custom_pipelines = True
'''


def check_bundle(path: str | Path) -> Path:
    """A local folder that holds a midillm codec and a model (adapter or merged weights)."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path} is not a folder")
    if not (path / CODEC_CONFIG_FILE).is_file():
        raise BundleError(f"{path} is not a midillm bundle ({CODEC_CONFIG_FILE} missing)")
    if not ((path / "adapter_config.json").is_file() or (path / "config.json").is_file()):
        raise BundleError(f"{path} has a codec but no model (adapter_config.json or config.json)")
    return path


def is_merged(path: Path) -> bool:
    return not (path / "adapter_config.json").is_file() and (path / "config.json").is_file()


def bundle_config(bundle: Path) -> dict:
    """`config.json` of an adapter bundle: model type `midillm`, remote code and pipeline."""
    adapter = json.loads((bundle / "adapter_config.json").read_text())
    module = Path(REMOTE_CODE_FILE).stem
    return {
        "model_type": MODEL_TYPE,
        "base_model_name_or_path": adapter.get("base_model_name_or_path"),
        "auto_map": {"AutoConfig": f"{module}.MidiLLMConfig",
                     "AutoModelForCausalLM": f"{module}.MidiLLMForCausalLM"},
        "custom_pipelines": {TASK: {"impl": f"{module}.MidiGenerationPipeline",
                                    "pt": ["AutoModelForCausalLM"], "type": "text"}},
        "midillm_version": __version__,
    }


def write_remote_code(bundle: Path) -> None:
    """config.json + midi_generation.py; a merged export keeps its plain transformers config."""
    if is_merged(bundle):
        return
    (bundle / "config.json").write_text(json.dumps(bundle_config(bundle), indent=2) + "\n")
    (bundle / REMOTE_CODE_FILE).write_text(REMOTE_CODE)


def render_sample(bundle: Path, model=None, max_new_tokens: int = 256, seed: int = 0) -> Path:
    """One sample from the bundle (or `model`, its loaded MidiLM): samples/sample.mid and the
    piano roll the card shows."""
    from midillm.decoding.export import write_midi, write_png
    from midillm.decoding.generate import MidiLM

    model = model or MidiLM.from_pretrained(bundle)
    for attempt in range(3):  # an untrained model may end a piece at once; the card needs notes
        [score] = model.generate(num_samples=1, max_new_tokens=max_new_tokens, seed=seed + attempt,
                                 top_p=0.95)
        if score.note_num():
            break
    write_midi(score, bundle / SAMPLE_MIDI)
    return write_png(score, bundle / PIANO_ROLL)


def prepare_bundle_for_hub(bundle: str | Path, repo_id: str | None = None, license: str | None = None,
                           render: bool = True, log=None) -> Path:
    """Make a bundle folder Hub-ready (remote code, sample, full card); returns the folder.

    Call it after `midillm train` (or `train()`); `midillm push` and `midillm export` call it.
    `render=False` skips sampling the piano roll (a card written before keeps its picture).
    """
    from .card import write_model_card

    bundle = check_bundle(bundle)
    write_remote_code(bundle)
    if render:
        if log:
            log(f"Rendering a sample for the model card into {bundle / SAMPLES_DIR}")
        render_sample(bundle)
    write_model_card(bundle, repo_id=repo_id, license=license)
    return bundle


def export_bundle(bundle: str | Path, out: str | Path, merge: bool = False, log=None) -> Path:
    """`midillm export`: a Hub-ready copy of the bundle, or (merge=True) a merged model."""
    bundle = check_bundle(bundle)
    out = Path(out)
    if out.resolve() == bundle.resolve():
        raise BundleError(f"--out {out} is the bundle itself; choose another folder")
    if merge:
        return export_merged(bundle, out, log=log)
    shutil.copytree(bundle, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoints"))
    return prepare_bundle_for_hub(out, log=log)


def export_merged(bundle: str | Path, out: str | Path, log=None) -> Path:
    """Base model + merged adapter + new rows as one transformers model, with tokenizer and codec."""
    import torch

    from midillm.decoding.generate import MidiLM

    bundle = check_bundle(bundle)
    out = Path(out)
    model = MidiLM.from_pretrained(bundle, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    if log:
        log(f"Writing the merged model to {out}")
    model.model.save_pretrained(out)
    model.codec.save_pretrained(out)  # LM tokenizer with the new tokens, music tokenizer, codec config
    for name in ("generation_config.json", SUMMARY_FILE):
        if (bundle / name).is_file():
            shutil.copy2(bundle / name, out / name)
    for folder in ("eval", SAMPLES_DIR):
        if (bundle / folder).is_dir():
            shutil.copytree(bundle / folder, out / folder, dirs_exist_ok=True)
    from .card import write_model_card

    if not (out / PIANO_ROLL).is_file():
        render_sample(out, model)
    write_model_card(out, merged_from=bundle)
    return out
