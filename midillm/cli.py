"""The `midillm` command. Thin: it parses arguments and calls the parts of the package."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings

from midillm.errors import first_line
from midillm.version import __version__


def add_dataclass_arguments(parser: argparse.ArgumentParser, config_class, positional=()) -> None:
    """One flag per dataclass field, with the field's help line, type and default."""
    for field in dataclasses.fields(config_class):
        help_text = field.metadata.get("help", "")
        if field.name in positional:
            several = "list" in str(field.type)
            parser.add_argument(field.name, metavar=field.name.upper(), nargs="+" if several else None, help=help_text)
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


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """--precision: the weights a command loads the model with (`midillm.decoding.precision`)."""
    from midillm.decoding.precision import PRECISIONS

    parser.add_argument("--precision", choices=("auto",) + PRECISIONS, default="auto",
                        help="The weights to sample with: int8 (int8 weights, one scale per output channel; "
                             "the fastest on a CPU at batch 1-4, at the held-out loss of fp32), bf16, fp16 or "
                             "fp32; auto is int8 on a CPU and bf16 on a GPU (fp16 where it lacks bf16) "
                             "(default: auto).")


def add_sampling_arguments(parser: argparse.ArgumentParser, names=None, defaults: str = "the bundle's own") -> None:
    """A flag per `SamplingSettings` field (or the fields `names`), with the field's help line.

    The flags default to None: the model's own settings (its generation_config.json, else
    `SamplingSettings`' defaults) apply where the user sets none."""
    from midillm.decoding.request import SamplingSettings

    sampling = SamplingSettings()
    for setting in dataclasses.fields(SamplingSettings):
        if names is not None and setting.name not in names:
            continue
        default = getattr(sampling, setting.name)
        parser.add_argument("--" + setting.name.replace("_", "-"), type=type(default),
                            help=f"{setting.metadata['help']} (default: {defaults}, else {default}).")


def sampling_changes(arguments: argparse.Namespace) -> dict:
    """The sampling settings the user set on the command line (name -> value)."""
    from midillm.decoding.request import SAMPLING_NAMES

    return {name: getattr(arguments, name) for name in SAMPLING_NAMES if getattr(arguments, name, None) is not None}


# How the command reads each control's value (`MusicRequest`'s control fields say the rest).
_CONTROL_TYPES = {"tempo": float, "bars": int, "key_bias": float, "density_bias": float}


def add_control_arguments(parser: argparse.ArgumentParser) -> None:
    """A flag per control of a new piece (`MusicRequest`'s control fields), with the field's help."""
    from midillm.decoding.request import CONTROL_NAMES, DENSITY_BIAS, KEY_BIAS, MusicRequest

    controls = {setting.name: setting for setting in dataclasses.fields(MusicRequest)}
    for name in CONTROL_NAMES:
        metadata = controls[name].metadata
        flag = "--" + name.replace("_", "-")
        if name in ("key_bias", "density_bias"):  # --key-bias alone: the documented strength
            parser.add_argument(flag, type=float, nargs="?", const=KEY_BIAS if name == "key_bias" else DENSITY_BIAS,
                                metavar=metadata["metavar"], help=metadata["help"] + ".")
            continue
        parser.add_argument(flag, type=_CONTROL_TYPES.get(name, str), metavar=metadata["metavar"],
                            help=metadata["help"] + (f' (also the caption\'s "{metadata["label"]}:" line).'
                                                     if metadata["label"] else "."))


def control_values(arguments: argparse.Namespace) -> dict:
    """The controls the user set on the command line (name -> value)."""
    from midillm.decoding.request import CONTROL_NAMES

    values = {name: getattr(arguments, name) for name in CONTROL_NAMES if getattr(arguments, name, None) is not None}
    if "programs" in values:
        values["programs"] = parse_programs(values["programs"])
    return values


