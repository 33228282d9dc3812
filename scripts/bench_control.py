"""Controls a musician can trust: the share of samples that obey each control (docs/control.md).

    .venv/bin/python scripts/bench_control.py --model runs/demo/bach-smollm2 --data runs/demo/data \
        --out runs/bench-control --samples 12 --max-new-tokens 384

The captions are the held-out pieces' own (the test split of a `midillm prepare` output, read
back from its rows with `caption_fields`), without their titles, with the key, metre and tempo
varied: sample i asks for KEYS[i % 6], METRES[i % 2], TEMPI[i % 4] and DENSITIES[i % 3] (sample 0 is D minor in
3/4, sample 1 G major in 4/4), the parts its piece had, and BARS bars. Each caption is sampled
three times, same seed: the learned key alone (`key_guidance` 1), the default (the asked key
guided, `KEY_GUIDANCE`), and the default with the key- and density-aware biases on (`KEY_BIAS`,
`DENSITY_BIAS`; density only where the corpus has its thirds). Measured on the
written score (its MIDI bytes, read back):
- key: music21's `analyze('key')` of the sample against the asked key: exact tonic and mode, and
  counting the relative and parallel keys as well;
- metre: every time signature is the asked one; tempo: every tempo is the asked BPM (to 0.01);
- parts: as many parts play as asked; bars: the piece spans exactly the asked bars;
- density: the written piece's Density bin (`CorpusProfile.density_of`, the corpus's thirds of
  notes per beat per part) is the asked one (a model whose corpus has no thirds: never);
- sane: `midillm.eval.sanity`, against the model's corpus;
- the share of pitched notes outside the asked key's scale, and the pitch classes a sample uses,
  beside the held-out pieces' own first BARS bars (in the key `prepare` moved them to): a key
  kept by leaving out every chromatic note is kept at the music's cost.
Writes OUT/control.json and the piano rolls of samples 0 and 1 (both ways), prints the table.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from harness.machine import machine
from harness.report import command_line, today, write_json

warnings.filterwarnings("ignore")

KEYS = ("D minor", "G major", "F major", "E minor", "Bb major", "A minor")
DENSITIES = ("sparse", "medium", "dense")
METRES = ("3/4", "4/4")
TEMPI = (72, 90, 100, 120)
BARS = 8


def held_out_captions(data: str, codec) -> list[str]:
    """The test split's captions, each piece once, in order: the caption text before each
    `<music>` of its rows (`caption_fields` reads them)."""
    from datasets import load_from_disk

    from midillm.tokenization.caption import caption_fields

    captions, titles = [], set()
    for row in load_from_disk(str(Path(data) / "dataset"))["test"]["input_ids"]:
        start = 0
        for index, lm_id in enumerate(row):
            if lm_id == codec.music_end_id:
                start = index + 1
            elif lm_id == codec.music_start_id:
                text = codec.lm_tokenizer.decode(row[start:index], skip_special_tokens=True)
                fields = caption_fields(text)
                if fields.get("Title") and fields["Title"] not in titles:
                    titles.add(fields["Title"])
                    captions.append(text)
    return captions


def asked_caption(caption: str, index: int, density: bool = True) -> tuple[str, dict]:
    """The held-out caption without its title, with sample `index`'s key, metre and tempo, and
    density where the model learned it (`density`)."""
    from midillm.tokenization.caption import caption_fields, tempo_value, with_fields, write_caption

    fields = {label: value for label, value in caption_fields(caption).items() if label != "Title"}
    asked = {"key": KEYS[index % len(KEYS)], "time_signature": METRES[index % len(METRES)],
             "tempo": float(TEMPI[index % len(TEMPI)]), "density": DENSITIES[index % len(DENSITIES)] if density else None}
    text = with_fields(write_caption(fields), {"Key": asked["key"], "Time signature": asked["time_signature"],
                                               "Tempo": tempo_value(asked["tempo"]), "Density": asked["density"]})
    return text, asked


def found_key(midi: bytes):
    """music21's key analysis of a MIDI file: (tonic pitch class, minor)."""
    from music21 import converter

    found = converter.parseData(midi, format="midi").analyze("key")
    return found.tonic.pitchClass, found.mode == "minor"


