"""Generation speed: notes per second at batch 1 and batch 8, in fp32, bf16 and int8 weights.

    .venv/bin/python scripts/bench_generate.py runs/bach-model          # a trained bundle
    .venv/bin/python scripts/bench_generate.py --codec runs/bach/codec  # the base model + untrained rows

Speed does not depend on what the rows have learned, so the second form measures the same
cost before any training. Every sample is grammar-constrained and decoded; the notes counted
are those of the decoded scores.
"""

from __future__ import annotations

import argparse
import time
import warnings

from harness.load import base_with_rows
from harness.machine import machine


def load(arguments, dtype: str):
    """A `MidiLM` in `dtype`: the bundle's, or the codec's base model with untrained rows."""
    from midillm import MidiLM, MusicCodec

    if arguments.bundle:
        return MidiLM.from_pretrained(arguments.bundle, dtype=dtype)
    codec = MusicCodec.from_pretrained(arguments.codec)
    return MidiLM(base_with_rows(codec), codec, dtype=dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?")
    parser.add_argument("--codec", default="runs/bach/codec")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--dtypes", default="fp32,bf16,int8",
                        help="Precisions, as `MidiLM.from_pretrained` takes them (fp32, bf16, fp16, int8, auto).")
    arguments = parser.parse_args()
    warnings.filterwarnings("ignore")
    # torch and midillm load after the arguments are read, so that --help answers at once.
    import torch

    from midillm.decoding.request import SamplingSettings

    torch.set_num_threads(torch.get_num_threads())

    # The CPU's model and bf16 flags, cores and threads; on a GPU machine (scripts/gpu_check.sh), the GPU.
    print(f"Machine: {machine()}")
    print("| dtype | batch | new tokens | notes | seconds | tokens/s | notes/s |\n|---|---|---|---|---|---|---|")
    for dtype_name in arguments.dtypes.split(","):
        model = load(arguments, dtype_name)
        settings = SamplingSettings(max_new_tokens=arguments.max_new_tokens, top_p=0.95)
        model.generate_ids(1, settings=SamplingSettings(max_new_tokens=8))  # warm-up
        for batch in (int(value) for value in arguments.batches.split(",")):
            start = time.perf_counter()
            samples = model.generate_ids(batch, settings=settings, seed=0)
            seconds = time.perf_counter() - start
            prompt_length = len(model.prompt_ids())
            new_tokens = sum(len(ids) - prompt_length for ids in samples)
            notes = sum(model.codec.decode(ids).note_num() for ids in samples)
            print(f"| {dtype_name} | {batch} | {new_tokens} | {notes} | {seconds:.1f} | "
                  f"{new_tokens / seconds:.0f} | {notes / seconds:.0f} |")


if __name__ == "__main__":
    main()