def add_request_arguments(parser: argparse.ArgumentParser) -> None:
    """What every command that samples takes besides its music: precision, sampling, seed, constraints."""
    add_precision_argument(parser)
    add_sampling_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="Random seed (default: 0).")
    parser.add_argument("--no-constraints", action="store_true",
                        help="Sample under the token syntax and what you asked (instruments, metre, bars, "
                             "parts) only, without the corpus constraints (notes per onset, no repeated note at "
                             "an onset, the corpus's instruments, ranges and metres).")
    parser.add_argument("--strict-voice-leading", action=argparse.BooleanOptionalAction, default=None,
                        help="Between the parts: no parallel fifths or octaves, no voice crossing, upper voices "
                             "within an octave (parts listed from the top voice down, as a chorale's). Default: "
                             "on where the corpus's own pieces of as many parts avoid parallels (the chorales' four "
                             "voices), off elsewhere (a band; chorales with instruments doubling the voices).")
    parser.add_argument("--formats", default="mid", help="Comma-separated: mid, musicxml, wav, png (default: mid).")


def add_prepare_command(commands) -> None:
    """`midillm prepare SOURCE`: a corpus into a dataset and a codec."""
    from midillm.tokenization.dataset import PrepareConfig

    prepare = commands.add_parser(
        "prepare", help="Turn MIDI files into a tokenized, packed dataset and a codec.",
        description="Read a corpus, skip bad files (each named with its reason), learn the codec on a sample of "
                    "the train split, and write OUT/codec, OUT/dataset (train/validation/test, in shards) and "
                    "OUT/prepare.json. Memory does not grow with the corpus. Re-running with the same files and "
                    "settings reuses the result; a stopped run (OUT/partial) resumes where it stopped.")
    add_dataclass_arguments(prepare, PrepareConfig, positional=("source",))


def add_train_command(commands) -> None:
    """`midillm train`: listed for --help; `main` hands the arguments to the training entry point."""
    # Listed for --help only: main() hands `train` straight to the training entry point, so
    # `midillm train` and `accelerate launch -m midillm.finetune.train` parse exactly alike.
    commands.add_parser(
        "train", add_help=False, help="Fine-tune a base LM on a prepared dataset (midillm train --config FILE.yaml [key=value ...]).",
        description="Same as: accelerate launch -m midillm.finetune.train --config FILE.yaml [key=value ...]")


def add_generate_command(commands) -> None:
    """`midillm generate MODEL --out DIR`: new pieces, or continuations of --prompt."""
    generate = commands.add_parser(
        "generate", help="Sample music from a fine-tuned bundle and export it.",
        description="Sample N pieces from MODEL (a bundle folder or a Hub id), under the tokenization "
                    "grammar so every sample decodes, and write them to OUT in the chosen formats.")
    generate.add_argument("model", metavar="MODEL", help="A bundle folder written by `midillm train`, or a Hub id.")
    generate.add_argument("--out", required=True, help="Folder for the samples (sample-000.mid, ...).")
    generate.add_argument("-n", "--num-samples", type=int, default=4, help="How many pieces (default: 4).")
    generate.add_argument("--prompt", help="A MIDI file to continue, or a recording (wav, flac, ogg, mp3), "
                                           "transcribed first; the output begins with it.")
    generate.add_argument("--text", help='A caption to start from, e.g. "Composer: J.S. Bach"; its Key, '
                                         'Time signature, Tempo, Parts and Instruments lines are controls too '
                                         '(default: the caption of a training piece, title left out, drawn by --seed).')
    add_control_arguments(generate)
    generate.add_argument("--like", nargs="+", metavar="FILE.mid",
                          help="Generate for this taste: continue the opening of the liked piece nearest their "
                               "mean, under that piece's caption without its title (instead of --prompt; --text "
                               "overrides the caption). Of --candidates continuations per sample, the one nearest "
                               "the taste (--rank-by) is kept.")
    generate.add_argument("--candidates", type=int, default=None, metavar="K",
                          help="With --like: continuations drawn per sample, the nearest to the taste kept "
                               "(default: 3; 1: keep every draw).")
    generate.add_argument("--adapt-steps", type=int, default=None, metavar="N",
                          help="With --like: optimiser steps of a small LoRA on the liked pieces before sampling, "
                               "so that the whole piece, not only its opening, follows them (default: 20, about "
                               "two minutes on a 2-core CPU; 0: sample from the model as it is). The bundle is "
                               "not changed.")
    generate.add_argument("--rank-by", choices=("model", "features", "both"), default=None,
                          help="With --like: how nearness to the taste is judged. features (default): note density, "
                               "voices at once, rhythm, pitch-class use, against the liked pieces'; model: the "
                               "model's own representation; both: the sum of the two.")
    add_request_arguments(generate)