def measure(sample, asked: dict, parts: int, profile) -> dict:
    from symusic import Score

    from midillm.decoding.export import to_midi_bytes
    from midillm.decoding.grammar import scale_pitch_classes
    from midillm.eval.sanity import bars_written, sample_sanity
    from midillm.tokenization.caption import key_tonic, pitch_name

    midi = to_midi_bytes(sample.score)
    written = Score.from_midi(midi)
    tonic, minor = key_tonic(asked["key"])
    found_tonic, found_minor = found_key(midi)
    relative = (tonic + (3 if minor else 9)) % 12
    scale = scale_pitch_classes(asked["key"])
    pitches = [int(note.pitch) for track in written.tracks if not track.is_drum for note in track.notes]
    numerator, denominator = (int(part) for part in asked["time_signature"].split("/"))
    return {
        "key_found": f"{pitch_name(60 + found_tonic)[:-1]} {'minor' if found_minor else 'major'}",
        "key_exact": (found_tonic, found_minor) == (tonic, minor),
        "key_related": (found_tonic, found_minor) in {(tonic, minor), (tonic, not minor), (relative, not minor)},
        "metre": bool(len(written.time_signatures)) and all(
            (sig.numerator, sig.denominator) == (numerator, denominator) for sig in written.time_signatures),
        "tempo": bool(len(written.tempos)) and all(round(tempo.qpm, 2) == asked["tempo"] for tempo in written.tempos),
        "parts": sum(1 for track in written.tracks if track.note_num()) == parts,
        "bars": bars_written(written) == BARS,
        "bars_written": bars_written(written),
        "ended": sample.ended,
        "sane": sample_sanity(written, profile, {"ended": sample.ended})["sane"],
        "density_found": profile.density_of(written),
        "density_obeyed": profile.density_of(written) == asked["density"] if asked["density"] else None,
        "out_of_key_share": sum(pitch % 12 not in scale for pitch in pitches) / max(len(pitches), 1),
        "pitch_classes": len({pitch % 12 for pitch in pitches}),
        "notes": len(pitches),
    }


def held_out_openings(data: str, count: int) -> dict:
    """What the held-out pieces' own first BARS bars hold, the reference for a sample of BARS
    bars: pitch classes used, and the share of notes outside the piece's key (estimated from its
    notes, `tonality.estimate_key`)."""
    from midillm.decoding.grammar import scale_pitch_classes
    from midillm.eval.evaluate import data_pieces, load_scores
    from midillm.tokenization.profile import first_bars
    from midillm.tokenization.tonality import estimate_key, named_key

    pieces = data_pieces(Path(data))
    scores, _ = load_scores((pieces["test"] + pieces["validation"])[:count])
    classes, outside = [], []
    for score in scores:
        key = estimate_key(score)
        if key is None:
            continue
        pitches = [int(note.pitch) for track in first_bars(score, BARS).tracks if not track.is_drum
                   for note in track.notes]
        scale = scale_pitch_classes(named_key(*key))
        classes.append(len({pitch % 12 for pitch in pitches}))
        outside.append(sum(pitch % 12 not in scale for pitch in pitches) / max(len(pitches), 1))
    return {"pieces": len(classes), "pitch_classes": sum(classes) / max(len(classes), 1),
            "out_of_key_share": sum(outside) / max(len(outside), 1)}


