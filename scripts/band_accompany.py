"""Keep the drums and bass of a band tune and write the other parts: the given notes checked exact,
the written piece judged by the sanity checks, piano rolls beside the tune's own.

    .venv/bin/python scripts/band_accompany.py --model runs/band/bundle \
        --midi tests/data/band-midi/slow_neasy_redfarn.mid --out runs/band-accompany

The tune (a held-out one: `prepare.json` lists each piece's split) is cut to its first `--bars`
bars; its parts whose role is Drums or Bass (`roles.track_role`) are kept, and `MidiLM.accompany`
writes the parts of a training piece's caption drawn by the seed around them. For each sample:
whether every kept part comes back note for note as the file has it (onset and length in beats,
pitch, velocity), each track's instrument and notes, and `sample_sanity`'s verdict
with its reasons. Writes OUT/reference.{mid,png}, OUT/accompaniment-K.{mid,png} and
OUT/accompany.json.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A trained bundle (a band corpus's).")
    parser.add_argument("--midi", required=True, help="The tune whose drums and bass are kept.")
    parser.add_argument("--out", required=True, help="Folder for the scores, piano rolls and accompany.json.")
    parser.add_argument("--bars", type=int, default=8, help="Bars of the tune to accompany (from its start).")
    parser.add_argument("--samples", type=int, default=4, help="Accompaniments to write.")
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed (and the drawn caption's).")
    parser.add_argument("--max-new-tokens", type=int, default=1024, help="Token budget per accompaniment.")
    arguments = parser.parse_args()
    warnings.filterwarnings("ignore")

    import torch
    from symusic import Score

    from midillm.decoding.export import export_score
    from midillm.decoding.generate import MidiLM
    from midillm.eval.sanity import sample_sanity
    from midillm.eval.tasks import first_bars
    from midillm.tokenization.caption import part_names
    from midillm.tokenization.roles import track_role

    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    lm = MidiLM.from_pretrained(arguments.model, dtype=torch.float32)
    reference = first_bars(Score(arguments.midi), arguments.bars)
    played = [track for track in reference.tracks if track.note_num()]
    names = part_names(reference)
    kept = [name for name, track in zip(names, played) if track_role(track) in ("Drums", "Bass")]
    if not kept:
        raise SystemExit(f"{arguments.midi}: no drum or bass part to keep (its parts: {', '.join(names)})")
    export_score(reference, out / "reference", ["mid", "png"])

    def notes(track, ticks_per_quarter):
        return sorted((note.time / ticks_per_quarter, note.duration / ticks_per_quarter, note.pitch, note.velocity)
                      for note in track.notes)

    results = lm.accompany(reference, kept, num_samples=arguments.samples, seed=arguments.seed,
                           max_new_tokens=arguments.max_new_tokens)
    samples = []
    for index, (score, record) in enumerate(zip(results, lm.last_generation)):
        export_score(score, out / f"accompaniment-{index}", ["mid", "png"])
        exact = {}
        for name, track in zip(names, played):
            if name in kept:  # two kept parts of one name: each must come back among that name's tracks
                back = [notes(other, score.ticks_per_quarter) for other in score.tracks if other.name == name]
                exact.setdefault(name, True)
                exact[name] = exact[name] and notes(track, reference.ticks_per_quarter) in back
        check = sample_sanity(score, lm.codec.corpus, record)
        samples.append({"tracks": [[track.name, -1 if track.is_drum else int(track.program), track.note_num()]
                                   for track in score.tracks],
                        "given_exact": exact, "sane": check["sane"], "reasons": check["reasons"]})
    result = {"model": arguments.model, "midi": arguments.midi, "bars": arguments.bars, "kept": kept,
              "given_exact_share": sum(all(sample["given_exact"].values()) for sample in samples) / len(samples),
              "sane_share": sum(sample["sane"] for sample in samples) / len(samples), "samples": samples}
    text = json.dumps(result, indent=2, ensure_ascii=False)
    (out / "accompany.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
