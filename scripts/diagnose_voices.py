"""Why samples lose their harmony: the numbers of docs/benchmarks.md, "Sampling temperature in the
onsets layout".

    .venv/bin/python scripts/diagnose_voices.py --model runs/demo/bach-smollm2 --data runs/demo/data \
        --samples runs/demo/eval/samples

- Re-strikes, teacher-forced (with --model; onsets layout): at every point of the test split where
  the next token could strike a part's sounding pitch again at the same onset, the mass the model
  gives such a re-strike, plain and at temperature 0.7, against how often the chorales do it.
- Repeated pitches: the share of a part's notes that repeat its previous pitch, per folder of MIDI
  files (the test split's own pieces first).
- Beats: each beat of each piece by what sounds on it: a chord of the eval's vocabulary, three or
  more pitch classes that are not one, or fewer than three.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.load import prepared_pieces  # noqa: E402


def note_rows(codec) -> dict[int, tuple[int | None, int | None, bool]]:
    """Each music LM id: (part it opens, its first pitch, whether it moves time)."""
    rows = {}
    for lm_id in codec.music_lm_ids:
        part = pitch = None
        moves = False
        for token in codec.music_tokens([lm_id]):
            kind, _, value = token.partition("_")
            moves = moves or kind in ("Bar", "Position")
            if kind == "Part" and part is None and pitch is None:
                part = int(value)
            elif kind == "Pitch" and pitch is None:
                pitch = int(value)
        rows[lm_id] = (part, pitch, moves)
    return rows


def restrikes(model_path: str, data: str, temperature: float = 0.7) -> dict:
    """Teacher-forced re-strike mass against the corpus's re-strike rate on the test split."""
    import torch

    from midillm.decoding.generate import MidiLM
    from midillm.model.data import load_prepared

    lm = MidiLM.from_pretrained(model_path, dtype="fp32")
    codec, splits, _ = load_prepared(data)
    rows = note_rows(codec)
    ids = list(rows)
    parts = torch.tensor([rows[i][0] if rows[i][0] is not None else -1 for i in ids])
    pitches = torch.tensor([rows[i][1] if rows[i][1] is not None else -1 for i in ids])
    moves = torch.tensor([rows[i][2] for i in ids])
    note_at_onset = (~moves) & (parts >= 0) & (pitches >= 0)
    decisions, corpus, plain, warmed = 0, 0, 0.0, 0.0
    for row in splits["test"]:
        sequence = row["input_ids"]
        with torch.no_grad():
            logits = lm.model(torch.tensor([sequence])).logits[0, :, ids].float()
        sounding: dict[int, int] = {}
        part_now = None
        for step in range(len(sequence) - 1):
            if sequence[step] in rows:
                part, pitch, moved = rows[sequence[step]]
                part_now = None if moved else part_now
                if part is not None:
                    part_now = part
                    if pitch is not None:
                        sounding[part] = pitch
            following = rows.get(sequence[step + 1])
            if following is None or not sounding:
                continue
            # Parts are written top down within an onset: only a later part can still strike.
            candidates = note_at_onset & (parts > (-1 if part_now is None else part_now))
            held = torch.tensor([sounding.get(int(part), -2) for part in parts])
            restrike = candidates & (pitches == held)
            decisions += 1
            plain += torch.softmax(logits[step], -1)[restrike].sum().item()
            warmed += torch.softmax(logits[step] / temperature, -1)[restrike].sum().item()
            part, pitch, moved = following
            corpus += int(not moved and part is not None and sounding.get(part) == pitch
                          and (part_now is None or part > part_now))
    return {"decisions": decisions, "corpus": corpus / decisions, "model": plain / decisions,
            f"model at {temperature:g}": warmed / decisions}


def repeated_pitch_share(paths: list[Path]) -> float:
    """Mean over parts of the share of a part's notes that repeat its previous pitch."""
    from symusic import Score

    shares = []
    for path in paths:
        for track in Score(str(path)).tracks:
            pitches = [note.pitch for note in sorted(track.notes, key=lambda note: note.time)]
            if len(pitches) > 1:
                shares.append(sum(a == b for a, b in zip(pitches, pitches[1:])) / (len(pitches) - 1))
    return sum(shares) / len(shares) if shares else float("nan")


def beat_kinds(paths: list[Path]) -> dict[str, float]:
    """Shares of all beats: a chord, three or more pitch classes not a chord, fewer than three."""
    import numpy as np
    from symusic import Score

    from midillm.eval.harmony import CHORD_MASKS, beat_times

    counts: collections.Counter = collections.Counter()
    for path in paths:
        score = Score(str(path)).to("quarter")
        notes = [track.notes.numpy() for track in score.tracks if not track.is_drum and track.note_num()]
        if not notes:
            continue
        onset = np.concatenate([n["time"] for n in notes]).astype(float)
        end = onset + np.concatenate([n["duration"] for n in notes]).astype(float)
        pitch_class = np.concatenate([n["pitch"] for n in notes]) % 12
        for beat in beat_times(score):
            classes = set(pitch_class[(onset <= beat + 1e-6) & (end > beat + 1e-6)].tolist())
            if sum(1 << pc for pc in classes) in CHORD_MASKS:
                counts["chord"] += 1
            else:
                counts["three or more, not a chord" if len(classes) >= 3 else "fewer than three"] += 1
    total = sum(counts.values())
    return {kind: count / total for kind, count in counts.items()} | {"beats": total}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="The `midillm prepare` folder (its test split is the corpus).")
    parser.add_argument("--model", help="A bundle trained on it, for the teacher-forced re-strikes.")
    parser.add_argument("--samples", nargs="*", default=[], help="Folders of MIDI samples to compare.")
    arguments = parser.parse_args(argv)
    folders = {"corpus (test split)": prepared_pieces(arguments.data, "test")}
    for folder in arguments.samples:
        folders[folder] = sorted(Path(folder).glob("*.mid"))
    if arguments.model:
        print("re-strikes, teacher-forced:", restrikes(arguments.model, arguments.data))
    for name, paths in folders.items():
        kinds = {kind: f"{share:.0%}" if kind != "beats" else share for kind, share in beat_kinds(paths).items()}
        print(f"{name}: {len(paths)} pieces, repeated pitch in a part {repeated_pitch_share(paths):.0%}, beats {kinds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