def add_task_command(commands) -> None:
    """`midillm infill | accompany | arrange MODEL --midi IN.mid --out DIR`: work on given music."""
    task_help = {
        "infill": ("Write new bars inside a piece, leading from the bar before into the bar after.",
                   "Replace bars FIRST-LAST of IN.mid (counted from 1) with new ones that lead from the bar "
                   "before the gap into the bar after it; everything else stays exactly as given."),
        "accompany": ("Keep some tracks of a MIDI file and write the other parts (harmonise a melody).",
                      "Keep the tracks named by --tracks (default: all tracks of the file) note for note and "
                      "write the other parts of the caption's \"Parts:\" line (default: the training corpus's), "
                      "bar by bar; on the Bach chorales, a soprano line becomes a four-part chorale."),
        "arrange": ("Keep a piece's melody and rewrite the rest under another caption.",
                    "Keep the melody of IN.mid (the tracks named by --tracks, else its highest part) note for "
                    "note and write new parts under --text: its \"Instruments:\" or \"Parts:\" line says which."),
    }
    for task, (short, long) in task_help.items():
        command = commands.add_parser(task, help=short, description=long)
        command.add_argument("model", metavar="MODEL", help="A bundle folder written by `midillm train`, or a Hub id.")
        command.add_argument("--midi", required=True, metavar="IN.mid",
                             help="The music to work on: a MIDI file, or a recording (wav, flac, ogg, mp3).")
        command.add_argument("--out", required=True, help="Folder for the results (sample-000.mid, ...).")
        if task == "infill":
            command.add_argument("--bars", required=True, help="The bars to write, e.g. 5-8 (counted from 1, both included).")
        else:
            command.add_argument("--tracks", nargs="+", metavar="NAME",
                                 help="Track names to keep (default: " + ("all tracks of the file" if task == "accompany"
                                                                         else "the highest part") + ").")
        caption_default = {"infill": "default: the piece's own", "accompany": "default: the corpus's",
                           "arrange": "required"}[task]
        command.add_argument("--text", required=task == "arrange",
                             help=f'The caption, e.g. "Composer: J.S. Bach" ({caption_default}).')
        command.add_argument("-n", "--num-samples", type=int, default=1, help="How many versions (default: 1).")
        add_request_arguments(command)


def add_transcribe_command(commands) -> None:
    """`midillm transcribe AUDIO --out OUT.mid`."""
    transcribe = commands.add_parser(
        "transcribe", help="Turn a recording into a MIDI file on a beat grid (Basic Pitch + librosa).",
        description="Transcribe AUDIO (wav, flac, ogg, mp3; at most 300 s) with Spotify's Basic Pitch on "
                    "onnxruntime, estimate its tempo (or take --tempo), put the first note on beat 1 and every "
                    "onset on a 1/GRID beat grid, and write one track of --program to OUT.")
    transcribe.add_argument("audio", metavar="AUDIO", help="The recording.")
    transcribe.add_argument("--out", required=True, help="The MIDI file to write.")
    transcribe.add_argument("--tempo", type=float, help="The known tempo in BPM (default: estimated).")
    transcribe.add_argument("--program", type=int, default=0,
                            help="General MIDI program of the notes, 0-127 (default: 0, piano).")
    transcribe.add_argument("--grid", type=int, default=4, help="Grid steps per beat (default: 4).")


def add_push_command(commands) -> None:
    """`midillm push MODEL --repo OWNER/NAME`."""
    push = commands.add_parser(
        "push", help="Upload a bundle to the Hugging Face Hub.",
        description="Make MODEL Hub-ready (remote code for the pipeline, a rendered sample, the full model card) "
                    "and upload it with huggingface_hub. The token comes from HF_TOKEN or `hf auth login`.")
    push.add_argument("model", metavar="MODEL", help="A bundle folder written by `midillm train`.")
    push.add_argument("--repo", required=True, metavar="OWNER/NAME", help="The Hub repository (created if missing).")
    push.add_argument("--private", action="store_true", help="Create the repository as private.")
    push.add_argument("--license", help="License id for the model card (default: apache-2.0).")
    push.add_argument("--no-sample", dest="render", action="store_false",
                      help="Do not render a sample piano roll for the card.")