def share(rows: list[dict], name: str) -> float | None:
    """The share of rows where `name` holds, over those that measured it (None: none did)."""
    measured = [row[name] for row in rows if row[name] is not None]
    return sum(bool(value) for value in measured) / len(measured) if measured else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/demo/bach-smollm2")
    parser.add_argument("--data", default="runs/demo/data", help="The `midillm prepare` output it was trained on.")
    parser.add_argument("--out", default="runs/bench-control")
    parser.add_argument("--samples", type=int, default=12, help="Captions (held-out pieces) per setting (default: 12).")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    arguments = parser.parse_args()

    from midillm.decoding.export import export_score
    from midillm.decoding.generate import MidiLM
    from midillm.decoding.request import DENSITY_BIAS, KEY_BIAS, MusicRequest
    from midillm.tokenization.caption import names_in_caption

    lm = MidiLM.from_pretrained(arguments.model)
    captions = held_out_captions(arguments.data, lm.codec)
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    settings = {}
    with_density = bool(lm.codec.corpus.density_edges)
    # The model's own (the learned key alone); the default (an asked key guided); the default
    # with the key- and density-aware biases on.
    for setting, guidance, key_bias, density_bias in (
            ("learned alone", 1.0, None, None), ("guided (default)", None, None, None),
            ("guided, biases on", None, KEY_BIAS, DENSITY_BIAS if with_density else None)):
        rows = []
        for index in range(arguments.samples):
            text, asked = asked_caption(captions[index % len(captions)], index, with_density)
            request = MusicRequest(text=text, bars=BARS, key_bias=key_bias, density_bias=density_bias, seed=index,
                                   sampling={"max_new_tokens": arguments.max_new_tokens, "key_guidance": guidance})
            [sample] = lm.run(request)
            row = {"caption": text, **asked, **measure(sample, asked, len(names_in_caption(text)), lm.codec.corpus)}
            rows.append(row)
            print(f"{setting} {index}: asked {asked['key']} {asked['time_signature']} {asked['tempo']:g} BPM -> "
                  f"key {row['key_found']}, metre {row['metre']}, tempo {row['tempo']}, parts {row['parts']}, "
                  f"bars {row['bars_written']}, density {asked['density']} -> {row['density_found']}, sane {row['sane']}, "
                  f"out of key {row['out_of_key_share']:.2f}",
                  flush=True)
            if index < 2:
                label = "".join(character if character.isalnum() else "-" for character in setting).strip("-")
                name = f"{asked['key'].replace(' ', '-')}-{asked['time_signature'].replace('/', '')}-{label}"
                export_score(sample.score, out / name, ["png", "mid"])
        settings[setting] = {"rows": rows, **{name: share(rows, name) for name in
                                              ("key_exact", "key_related", "metre", "tempo", "parts", "bars", "ended",
                                               "sane", "density_obeyed")},
                             "out_of_key_share": sum(row["out_of_key_share"] for row in rows) / len(rows),
                             "pitch_classes": sum(row["pitch_classes"] for row in rows) / len(rows),
                             "seconds": time.time() - started - sum(done["seconds"] for done in settings.values())}
    seconds = time.time() - started
    held_out = held_out_openings(arguments.data, arguments.samples)
    write_json(out / "control.json", {"settings": settings, "held_out": held_out, "seconds": seconds, "bars": BARS,
                                      "max_new_tokens": arguments.max_new_tokens, "key_guidance": lm.sampling.key_guidance})

    print(f"\n{arguments.samples} held-out captions per setting, {seconds:.0f} s on {machine()}, {today()}; "
          f"key guidance {lm.sampling.key_guidance:g}")
    print(f"Command: {command_line()}\n")
    columns = list(settings.values())
    print("| control | " + " | ".join(f"midillm, {name}" for name in settings) + " | text2midi | MuseCoco |")
    print("|---" * (len(columns) + 3) + "|")
    percent = lambda value: "n/a" if value is None else f"{100 * value:.0f}%"  # noqa: E731

    def line(label: str, name: str, theirs: str = " | ", shown=percent) -> None:
        print(f"| {label} | " + " | ".join(shown(column[name]) for column in columns) + f" | {theirs} |")

    line("key, exact tonic and mode (music21)", "key_exact", "33.6% | 13.7%")
    line("key, counting relative and parallel", "key_related")
    line("metre", "metre")
    line("tempo, exact BPM", "tempo", "39.7% (bin) | 21.7% (bin)")
    line("parts (count)", "parts")
    line(f"length, exactly {BARS} bars", "bars")
    line("ended by itself", "ended")
    line("density bin (thirds of the corpus; learned / with the bias)", "density_obeyed")
    line("sane", "sane")
    line(f"notes outside the asked key's scale (held-out pieces' first {BARS} bars: "
         f"{percent(held_out['out_of_key_share'])})", "out_of_key_share")
    line(f"pitch classes used (held-out pieces' first {BARS} bars: {held_out['pitch_classes']:.1f})",
         "pitch_classes", shown=lambda value: f"{value:.1f}")
    line("seconds for the setting's samples", "seconds", shown=lambda value: f"{value:.0f}")


if __name__ == "__main__":
    main()
