"""Harmonisation and infilling on held-out pieces: the numbers of docs/tasks.md.

    .venv/bin/python scripts/bench_tasks.py --model runs/demo/bach-smollm2 --data runs/demo/data \
        --out runs/demo/tasks --pieces 10

Takes the test split of a `midillm prepare` output, keeps each piece's first part (a chorale's
soprano) and lets the model write the others (first 8 bars), then infills 2 bars in the middle
(`midillm.eval.tasks`). Prints a markdown table and writes OUT/tasks.json and the piano rolls.
"""

from __future__ import annotations

import argparse
import time

from harness.load import prepared_pieces
from harness.machine import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="A bundle trained with the task rows (the demo's).")
    parser.add_argument("--data", required=True, help="The `midillm prepare` output it was trained on.")
    parser.add_argument("--out", required=True, help="Folder for tasks.json and the piano rolls.")
    parser.add_argument("--pieces", type=int, default=10, help="Held-out pieces to use (default: 10).")
    parser.add_argument("--bars", type=int, default=8, help="Bars of each piece to harmonise (default: 8).")
    parser.add_argument("--strict-voice-leading", action=argparse.BooleanOptionalAction, default=None,
                        help="Harmonise and infill under strict voice leading (no parallel fifths or octaves, no "
                             "crossing), or not; default: the model's own default (on where its corpus avoids parallels).")
    arguments = parser.parse_args()

    from midillm.decoding.generate import MidiLM
    from midillm.eval.tasks import evaluate_tasks

    pieces = prepared_pieces(arguments.data, "test")[: arguments.pieces]
    lm = MidiLM.from_pretrained(arguments.model)
    started = time.time()
    result = evaluate_tasks(lm, pieces, arguments.out, max_bars=arguments.bars,
                            strict_voice_leading=arguments.strict_voice_leading)
    seconds = time.time() - started
    harmonisation, infill = result["harmonisation"], result["infill"]
    print(f"\n{result['pieces']} held-out pieces, {seconds:.0f} s on {machine()}\n")
    print("| measure | model | Bach | shuffled control |")
    print("|---|---|---|---|")
    print(f"| harmonisations sane | {100 * harmonisation['sane_share']:.0f}% | | |")
    print(f"| parallel fifths and octaves per move of two voices | {harmonisation['parallel_rate']:.3f} "
          f"| {harmonisation['reference_parallel_rate']:.3f} | {harmonisation['shuffled_parallel_rate']:.3f} |")
    print(f"| bits per note of the written parts (melody given) | {harmonisation['bits_per_note_written_parts']:.2f} | | |")
    for name, (low, high) in harmonisation["voice_ranges"].items():
        reference = harmonisation["reference_voice_ranges"].get(name)
        bach = f"{reference[0]}-{reference[1]}" if reference else ""
        print(f"| range of {name} (MIDI) | {low}-{high} | {bach} | |")
    print(f"| 2-bar infills sane | {100 * infill['sane_share']:.0f}% ({infill['pieces']} pieces) | | |")
    print(f"| infills exactly 2 bars | {100 * infill['exact_gap_share']:.0f}% | | |")
    print(f"| bits per note of the 2 infilled bars (the rest given) | {infill['bits_per_note']:.2f} | | |")


if __name__ == "__main__":
    main()