def add_export_command(commands) -> None:
    """`midillm export MODEL --out DIR [--merge]`."""
    export = commands.add_parser(
        "export", help="Write a Hub-ready copy of a bundle, or a merged plain transformers model.",
        description="Without --merge: copy MODEL to OUT and make it Hub-ready. With --merge: the base model with the "
                    "adapter merged and the new token rows, loadable with AutoModelForCausalLM / AutoTokenizer, "
                    "plus the codec files (MidiLM.from_pretrained works on it too).")
    export.add_argument("model", metavar="MODEL", help="A bundle folder written by `midillm train`.")
    export.add_argument("--out", required=True, help="The folder to write.")
    export.add_argument("--merge", action="store_true", help="Merge the adapter into the base model.")


def add_eval_command(commands) -> None:
    """`midillm eval MODEL --data DIR --out DIR`: what separates the model from its corpus."""
    evaluate = commands.add_parser(
        "eval", help="Evaluate a bundle: likelihood, validity, musical features, memorisation, report.",
        description="Score MODEL on the held-out split of DATA, generate N samples (or read --samples), compare "
                    "their musical features with the held-out pieces (MGEval), check them for copies of training "
                    "pieces, and write OUT/metrics.json, OUT/report.md and a self-contained OUT/report.html.")
    evaluate.add_argument("model", metavar="MODEL", help="A bundle folder written by `midillm train`, or a Hub id.")
    evaluate.add_argument("--data", required=True, help="The `midillm prepare` output the model was trained on.")
    evaluate.add_argument("--out", required=True, help="Folder for metrics.json and the report.")
    evaluate.add_argument("-n", "--num-samples", type=int, default=16, help="Samples to generate (default: 16).")
    evaluate.add_argument("--samples", metavar="FOLDER", help="Evaluate these MIDI files instead of generating.")
    add_sampling_arguments(evaluate, names=("max_new_tokens", "temperature", "top_p", "min_p"),
                           defaults="the bundle's own, as `generate` samples")
    evaluate.add_argument("--seed", type=int, default=0, help="Random seed (default: 0).")
    evaluate.add_argument("--require-ending", action="store_true",
                          help="Count a sample cut by --max-new-tokens (no </music> of its own) as not sane.")
    evaluate.add_argument("--no-baselines", dest="baselines", action="store_false",
                          help="Skip the untrained-model and shuffled-bars baselines.")
    add_precision_argument(evaluate)


def add_embed_command(commands) -> None:
    """`midillm embed MODEL SOURCE --out INDEX`."""
    embed = commands.add_parser(
        "embed", help="One vector per piece from a fine-tuned bundle, into an index for similar / recommend.",
        description="Read SOURCE as `prepare` does (bad files skipped, each with its reason), move each piece to a "
                    "canonical key, and store the mean of MODEL's hidden states over its music tokens in the index "
                    "folder INDEX (vectors.npy + index.json, with the model's fingerprint). Re-running embeds only "
                    "new or changed pieces.")
    embed.add_argument("model", metavar="MODEL", help="A bundle folder written by `midillm train`, or a Hub id.")
    embed.add_argument("source", metavar="SOURCE",
                       help="A MIDI folder, music21:bach | music21:essen | music21:ryans | music21:palestrina, "
                            "or hf:<dataset>.")
    embed.add_argument("--out", required=True, metavar="INDEX", help="The index folder (created or updated).")
    embed.add_argument("--layer", type=int,
                       help="Decoder layer to read: 0 = token embeddings, negative = from the top "
                            "(default: the middle layer, which retrieved best on the demo bundle).")
    embed.add_argument("--limit", type=int, help="Use only the first N pieces of SOURCE.")
    embed.add_argument("--num-workers", type=int, default=2, help="Processes that check the files (default: 2).")


def add_query_flags(command) -> None:
    """The flags `similar` and `recommend` share."""
    command.add_argument("-k", type=int, default=10, help="How many pieces to list (default: 10).")
    command.add_argument("--diverse", action="store_true",
                         help="At most one piece from each group of near-duplicates (copies, transpositions).")
    command.add_argument("--json", action="store_true", help="Print the results as JSON for other programs.")
    command.add_argument("--model", help="The bundle to embed query files with, when it has moved since the "
                                         "index was built (it must be the same model).")


def add_similar_command(commands) -> None:
    """`midillm similar INDEX QUERY.mid`."""
    similar = commands.add_parser(
        "similar", help="The pieces of an index nearest a MIDI file.",
        description="Rank the pieces of INDEX by cosine similarity to QUERY (embedded with the index's model, "
                    "or its stored vector when the index holds that file).")
    similar.add_argument("index", metavar="INDEX", help="An index folder written by `midillm embed`.")
    similar.add_argument("query", metavar="QUERY.mid", help="The MIDI file to find similar pieces for.")
    add_query_flags(similar)

