"""A bundle made complete for the Hub, and a merged plain-transformers export of it.

Training writes the model, the codec and what the pipeline needs to load the folder without
midillm imported (`config.json` + `midi_generation.py`, see `midillm.bundle_files`). The rest of a
Hub repository is written here, above the parts it draws on:

- `complete_bundle(bundle)`: `generation_config.json` (the sampling defaults) and the model card.
  `midillm train` runs it last, so what it writes is the whole bundle.
- `prepare_bundle_for_hub(bundle)`: the same, plus a rendered sample for the card
  (`samples/sample.mid`, `samples/piano-roll.png`); `midillm push` and `midillm export` call it.

Both are idempotent. `export_merged(bundle, out)` writes the base model with the adapter merged
and the new rows in place, as a folder `AutoModelForCausalLM` / `AutoTokenizer` load, plus the
codec files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from midillm.bundle_files import (CHECKPOINTS, EVAL_METRICS, PIANO_ROLL, SAMPLE_MIDI, SAMPLES_DIR, SUMMARY_FILE,
                                  write_remote_code)
from midillm.decoding.request import SamplingSettings
from midillm.model.bundle import Bundle, BundleError

from .card import write_model_card


def check_bundle(path: str | Path) -> Path:
    """A local folder that holds a midillm codec and a model (adapter or merged weights)."""
    return Bundle(path).check().path


def write_generation_config(folder: Path, source: Path | None = None) -> Path:
    """`generation_config.json` from the sampling defaults of the codec's layout; the values
    `source` (default: the folder itself) already carries are kept. Stop and pad ids are the codec's."""
    from midillm.tokenization import MusicCodec

    codec = MusicCodec.from_pretrained(folder)
    defaults = SamplingSettings.for_layout(codec.layout)
    return SamplingSettings.from_pretrained(source or folder, defaults).save_pretrained(
        folder, eos_token_id=codec.music_end_id, pad_token_id=codec.lm_tokenizer.pad_token_id)


def render_sample(bundle: Path, model=None, max_new_tokens: int = 256, seed: int = 0) -> Path:
    """One sample from the bundle (or `model`, its loaded MidiLM): samples/sample.mid and the
    piano roll the card shows."""
    from midillm.decoding.export import write_midi, write_png
    from midillm.decoding.generate import MidiLM

    model = model or MidiLM.from_pretrained(bundle)
    for attempt in range(3):  # an untrained model may end a piece at once; the card needs notes
        [score] = model.generate(num_samples=1, max_new_tokens=max_new_tokens, seed=seed + attempt)
        if score.note_num():
            break
    write_midi(score, bundle / SAMPLE_MIDI)
    return write_png(score, bundle / PIANO_ROLL)


def complete_bundle(bundle: str | Path, repo_id: str | None = None, license: str | None = None) -> Path:
    """What a trained folder needs to be a whole Hub repository, short of a rendered sample: the
    remote code (again, for folders trained before it was written), `generation_config.json`
    and the model card. Quick: nothing is loaded but the codec. Returns the folder."""
    bundle = check_bundle(bundle)
    write_remote_code(bundle)
    write_generation_config(bundle)
    write_model_card(bundle, repo_id=repo_id, license=license)
    return bundle


def prepare_bundle_for_hub(bundle: str | Path, repo_id: str | None = None, license: str | None = None,
                           render: bool = True, log=None) -> Path:
    """`complete_bundle`, plus a sample rendered for the card; returns the folder.

    `midillm push` and `midillm export` call it. `render=False` skips sampling the piano roll (a
    card written before keeps its picture).
    """
    bundle = check_bundle(bundle)
    if render:
        if log:
            log(f"Rendering a sample for the model card into {bundle / SAMPLES_DIR}")
        render_sample(bundle)
    return complete_bundle(bundle, repo_id=repo_id, license=license)


def export_bundle(bundle: str | Path, out: str | Path, merge: bool = False, log=None) -> Path:
    """`midillm export`: a Hub-ready copy of the bundle, or (merge=True) a merged model."""
    bundle = check_bundle(bundle)
    out = Path(out)
    if out.resolve() == bundle.resolve():
        raise BundleError(f"--out {out} is the bundle itself; choose another folder")
    if merge:
        return export_merged(bundle, out, log=log)
    shutil.copytree(bundle, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(CHECKPOINTS))
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
    write_generation_config(out, source=bundle)  # not the base model's, which save_pretrained wrote
    if (bundle / SUMMARY_FILE).is_file():
        shutil.copy2(bundle / SUMMARY_FILE, out / SUMMARY_FILE)
    for folder in (Path(EVAL_METRICS).parent.name, SAMPLES_DIR):
        if (bundle / folder).is_dir():
            shutil.copytree(bundle / folder, out / folder, dirs_exist_ok=True)
    if not (out / PIANO_ROLL).is_file():
        render_sample(out, model)
    write_model_card(out, merged_from=bundle)
    return out
