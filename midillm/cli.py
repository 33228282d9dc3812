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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module="miditok")
    from midillm.tokenization.base_model import BaseModelError
    from midillm.tokenization.codec import CodecVersionError
    from midillm.tokenization.sources import SourceError

    try:
        if arguments.command == "prepare":
            run_prepare(arguments)
    except KeyboardInterrupt:
        print("midillm: interrupted", file=sys.stderr)
        return 130
    except (SourceError, BaseModelError, CodecVersionError, ValueError, OSError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"midillm: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