def add_recommend_command(commands) -> None:
    """`midillm recommend INDEX --likes ...`."""
    recommend = commands.add_parser(
        "recommend", help="Pieces of an index for a taste: near the liked pieces, away from the disliked.",
        description="Score each piece of INDEX by its mean similarity to the liked pieces minus half its mean "
                    "similarity to the disliked ones; the liked and disliked pieces, and pieces closer to a "
                    "disliked piece than to any liked one, are left out.")
    recommend.add_argument("index", metavar="INDEX", help="An index folder written by `midillm embed`.")
    recommend.add_argument("--likes", nargs="+", required=True, metavar="FILE.mid", help="MIDI files the listener likes.")
    recommend.add_argument("--dislikes", nargs="+", default=[], metavar="FILE.mid",
                           help="MIDI files the listener dislikes.")
    add_query_flags(recommend)


def add_demo_command(commands) -> None:
    """`midillm demo`: the whole path on the offline default."""
    demo = commands.add_parser(
        "demo", help="The whole path on the offline default: prepare, train, generate, eval, model card.",
        description="Prepare the Bach chorales, fine-tune the offline base model with configs/bach-demo.yaml "
                    "under a wall-clock budget, generate samples (mid, musicxml, wav, png), evaluate them, and "
                    "write a Hub-ready bundle whose card carries the numbers. About 15 minutes on a 2-core CPU.")
    demo.add_argument("--out", default="runs/demo", help="Folder for everything (default: runs/demo).")
    demo.add_argument("--train-minutes", type=float, default=8.0,
                      help="Wall-clock budget of the fine-tuning, in minutes (default: 8).")
    demo.add_argument("--base-model", default=None,
                      help="Base LM: Hub id, local folder, .gguf file (default: the offline SmolLM2-135M-Instruct).")
    demo.add_argument("--limit", type=int, help="Use only the first N chorales (quicker, worse).")
    demo.add_argument("-n", "--num-samples", type=int, default=4, help="Samples to write (default: 4).")
    demo.add_argument("--eval-samples", type=int, default=32,
                      help="Samples the evaluation draws, with the corpus constraints and again with the model "
                           "alone (default: 32).")


