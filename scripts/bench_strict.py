"""Strict voice leading on new pieces: parallels, chords, rests and sane share with it off and on.

    .venv/bin/python scripts/bench_strict.py --model runs/demo/bach-smollm2

Samples new pieces with the bundle's own sampling and the corpus constraints, batches of 8 (one
seed each), once with `strict_voice_leading` off and once on, and judges them as `midillm eval`
does (`listening_summary`, `sample_sanity`). docs/control.md has the numbers.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/demo/bach-smollm2", help="A bundle folder.")
    parser.add_argument("--batches", type=int, default=2, help="Batches of 8 samples per setting (default 2).")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    arguments = parser.parse_args()

    from midillm.decoding.generate import MidiLM
    from midillm.eval.listener import listening_summary, piece_listening
    from midillm.eval.sanity import sample_sanity

    lm = MidiLM.from_pretrained(arguments.model)
    settings = lm.sampling.updated(max_new_tokens=arguments.max_new_tokens)
    for strict in (False, True):
        scores, records = [], []
        for seed in range(31, 31 + arguments.batches):
            rows = lm.generate_ids(8, seed=seed, settings=settings, strict_voice_leading=strict)
            records += lm.last_generation
            scores += [lm.codec.decode(row) for row in rows]
        summary = listening_summary([piece_listening(score) for score in scores])
        sane = sum(sample_sanity(score, lm.codec.corpus, record)["sane"] for score, record in zip(scores, records))
        print(f"strict voice leading {'on' if strict else 'off'}: {len(scores)} samples, sane {sane / len(scores):.0%}, "
              + ", ".join(f"{name} {value:.3f}" for name, value in summary.items() if isinstance(value, float)),
              flush=True)


if __name__ == "__main__":
    main()
