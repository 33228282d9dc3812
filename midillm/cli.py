"""The `midillm` command. Thin: it parses arguments and calls the parts of the package."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings

from midillm.version import __version__


def add_dataclass_arguments(parser: argparse.ArgumentParser, config_class, positional=()) -> None:
    """One flag per dataclass field, with the field's help line, type and default."""
    for field in dataclasses.fields(config_class):
        help_text = field.metadata.get("help", "")
        if field.name in positional:
            parser.add_argument(field.name, metavar=field.name.upper(), help=help_text)
            continue
        flag = "--" + field.name.replace("_", "-")
        required = field.default is dataclasses.MISSING
        default = None if required else field.default
        if field.type in (bool, "bool"):
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                                default=default, help=help_text)
            continue
        value_type = {"int": int, "float": float, "int | None": int}.get(str(field.type), str)
        if field.type in (int, float):
            value_type = field.type
        parser.add_argument(flag, dest=field.name, type=value_type, default=default, required=required,
                            help=help_text + ("" if required else f" (default: {default})"))


def build_parser() -> argparse.ArgumentParser:
    from midillm.tokenization.dataset import PrepareConfig

    parser = argparse.ArgumentParser(
        prog="midillm",
        description="Teach a pretrained language model to write music.",
    )
    parser.add_argument("--version", action="version", version=f"midillm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    prepare = commands.add_parser(
        "prepare", help="Turn MIDI files into a tokenized, packed dataset and a codec.",
        description="Read a corpus, skip bad files (each named with its reason), train music BPE, "
                    "and write OUT/codec, OUT/dataset (train/validation/test) and OUT/prepare.json. "
                    "Re-running with the same files and settings reuses the result.")
    add_dataclass_arguments(prepare, PrepareConfig, positional=("source",))

    # Listed for --help only: main() hands `train` straight to the training entry point, so
    # `midillm train` and `accelerate launch -m midillm.finetune.train` parse exactly alike.
    commands.add_parser(
        "train", add_help=False, help="Fine-tune a base LM on a prepared dataset (midillm train --config FILE.yaml [key=value ...]).",
        description="Same as: accelerate launch -m midillm.finetune.train --config FILE.yaml [key=value ...]")

    generate = commands.add_parser(
        "generate", help="Sample music from a fine-tuned bundle and export it.",
        description="Sample N pieces from MODEL (a bundle folder or a Hub id), under the tokenization "
                    "grammar so every sample decodes, and write them to OUT in the chosen formats.")
    generate.add_argument("model", metavar="MODEL", help="A bundle folder written by `midillm train`, or a Hub id.")
    generate.add_argument("--out", required=True, help="Folder for the samples (sample-000.mid, ...).")
    generate.add_argument("-n", "--num-samples", type=int, default=4, help="How many pieces (default: 4).")
    generate.add_argument("--prompt", help="A MIDI file to continue; the output begins with it.")
    generate.add_argument("--text", help='A caption to start from, e.g. "Composer: J.S. Bach".')
    generate.add_argument("--max-new-tokens", type=int, default=512, help="Length limit in LM tokens (default: 512).")
    generate.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature, > 0 (default: 1.0).")
    generate.add_argument("--top-p", type=float, default=0.95, help="Nucleus sampling mass in (0, 1] (default: 0.95).")
    generate.add_argument("--top-k", type=int, default=0, help="Keep the K most likely tokens; 0 = off (default: 0).")
    generate.add_argument("--min-p", type=float, default=0.0, help="Drop tokens below this share of the top one (default: 0).")
    generate.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (default: 1.0).")
    generate.add_argument("--seed", type=int, default=0, help="Random seed (default: 0).")
    generate.add_argument("--time-signature", help='Force the opening metre, e.g. "3/4" (without --prompt).')
    generate.add_argument("--tempo", type=float, help="Force the opening tempo in BPM (without --prompt).")
    generate.add_argument("--programs", help="Only these General MIDI programs may play, e.g. 0,40 (-1 = drums).")
    generate.add_argument("--formats", default="mid", help="Comma-separated: mid, musicxml, wav, png (default: mid).")
    return parser


def print_prepare_report(report: dict, out: str) -> None:
    splits = report["splits"]
    print(f"Files read: {report['files_read']}, used: {report['files_used']}, "
          f"skipped: {len(report['files_skipped'])}")
    print(f"Notes: {report['notes']:,}  music LM tokens: {report['music_tokens']:,} "
          f"({report['tokens_per_note']:.3f} per note)")
    print("Splits: " + ", ".join(
        f"{name} {stats['pieces']} pieces / {stats.get('rows', 0)} rows" for name, stats in splits.items()))
    print(f"Wrote {out}/codec, {out}/dataset and {out}/prepare.json")


def run_prepare(arguments: argparse.Namespace) -> None:
    from midillm.tokenization.dataset import PrepareConfig, prepare

    values = {field.name: getattr(arguments, field.name) for field in dataclasses.fields(PrepareConfig)}
    config = PrepareConfig(**values)
    report = prepare(config)
    print_prepare_report(report, config.out)


def run_generate(arguments: argparse.Namespace) -> None:
    from pathlib import Path

    from midillm.decoding.export import export_score, parse_formats
    from midillm.decoding.generate import MidiLM, SamplingSettings

    # Everything the user typed is checked before the (slow) model load.
    formats = parse_formats(arguments.formats)
    settings = SamplingSettings(arguments.max_new_tokens, arguments.temperature, arguments.top_k,
                                arguments.top_p, arguments.min_p, arguments.repetition_penalty)
    try:
        programs = [int(value) for value in arguments.programs.split(",")] if arguments.programs else None
    except ValueError:
        raise ValueError(f"--programs takes comma-separated numbers from -1 to 127, not {arguments.programs!r}") from None
    if programs and not all(-1 <= program <= 127 for program in programs):
        raise ValueError(f"--programs takes numbers from -1 (drums) to 127, not {arguments.programs!r}")
    if arguments.num_samples < 1:
        raise ValueError(f"-n must be at least 1, not {arguments.num_samples}")
    if arguments.prompt and not Path(arguments.prompt).is_file():
        raise FileNotFoundError(f"prompt file not found: {arguments.prompt}")
    model = MidiLM.from_pretrained(arguments.model)
    samples = model.generate_ids(arguments.num_samples, arguments.prompt, arguments.text, settings,
                                 arguments.seed, programs=programs, progress=True,
                                 time_signature=arguments.time_signature, tempo=arguments.tempo)
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    for index, ids in enumerate(samples):
        score = model.codec.decode(ids)
        written = export_score(score, out / f"sample-{index:03d}", formats)
        print(f"{out / f'sample-{index:03d}'}: {score.note_num()} notes -> "
              + ", ".join(path.name for path in written.values()))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        # argparse cannot hand a leading option (like --help) to a sub-command's remainder.
        from midillm.finetune.train import main as train_main

        return train_main(argv[1:])
    parser = build_parser()
    arguments = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module="miditok")
    from midillm.tokenization.base_model import BaseModelError
    from midillm.tokenization.codec import CodecVersionError
    from midillm.decoding.export import ExportError
    from midillm.decoding.generate import BundleError
    from midillm.tokenization.sources import SourceError

    user_errors = (SourceError, BaseModelError, CodecVersionError, ExportError, BundleError, ValueError, OSError)

    try:
        if arguments.command == "prepare":
            run_prepare(arguments)
        elif arguments.command == "generate":
            run_generate(arguments)
    except KeyboardInterrupt:
        print("midillm: interrupted", file=sys.stderr)
        return 130
    except user_errors as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"midillm: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
