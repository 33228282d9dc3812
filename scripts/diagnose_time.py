"""Why samples move at half Bach's pace: the numbers of docs/benchmarks.md, "The common key, and
why samples are slow".

    .venv/bin/python scripts/diagnose_time.py --model runs/demo/bach-smollm2 --data runs/demo/data \
        --samples runs/demo/eval/samples

- Pace: onsets and notes per beat, and the share of gaps between onsets longer than a beat, in
  the held-out pieces and in each folder of samples.
- Teacher-forced (with --model; onsets layout): at every point of the test split where the next
  token may move time, the mass the model gives each kind of move (another note at this onset, a
  bar line, each Position or Shift) against how often each is the true one; and the mass it gives
  a time the grammar refuses: a Position at or before the current one in the bar, or a Shift past
  the bar's end. The grammar masks those at sampling, so that mass goes to the other moves in
  proportion: a model that has not learned where in the bar it is writes long gaps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.load import prepared_pieces  # noqa: E402


def pace(paths) -> dict[str, float]:
    """Onsets and notes per beat (quarter note), and the share of inter-onset gaps over a beat."""
    from symusic import Score

    onsets = notes = beats = 0.0
    gaps = long_gaps = 0
    for path in paths:
        score = Score(str(path))
        if not score.note_num():
            continue
        times = sorted({int(note.time) for track in score.tracks for note in track.notes})
        end = max(int(note.time + note.duration) for track in score.tracks for note in track.notes)
        onsets += len(times)
        notes += score.note_num()
        beats += end / score.ticks_per_quarter
        gaps += len(times) - 1
        long_gaps += sum((after - before) > score.ticks_per_quarter for before, after in zip(times, times[1:]))
    return {"onsets_per_beat": onsets / max(beats, 1e-9), "notes_per_beat": notes / max(beats, 1e-9),
            "gaps_over_a_beat": long_gaps / max(gaps, 1)}


def time_moves(lm) -> tuple[list[str], list[int | None], list[int | None]]:
    """Each music row's time move ("same": it keeps the time; "Bar"; "Position_16", "Shift_12"...),
    the position it moves to (None if it names no Position) and the steps it shifts (None: no Shift)."""
    kinds, positions, shifts = [], [], []
    for row, lm_id in enumerate(lm.grammar.row_lm_ids):
        tokens = lm.codec.music_tokens([lm_id])
        first = tokens[0] if tokens else ""
        if row == lm.grammar.end_row:
            kinds.append("end")
        elif first.startswith(("Bar_", "Position_", "Shift_")):
            kinds.append(first.split("_")[0] if first.startswith("Bar_") else first)
        else:
            kinds.append("same")
        positions.append(int(first.split("_")[1]) if first.startswith("Position_") else None)
        shifts.append(int(first.split("_")[1]) if first.startswith("Shift_") else None)
    return kinds, positions, shifts


def teacher_forced(lm, data: str, rows: int) -> dict:
    import torch
    from datasets import load_from_disk

    kinds, positions, shifts = time_moves(lm)
    names = sorted(set(kinds))
    kind_index = torch.tensor([names.index(kind) for kind in kinds])
    row_position = torch.tensor([-1 if position is None else position for position in positions])
    row_shift = torch.tensor([-1 if shift is None else shift for shift in shifts])
    per_beat = lm.codec.music_tokenizer.config.max_num_pos_per_beat
    row_of = lm.grammar.row_of_lm_id
    head = lm.model.get_output_embeddings().weight[lm.rows].float()
    predicted = torch.zeros(len(names), dtype=torch.float64)
    truth = torch.zeros(len(names), dtype=torch.float64)
    past_mass, points = 0.0, 0
    split = load_from_disk(str(Path(data) / "dataset"))["test"]
    with torch.inference_mode():
        for example in split.select(range(min(rows, len(split)))):
            ids = torch.tensor(example["input_ids"])[None]
            hidden = lm.model.get_decoder()(input_ids=ids).last_hidden_state[0].float()
            probs = torch.softmax(hidden @ head.T, dim=-1).double()
            current = -1  # the position of the last onset in this bar; -1 right after a bar line
            bar_positions = 4 * per_beat
            for index in range(ids.shape[1] - 1):
                token, target = int(ids[0, index]), int(ids[0, index + 1])
                if token in row_of:
                    row = row_of[token]
                    kind = kinds[row]
                    current = -1 if kind == "Bar" else positions[row] if kind.startswith("Position") \
                        else max(current, 0) + shifts[row] if kind.startswith("Shift") else current
                    metre = next((name for name in lm.codec.music_tokens([token]) if name.startswith("TimeSig_")), None)
                    if metre:
                        bar_positions = int(metre.split("_")[1].split("/")[0]) * per_beat
                if example["labels"][index + 1] == -100 or target not in row_of:
                    continue
                mass = torch.zeros(len(names), dtype=torch.float64).index_add_(0, kind_index, probs[index])
                if 1 - mass[names.index("same")] < 0.02:  # time cannot move here
                    continue
                predicted += mass
                truth[names.index(kinds[row_of[target]])] += 1
                refused = ((row_position >= 0) & (row_position <= current)) | (
                    (row_shift >= 0) & ((max(current, 0) + row_shift >= bar_positions) | ((row_shift == 0) & (current >= 0))))
                past_mass += float(probs[index][refused].sum())
                points += 1
    order = torch.argsort(-truth)[:12]
    return {"points": points, "mass_on_past_positions": past_mass / max(points, 1),
            "moves": {names[int(index)]: (float(truth[index] / points), float(predicted[index] / points))
                      for index in order}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="The `midillm prepare` output (its test split).")
    parser.add_argument("--model", help="A bundle: the teacher-forced numbers (onsets layout).")
    parser.add_argument("--samples", nargs="*", default=[], help="Folders of MIDI samples to measure.")
    parser.add_argument("--rows", type=int, default=8, help="Test rows to read teacher-forced (default 8).")
    arguments = parser.parse_args()

    pieces = prepared_pieces(arguments.data, "validation") + prepared_pieces(arguments.data, "test")
    folders = {"held-out pieces": pieces}
    folders.update({folder: sorted(Path(folder).glob("*.mid")) for folder in arguments.samples})
    for name, paths in folders.items():
        measured = pace(paths)
        print(f"{name}: {measured['onsets_per_beat']:.2f} onsets and {measured['notes_per_beat']:.2f} notes per "
              f"beat, {100 * measured['gaps_over_a_beat']:.1f}% of gaps between onsets over a beat ({len(paths)} files)")
    if arguments.model:
        from midillm.decoding.generate import MidiLM

        lm = MidiLM.from_pretrained(arguments.model, dtype="bf16")
        result = teacher_forced(lm, arguments.data, arguments.rows)
        print(f"\nTeacher-forced, {result['points']} points where time may move (test split):")
        print(f"  mass on a time the grammar refuses (a Position at or before the current one, a Shift "
              f"past the bar's end; masked at sampling): "
              f"{result['mass_on_past_positions']:.3f}")
        print("  move: true share / the model's mean mass")
        for name, (true_share, mass) in result["moves"].items():
            print(f"  {name:>12}: {true_share:.3f} / {mass:.3f}")


if __name__ == "__main__":
    main()