def add_studio_command(commands) -> None:
    """`midillm studio [MODEL]`: the local web page."""
    studio = commands.add_parser(
        "studio", help="A local web page: pick a model, write a caption or upload a MIDI file, listen, download.",
        description="Serve the studio page on http://HOST:PORT (127.0.0.1 by default; no outside request). It "
                    "samples one request at a time and queues the rest; results stay in memory until it stops.")
    studio.add_argument("model", metavar="MODEL", nargs="?",
                        help="A bundle folder, or a folder of bundles to choose from "
                             "(default: the bundle `midillm demo` writes, runs/demo/bach-smollm2).")
    studio.add_argument("--port", type=int, default=7860, help="Port to listen on (default: 7860).")
    studio.add_argument("--host", default="127.0.0.1",
                        help="Address to listen on (default: 127.0.0.1, this computer only; 0.0.0.0 opens the "
                             "studio to the network, with no password).")
    studio.add_argument("--queue-size", type=int, default=4,
                        help="Requests that may wait behind the running one; more are refused (default: 4).")
    studio.add_argument("--max-upload-mb", type=float, default=20.0,
                        help="Largest MIDI file or recording accepted, in MB (default: 20).")
    add_precision_argument(studio)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="midillm", description="Teach a pretrained language model to write music.")
    parser.add_argument("--version", action="version", version=f"midillm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # In the order `midillm --help` lists them: the path from a corpus to music, then the rest.
    for add_command in (add_prepare_command, add_train_command, add_generate_command, add_task_command,
                        add_transcribe_command, add_push_command, add_export_command, add_eval_command,
                        add_embed_command, add_similar_command, add_recommend_command, add_demo_command,
                        add_studio_command):
        add_command(commands)
    return parser


def run_studio(arguments: argparse.Namespace) -> None:
    from midillm.studio import serve

    serve(arguments.model, port=arguments.port, host=arguments.host, queue_size=arguments.queue_size,
          max_upload_mb=arguments.max_upload_mb, precision=arguments.precision)


def run_demo(arguments: argparse.Namespace) -> None:
    from midillm.demo import run_demo as demo
    from midillm.tokenization import DEFAULT_BASE_MODEL

    demo(arguments.out, base_model=arguments.base_model or DEFAULT_BASE_MODEL, limit=arguments.limit,
         train_minutes=arguments.train_minutes, num_samples=arguments.num_samples,
         eval_samples=arguments.eval_samples)


def print_prepare_report(report: dict, out: str) -> None:
    splits = report["splits"]
    counts = report["counts"]
    print(f"Files read: {counts['read']} = used {counts['used']} + skipped {counts['skipped']} "
          f"+ duplicates {counts['duplicates']}")
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


def parse_programs(text: str | None) -> list[int] | None:
    """--programs "drums,33,0" -> [-1, 33, 0]; one line if it is not a list of programs. Drums
    are "drums" as well as -1: a value that starts with -1 reads as a flag on the command line."""
    from midillm.tokenization.caption import DRUMS, DRUMS_NAME

    if not text:
        return None
    try:
        return [DRUMS if value.strip().lower() == DRUMS_NAME.lower() else int(value) for value in text.split(",")]
    except ValueError:
        raise ValueError(f"--programs takes comma-separated numbers from -1 to 127 (or drums), not {text!r}") from None


def check_like_arguments(arguments: argparse.Namespace) -> None:
    """--like and the flags that go with it, checked before the model loads."""
    if arguments.like and arguments.prompt:
        raise ValueError("--like sets the prompt itself: give --like or --prompt, not both")
    if arguments.candidates is not None and (arguments.candidates < 1 or not arguments.like):
        raise ValueError("--candidates goes with --like and must be at least 1")
    if arguments.rank_by is not None and not arguments.like:
        raise ValueError("--rank-by goes with --like")
    if arguments.adapt_steps is not None and (arguments.adapt_steps < 0 or not arguments.like):
        raise ValueError("--adapt-steps goes with --like and must be 0 or more")
    if arguments.like:
        from midillm.decoding.embedding import read_score

        for liked in arguments.like:
            read_score(liked)  # missing or not MIDI: one line before the model loads


def run_generate(arguments: argparse.Namespace) -> None:
    from pathlib import Path

    from midillm.audio import check_audio, is_audio_path, transcribe, codec_grid
    from midillm.decoding.export import export_score, parse_formats
    from midillm.decoding.generate import MidiLM
    from midillm.decoding.request import MusicRequest

    # Everything the user typed is checked before the (slow) model load: the request checks itself.
    formats = parse_formats(arguments.formats)
    request = MusicRequest("continue", arguments.prompt, arguments.text, **control_values(arguments),
                           num_samples=arguments.num_samples, seed=arguments.seed,
                           constrain=not arguments.no_constraints,
                           strict_voice_leading=arguments.strict_voice_leading,
                           sampling=sampling_changes(arguments), progress=True)
    check_like_arguments(arguments)
    audio_prompt = arguments.prompt and is_audio_path(arguments.prompt)
    if audio_prompt:
        check_audio(arguments.prompt)  # not audio, empty, too long: one line before the model loads
    model = MidiLM.from_pretrained(arguments.model, dtype=arguments.precision)
    out = Path(arguments.out)
    if audio_prompt:  # transcribed here, so the user also gets what the model heard
        transcription = transcribe(arguments.prompt, grid=codec_grid(model.codec))
        request = request.updated(music=transcription)
        out.mkdir(parents=True, exist_ok=True)
        written = export_score(transcription, out / "prompt-transcription", formats)
        print(f"{out / 'prompt-transcription'}: {transcription.note_num()} notes transcribed from "
              f"{arguments.prompt} at {transcription.tempos[0].qpm:.1f} BPM -> "
              + ", ".join(path.name for path in written.values()))
    if arguments.like:
        samples = generate_for_liked_pieces(model, request, arguments)
    else:
        samples = model.run(request)
    out.mkdir(parents=True, exist_ok=True)
    for index, sample in enumerate(samples):
        written = export_score(sample.score, out / f"sample-{index:03d}", formats)
        ending = "ended" if sample.ended else "cut by --max-new-tokens"
        print(f"{out / f'sample-{index:03d}'}: {sample.score.note_num()} notes, {ending} -> "
              + ", ".join(path.name for path in written.values()))


def generate_for_liked_pieces(model, request, arguments: argparse.Namespace) -> list:
    """--like: continue the opening of the liked piece nearest the taste, keep the nearest draws."""
    from midillm.decoding.generate import Sample
    from midillm.retrieval import ADAPT_STEPS, CANDIDATES_PER_SAMPLE, TASTE_RANKING, generate_for_taste, taste_prompt

    candidates = arguments.candidates or CANDIDATES_PER_SAMPLE
    rank_by = arguments.rank_by or TASTE_RANKING
    adapt_steps = ADAPT_STEPS if arguments.adapt_steps is None else arguments.adapt_steps
    taste = taste_prompt(model, arguments.like)
    caption = request.text or taste.text
    print(f"Prompt: the opening of the liked piece nearest the taste; caption: {' / '.join((caption or '').splitlines())}; "
          f"adapting the model to the liked pieces for {adapt_steps} steps; "
          f"keeping the nearest of {candidates} continuations per sample (by {rank_by})")
    settings = model.sampling.updated(**request.sampling)
    rows = generate_for_taste(model, arguments.like, request.num_samples, caption, settings, request.seed,
                              candidates_per_sample=candidates, taste=taste, rank_by=rank_by,
                              adapt_steps=adapt_steps, programs=request.programs, progress=True,
                              time_signature=request.time_signature, tempo=request.tempo,
                              constrain=request.constrain, strict_voice_leading=request.strict_voice_leading)
    return [Sample(model.codec.decode(ids), ids, record["ended"]) for ids, record in zip(rows, model.last_generation)]


def run_task(arguments: argparse.Namespace) -> None:
    """infill / accompany / arrange: the given music kept exactly, new music written around it."""
    from pathlib import Path

    from midillm.decoding.export import export_score, parse_formats
    from midillm.decoding.generate import MidiLM
    from midillm.decoding.request import MusicRequest

    formats = parse_formats(arguments.formats)
    request = MusicRequest(arguments.command, arguments.midi, arguments.text, bars=getattr(arguments, "bars", None),
                           tracks=getattr(arguments, "tracks", None), num_samples=arguments.num_samples,
                           seed=arguments.seed, constrain=not arguments.no_constraints,
                           strict_voice_leading=arguments.strict_voice_leading,
                           sampling=sampling_changes(arguments), progress=True)
    model = MidiLM.from_pretrained(arguments.model, dtype=arguments.precision)
    samples = model.run(request)
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    for index, sample in enumerate(samples):
        written = export_score(sample.score, out / f"sample-{index:03d}", formats)
        parts = ", ".join(f"{track.name or 'unnamed'} ({track.note_num()})" for track in sample.score.tracks)
        print(f"{out / f'sample-{index:03d}'}: {sample.score.note_num()} notes in {parts} -> "
              + ", ".join(path.name for path in written.values()))


def run_embed(arguments: argparse.Namespace) -> None:
    from midillm.retrieval import build_index

    report = build_index(arguments.model, arguments.source, arguments.out, layer=arguments.layer,
                         limit=arguments.limit, num_workers=arguments.num_workers)
    print(f"Files read: {report['files_read']}, embedded: {report['embedded']}, unchanged: {report['kept']}, "
          f"same content as an indexed piece: {report['reused']}, skipped: {len(report['skipped'])}")
    print(f"Wrote {arguments.out} ({report['pieces']} pieces)")


def print_results(results: list[dict], as_json: bool) -> None:
    import json

    if as_json:
        print(json.dumps(results, ensure_ascii=False, indent=1))
        return
    for result in results:
        about = ", ".join(f"{key}: {value}" for key, value in result.get("metadata", {}).items()
                          if key in ("composer", "title", "key"))
        print(f"{result['rank']:>3}. {result['score']:+.3f}  {result['name']}" + (f"  ({about})" if about else ""))


def run_similar(arguments: argparse.Namespace) -> None:
    from midillm.retrieval import Index, similar

    index = Index.load(arguments.index)
    print_results(similar(index, arguments.query, k=arguments.k, diverse=arguments.diverse,
                          model=arguments.model), arguments.json)


def run_recommend(arguments: argparse.Namespace) -> None:
    from midillm.retrieval import Index, recommend

    index = Index.load(arguments.index)
    print_results(recommend(index, arguments.likes, arguments.dislikes, k=arguments.k, diverse=arguments.diverse,
                            model=arguments.model), arguments.json)


def run_transcribe(arguments: argparse.Namespace) -> None:
    from pathlib import Path

    from midillm.audio import transcribe
    from midillm.decoding.export import write_midi

    score = transcribe(arguments.audio, tempo=arguments.tempo, program=arguments.program, grid=arguments.grid)
    path = write_midi(score, Path(arguments.out))
    print(f"{path}: {score.note_num()} notes from {arguments.audio}, {score.tempos[0].qpm:.1f} BPM, "
          f"onsets on a 1/{arguments.grid} beat grid")


def run_push(arguments: argparse.Namespace) -> None:
    from midillm.hub.push import push_bundle

    url = push_bundle(arguments.model, arguments.repo, private=arguments.private, license=arguments.license,
                      render=arguments.render, log=print)
    print(f"Pushed {arguments.model} to {url}")


def run_export(arguments: argparse.Namespace) -> None:
    from midillm.hub.bundle import export_bundle

    out = export_bundle(arguments.model, arguments.out, merge=arguments.merge, log=print)
    print(f"Exported {arguments.model} to {out}{' (merged)' if arguments.merge else ''}")


def _percent(value) -> str:
    return "n/a" if not isinstance(value, (int, float)) or value != value else f"{100 * value:.0f}%"


def run_eval(arguments: argparse.Namespace) -> None:
    from midillm.decoding.request import SamplingSettings
    from midillm.eval import EvalConfig, evaluate

    sampling = SamplingSettings.check_changes(sampling_changes(arguments))  # one line, before loading
    config = EvalConfig(model=arguments.model, data=arguments.data, out=arguments.out,
                        num_samples=arguments.num_samples, samples=arguments.samples, seed=arguments.seed,
                        **sampling, baselines=arguments.baselines, require_ending=arguments.require_ending,
                        precision=arguments.precision)
    summary = evaluate(config)["summary"]
    from midillm.eval.listener import listener_lines

    print("What separates the model from its corpus:")
    print("\n".join(listener_lines(summary)))
    print(f"Sane samples (the floor): {_percent(summary.get('sane_share'))} with the corpus constraints, "
          f"{_percent(summary.get('sane_share_model_alone'))} with the model alone "
          f"(held-out pieces {_percent(summary.get('corpus_sane_share'))}); "
          f"bits per note {summary.get('bits_per_note', float('nan')):.3f}")
    print(", ".join(f"{key} {value:.3f}" for key, value in summary.items() if isinstance(value, float)))
    print(f"Wrote {arguments.out}/metrics.json, {arguments.out}/report.md and {arguments.out}/report.html")


# What each command runs (`train` never reaches the table: `main` hands it over whole).
COMMANDS = {"prepare": run_prepare, "generate": run_generate, "infill": run_task, "accompany": run_task,
            "arrange": run_task, "transcribe": run_transcribe, "push": run_push, "export": run_export,
            "eval": run_eval, "embed": run_embed, "similar": run_similar, "recommend": run_recommend,
            "demo": run_demo, "studio": run_studio}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        # argparse cannot hand a leading option (like --help) to a sub-command's remainder.
        from midillm.finetune.train import main as train_main
        from midillm.hub.bundle import complete_bundle

        # The training part may not import the hub; the command, above both, makes the trained
        # folder a whole Hub repository (model card, generation config).
        return train_main(argv[1:], finish=complete_bundle)
    parser = build_parser()
    arguments = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module="miditok")
    # peft 0.21 reads `model.is_gradient_checkpointing`, which transformers 5 deprecates with a
    # FutureWarning at every adapter load: noise to a musician, nothing they can act on.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    from midillm.tokenization.base_model import BaseModelError
    from midillm.tokenization.codec import CodecVersionError
    from midillm.decoding.export import ExportError
    from midillm.model.bundle import BundleError
    from midillm.tokenization.sources import SourceError

    user_errors = (SourceError, BaseModelError, CodecVersionError, ExportError, BundleError, ValueError, OSError)

    try:
        COMMANDS[arguments.command](arguments)
    except KeyboardInterrupt:
        print("midillm: interrupted", file=sys.stderr)
        return 130
    except user_errors as error:
        message = first_line(error)
        print(f"midillm: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
