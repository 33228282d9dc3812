"""`midillm eval`: sanity, listener measures, likelihood, validity, features, set comparison and
memorisation, with baselines.

The headline is the *sane share* (`sanity.py`): the samples a listener of the corpus would
accept (no onset crowded beyond the corpus, no duplicate notes, time that moves, the corpus's
instruments and pitch ranges), judged against the corpus profile `prepare` kept in the codec
(for codecs without one, a profile of the held-out pieces). It is measured with the corpus
constraints of the sampler and with the model alone (the syntax grammar and the caption's
instruments), beside the share of samples that ended by themselves and the held-out bits per note.

Sanity is a floor: what separates a model from its corpus are the listener measures
(`listener.py`), reported for every set beside its sane share: chords of the corpus's vocabulary
on the beat, parallel fifths and octaves per move of two voices, rests inside voices, and the
accuracy of a classifier telling the set from the held-out pieces (0.5: it cannot; the held-out
pieces score one half against the other).

Sets compared with the reference (the test and validation pieces of a `midillm prepare` data
folder; pieces far longer than the samples, a band's tunes, as excerpts of the samples' length:
`reference_excerpts`):

- generated: N samples of the model with the corpus constraints (or the MIDI files of
  `--samples FOLDER`);
- model_alone: N samples of the model under the syntax grammar and the caption's asked
  instruments, none of the corpus's limits (same seed);
- untrained: the base LM with the new token rows, before fine-tuning (same sampling, same seed);
- shuffled: the reference pieces with their bars shuffled (same bars, no long-range order:
  `shuffle_bars`);
- ceiling: half of the reference against the other half (the best a model can score).

`evaluate_sets` is the model-free core (also used by scripts/bench_eval.py).
"""

from __future__ import annotations

import gc
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from symusic import Score

from midillm.bundle_files import EVAL_METRICS
from midillm.errors import ConfigError
from midillm.model.bundle import Bundle
from midillm.model.runtime import release_free_heap
from midillm.tokenization.metre import bar_length
from midillm.tokenization.prepared import REPORT_FILE, PreparedData
from midillm.tokenization.profile import excerpts

from .compare import compare_sets, mean_over_features, nan_counts, split_half_ceiling, summarise_features
from .features import piece_features, piece_notes
from .listener import (LISTENER_MEASURES, classifier_rows, listening_summary, piece_listening,
                       split_half_classifier_accuracy)
from .memorization import TrainingIndex, longest_copy, memorization_summary
from .sanity import bars_written, corpus_profile, crowding_limit, sample_sanity, sanity_summary
from .two_sample import two_sample_classifier_accuracy
from .validity import sample_validity, score_validity, validity_summary

__all__ = ["EvalConfig", "EvalError", "evaluate", "evaluate_sets", "load_scores", "reference_excerpts", "shuffle_bars"]


# Held-out pieces at least this many times as long as the samples (median bars) are judged as
# excerpts of the samples' length, at most EXCERPTS_PER_PIECE of them spread over each piece
# (`reference_excerpts`).
EXCERPT_LENGTH_RATIO = 2
EXCERPTS_PER_PIECE = 8

# Samples drawn at once: a bigger batch is faster per token on a CPU, but its cache is memory.
SAMPLING_BATCH = 16


class EvalError(ValueError):
    """An evaluation that cannot run; the message is one line for the user."""


@dataclass
class EvalConfig:
    """What `midillm eval` does; each field is also a command-line flag."""

    model: str | None = field(default=None, metadata={"help": "A bundle folder or Hub id (None: only --samples)."})
    data: str = field(default="", metadata={"help": "A `midillm prepare` output folder."})
    out: str = field(default="eval", metadata={"help": "Folder for metrics.json, report.md and report.html."})
    num_samples: int = field(default=16, metadata={"help": "Samples to generate."})
    samples: str | None = field(default=None, metadata={"help": "Evaluate these MIDI files instead of generating."})
    max_new_tokens: int | None = field(default=None, metadata={
        "help": "Length limit of each sample, in LM tokens (default: the bundle's own, as `generate` samples)."})
    seed: int = field(default=0, metadata={"help": "Seed of sampling and of the shuffles."})
    temperature: float | None = field(default=None, metadata={
        "help": "Sampling temperature (default: the bundle's own, as `generate` samples it)."})
    top_p: float | None = field(default=None, metadata={
        "help": "Nucleus sampling mass (default: the bundle's own)."})
    min_p: float | None = field(default=None, metadata={
        "help": "Drop tokens less likely than this share of the likeliest one (default: the bundle's own)."})
    baselines: bool = field(default=True, metadata={"help": "Also evaluate the untrained model and shuffled bars."})
    baseline_samples: int | None = field(default=8, metadata={
        "help": "Samples drawn from the untrained model (None: as many as num_samples); it only shows the floor."})
    likelihood_rows: int | None = field(default=None, metadata={
        "help": "Score only the first N rows of the held-out split (default: all)."})
    report_samples: int = field(default=3, metadata={"help": "Samples shown as piano rolls and audio in the report."})
    require_ending: bool = field(default=False, metadata={
        "help": "Count a sample cut by the token budget (no </music>) as not sane."})
    precision: str = field(default="auto", metadata={
        "help": "The weights the model is scored and sampled with (`MidiLM.from_pretrained`'s dtype: "
                "auto, fp32, bf16, fp16 or int8)."})

    def __post_init__(self):
        if not self.data:
            raise EvalError("--data is required: a `midillm prepare` output folder")
        if self.num_samples < 1:
            raise EvalError(f"-n must be at least 1, not {self.num_samples}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise EvalError(f"--max-new-tokens must be at least 1, not {self.max_new_tokens}")
        if self.model is None and self.samples is None:
            raise EvalError("give a MODEL, or --samples FOLDER of MIDI files")


# ----------------------------------------------------------------------------- inputs


def load_scores(paths, log=None) -> tuple[list[Score], list[str]]:
    """Read MIDI files; unreadable ones are skipped (and named through `log`)."""
    scores, names = [], []
    for path in paths:
        try:
            scores.append(Score(str(path)))
            names.append(Path(path).name)
        except Exception as error:  # noqa: BLE001 - one bad file must not stop an evaluation
            if log:
                log(f"skipped {path}: {type(error).__name__}: {error}")
    return scores, names


def data_pieces(data: Path) -> dict[str, list[Path]]:
    prepared = PreparedData(data)
    try:
        prepared.check(REPORT_FILE)
    except ConfigError as error:
        raise EvalError(str(error)) from error
    report, report_path = prepared.read_report(), prepared.report_path
    pieces: dict[str, list[Path]] = {"train": [], "validation": [], "test": []}
    for piece in report.get("pieces", []):
        pieces.setdefault(piece["split"], []).append(Path(piece["path"]))
    missing = [path for paths in pieces.values() for path in paths if not path.is_file()]
    if missing:
        raise EvalError(f"{len(missing)} MIDI files listed in {report_path} are gone, e.g. {missing[0]}")
    if not pieces["test"] + pieces["validation"]:
        raise EvalError(f"{report_path} lists no test or validation pieces to compare with")
    return pieces


def reference_excerpts(reference: list[Score], names: list[str], samples: list[Score],
                       per_piece: int = EXCERPTS_PER_PIECE) -> tuple[list[Score], list[str], dict | None]:
    """The held-out pieces as the samples are long: where they are (median bars) at least
    `EXCERPT_LENGTH_RATIO` times the samples' length, each piece becomes up to `per_piece`
    excerpts of the samples' median bars, spread evenly over it (`profile.excerpts`, what the
    corpus profile measured part densities on); else the pieces stay whole. Returns the
    reference, its names ("piece.mid, 8-bar window 2", counted from the bar of its first note)
    and what was cut ({"bars", "pieces", "excerpts"}; None: whole pieces).

    A band tune runs 50 to 150 bars, a sample 8 to 12: judged whole, a tune's pitches used, its
    range and its parts' longest rests measure its length, not its music, and a folder's three
    held-out tunes are too few for the two-sample classifier (`two_sample.MIN_PIECES`). The
    chorales, about as long as their samples, stay whole."""
    sample_bars = [bars_written(score) for score in samples if any(track.note_num() for track in score.tracks)]
    piece_bars = [bars_written(score) for score in reference]
    if not sample_bars or not piece_bars:
        return reference, names, None
    bars = max(int(np.median(sample_bars)), 1)
    if np.median(piece_bars) < EXCERPT_LENGTH_RATIO * bars:
        return reference, names, None
    cut, cut_names = [], []
    for score, name in zip(reference, names):
        for window, excerpt in excerpts(score, bars, per_piece):
            cut.append(excerpt)
            cut_names.append(f"{name}, {bars}-bar window {window + 1}")
    if not cut:
        return reference, names, None
    return cut, cut_names, {"bars": bars, "pieces": len(reference), "excerpts": len(cut)}


def shuffle_bars(score: Score, rng: random.Random, parts_apart: bool = False) -> Score:
    """The score's bars in a random order, every part moved with its bar (the shuffled control:
    the same bars, chords and instruments, no long-range order). Bars of the first metre (4/4
    without one); a note keeps its place in its bar, its length and its track. `parts_apart`:
    the first part stays and each other part's bars go into an order of their own (the
    harmonisation control of `tasks`: the same notes, with no regard for the melody above).

    Moved as notes, not as the codec's bars of tokens: a codec names each part's instrument, the
    metre and the tempo in the first bar only, and the bar shuffled away took them along, so a
    band's parts came back as pianos and its drums as pitched notes (chords on the beat of the
    held-out band excerpts 20% -> 9% by that alone; session 28)."""
    score = score if str(score.ttype).endswith("Tick") else score.to("tick")
    signature = score.time_signatures[0] if len(score.time_signatures) else None
    numerator, denominator = (signature.numerator, signature.denominator) if signature else (4, 4)
    bar = max(int(round(bar_length(numerator, denominator, score.ticks_per_quarter))), 1)
    bars = max(1, math.ceil(score.end() / bar))

    def new_order() -> list[int]:
        order = list(range(bars))
        rng.shuffle(order)
        return order

    shuffled = score.copy()
    tracks = list(shuffled.tracks)
    order = None if parts_apart else new_order()
    for track in tracks[1:] if parts_apart else tracks:
        track_order = new_order() if parts_apart else order
        for note in track.notes:
            note.time = track_order[note.time // bar] * bar + note.time % bar
        track.notes.sort()
    return shuffled


# ----------------------------------------------------------------------------- the core


def evaluate_sets(sets: dict[str, list[Score]], reference: list[Score], training: list[Score],
                  training_names: list[str] | None = None, seed: int = 0, profile=None,
                  generations: dict[str, list[dict]] | None = None, require_ending: bool = False,
                  profile_source: str = "given") -> dict:
    """Sanity, listener measures, features, comparison with the reference, and memorisation
    against the training pieces, for each named set of scores; plus the reference's own figures
    and split-half ceiling.

    `profile` is the `CorpusProfile` the sanity checks judge against (None: measured on the
    reference pieces); `generations` the sampler's per-sample records of the sets that were
    generated (`MidiLM.last_generation`), which say whether each sample ended by itself.
    """
    timings = {}
    started = time.perf_counter()
    if profile is None:
        profile, profile_source = corpus_profile(None, reference)
    generations = generations or {}
    sanity = {name: [sample_sanity(score, profile, record, require_ending)
                     for score, record in zip(scores, generations.get(name) or [None] * len(scores))]
              for name, scores in sets.items()}
    reference_sanity = [sample_sanity(score, profile) for score in reference]
    timings["sanity"] = time.perf_counter() - started

    started = time.perf_counter()
    reference_notes = [piece_notes(score) for score in reference]
    reference_features = [piece_features(notes) for notes in reference_notes]
    set_notes = {name: [piece_notes(score) for score in scores] for name, scores in sets.items()}
    set_features = {name: [piece_features(notes) for notes in notes_list] for name, notes_list in set_notes.items()}
    timings["features"] = time.perf_counter() - started

    started = time.perf_counter()
    reference_listening = [piece_listening(score) for score in reference]
    set_listening = {name: [piece_listening(score) for score in scores] for name, scores in sets.items()}
    reference_rows = classifier_rows(reference_listening, reference_features)
    listener = {"reference": {**listening_summary(reference_listening),
                              "classifier_accuracy": split_half_classifier_accuracy(reference_rows, seed=seed),
                              "listener_per_piece": reference_listening}}
    for name, listening in set_listening.items():
        rows = classifier_rows(listening, set_features[name])
        listener[name] = {**listening_summary(listening),
                          "classifier_accuracy": two_sample_classifier_accuracy(rows, reference_rows, seed=seed),
                          "listener_per_piece": listening}
    timings["listener"] = time.perf_counter() - started

    started = time.perf_counter()
    index = TrainingIndex([piece_notes(score) for score in training], training_names)
    timings["training_index"] = time.perf_counter() - started

    started = time.perf_counter()
    ceiling = split_half_ceiling(reference_features, seed=seed)
    result = {"sanity": {"profile_source": profile_source, "require_ending": require_ending,
                         "profile": _profile_facts(profile)},
              "reference": {"pieces": len(reference), **listener["reference"],
                            "sanity": {**sanity_summary(reference_sanity), "per_piece": reference_sanity},
                            "features": summarise_features(reference_features),
                            "nan_features": nan_counts(reference_features),
                            "per_piece": reference_features, "ceiling": ceiling,
                            "ceiling_mean_oa": mean_over_features(ceiling, "oa"),
                            "ceiling_mean_kl": mean_over_features(ceiling, "kl")},
              "sets": {}}
    for name, features in set_features.items():
        comparison = compare_sets(reference_features, features)
        result["sets"][name] = {"pieces": len(features), **listener[name],
                                "sanity": {**sanity_summary(sanity[name]), "per_piece": sanity[name]},
                                "features": summarise_features(features), "nan_features": nan_counts(features),
                                "per_piece": features, "comparison": comparison,
                                "mean_oa": mean_over_features(comparison, "oa"),
                                "mean_kl": mean_over_features(comparison, "kl")}
    timings["comparison"] = time.perf_counter() - started

    started = time.perf_counter()
    for name, notes_list in list(set_notes.items()) + [("reference", reference_notes)]:
        copies = [longest_copy(notes, index) for notes in notes_list]
        target = result["reference"] if name == "reference" else result["sets"][name]
        target["memorization"] = {**memorization_summary(copies), "per_piece": copies}
    timings["memorization"] = time.perf_counter() - started
    result["seconds"] = timings
    return result


def _profile_facts(profile) -> dict:
    """The profile's figures the sanity checks use (the whole profile is in the codec)."""
    return {"pieces": profile.pieces, "max_notes_per_onset": crowding_limit(profile),
            "mean_notes_per_onset": profile.mean_notes_per_onset, "max_gap_beats": profile.max_gap_beats,
            "programs": profile.program_list, "max_programs_per_piece": profile.max_programs_per_piece,
            "pitch_ranges": profile.pitch_ranges, "time_signatures": profile.time_signatures,
            "role_rest_beats": getattr(profile, "role_rest_beats", {}),
            "role_notes_per_beat": getattr(profile, "role_notes_per_beat", {})}


# ----------------------------------------------------------------------------- the command


def _untrained(model_path: str, codec, precision: str, context_length: int, sampling):
    """The base LM with the codec's new rows, untrained, sampled the way the trained one was."""
    from midillm.decoding.generate import MidiLM
    from midillm.model.runtime import add_music_tokens, load_base_model

    bundle = Bundle(model_path)
    if not bundle.has_adapter:
        return None
    model = load_base_model(bundle.base_model(codec), layers=bundle.base_layers)
    add_music_tokens(model, codec)
    return MidiLM(model, codec, dtype=precision, context_length=context_length, sampling=sampling)


def _settings(lm, config: EvalConfig):
    """What the samples are drawn with: the flags given, else the bundle's own settings, as
    `generate` would sample it."""
    return lm.sampling.updated(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                               top_p=config.top_p, min_p=config.min_p)


def _sample(lm, config: EvalConfig, log, constrain: bool = True,
            count: int | None = None) -> tuple[list[Score], dict, list[dict]]:
    """N samples (with the corpus constraints, or the model alone), their validity, and the
    sampler's record of each (ended, new tokens, masked mass)."""
    ids, records = [], []
    count = count or config.num_samples
    # Each sample its own training caption, drawn by the sample's seed: a set drawn under one
    # caption judges that caption (a band tune's instruments), not the model.
    texts = [lm.default_text(None, None if config.seed is None else config.seed + index) for index in range(count)]
    # In batches of at most SAMPLING_BATCH: the cache of a batch of 32 alone held ~0.9 GB and
    # took the demo's peak over 4 GiB; each batch gets its own seed, so the draws stay reproducible.
    for first in range(0, count, SAMPLING_BATCH):
        batch = texts[first:first + SAMPLING_BATCH]
        ids += lm.generate_ids(len(batch), settings=_settings(lm, config),
                               seed=None if config.seed is None else config.seed + first // SAMPLING_BATCH,
                               progress=True, constrain=constrain, texts=batch if any(batch) else None)
        records += lm.last_generation
        release_free_heap()
    checked = [sample_validity(lm.codec, row, whole_bars=True) for row in ids]  # new pieces, as `generate` writes them
    scores = [check["score"] if check["score"] is not None else Score(lm.codec.music_tokenizer.time_division)
              for check in checked]
    summary = validity_summary(checked)
    summary["failures"] = [check["error"] for check in checked if check["error"]]
    return scores, summary, records


def evaluate(config: EvalConfig, log=print) -> dict:
    """Run the whole evaluation; writes OUT/metrics.json, OUT/report.md, OUT/report.html."""
    from .report import write_report

    out = Path(config.out)
    data = Path(config.data)
    prepared = PreparedData(data)
    pieces = data_pieces(data)
    reference, reference_names = load_scores(pieces["test"] + pieces["validation"], log)
    training, training_names = load_scores(pieces["train"], log)
    metrics: dict = {"model": config.model, "data": str(data), "settings": asdict(config),
                     "likelihood": {}, "validity": {}}
    sets: dict[str, list[Score]] = {}
    names: dict[str, list[str]] = {}
    generations: dict[str, list[dict]] = {}

    lm = None
    codec = None
    if config.model is not None:
        from midillm.decoding.generate import MidiLM

        from .likelihood import held_out_likelihood

        lm = MidiLM.from_pretrained(config.model, dtype=config.precision)
        codec = lm.codec
        metrics["precision"] = lm.precision  # what "auto" became on this machine
        metrics["sampling"] = asdict(_settings(lm, config))
        log("Scoring the held-out split")
        metrics["likelihood"]["generated"] = held_out_likelihood(lm, data, max_rows=config.likelihood_rows,
                                                                 progress=True)
    if codec is None:
        try:
            codec = prepared.load_codec()
        except (OSError, ValueError) as error:  # judged against the held-out pieces instead
            log(f"cannot read {prepared.codec_dir}: {error}")
    profile, profile_source = corpus_profile(codec, reference)
    if profile_source == "held-out":
        log("The codec has no corpus profile (written before profiles existed): "
            "judging sanity against the held-out pieces instead")
    if config.samples is not None:
        folder = Path(config.samples)
        if not folder.is_dir():
            raise EvalError(f"--samples {folder} is not a folder")
        paths = sorted(path for path in folder.rglob("*") if path.suffix.lower() in (".mid", ".midi"))
        if not paths:
            raise EvalError(f"--samples {folder} holds no .mid files")
        loaded = []
        for path in paths:
            try:
                loaded.append((Score(str(path)), path.name))
            except Exception:  # noqa: BLE001 - counted as an invalid sample
                loaded.append((None, path.name))
        metrics["validity"]["generated"] = validity_summary([score_validity(score) for score, _ in loaded])
        sets["generated"] = [score for score, _ in loaded if score is not None]
        names["generated"] = [name for score, name in loaded if score is not None]
    else:
        log(f"Sampling {config.num_samples} pieces with the corpus constraints")
        sets["generated"], metrics["validity"]["generated"], generations["generated"] = _sample(lm, config, log)
        names["generated"] = [f"sample-{i:03d}" for i in range(len(sets["generated"]))]
        log(f"Sampling {config.num_samples} pieces with the model alone (syntax grammar and the asked instruments)")
        sets["model_alone"], metrics["validity"]["model_alone"], generations["model_alone"] = _sample(
            lm, config, log, constrain=False)
        names["model_alone"] = [f"model-alone-{i:03d}" for i in range(len(sets["model_alone"]))]

    reference, reference_names, cut = reference_excerpts(reference, reference_names, sets["generated"])
    if cut is not None:
        log(f"Held-out pieces judged as {cut['excerpts']} excerpts of {cut['bars']} bars (the samples' median "
            f"length) from {cut['pieces']} pieces")

    if config.baselines:
        if lm is not None:
            how_trained_samples = dict(codec=lm.codec, precision=lm.precision, context_length=lm.context_length,
                                    sampling=lm.sampling)
            # The trained model is done with: freed before the untrained one loads, so the two
            # never sit in memory together.
            lm = None
            gc.collect()
            release_free_heap()
            untrained = _untrained(config.model, **how_trained_samples) if Path(config.model).is_dir() else None
            if untrained is not None:
                log("Baseline: the untrained model")
                metrics["likelihood"]["untrained"] = held_out_likelihood(
                    untrained, data, max_rows=config.likelihood_rows, progress=True)
                sets["untrained"], metrics["validity"]["untrained"], generations["untrained"] = _sample(
                    untrained, config, log, count=config.baseline_samples)
                names["untrained"] = [f"untrained-{i:03d}" for i in range(len(sets["untrained"]))]
                del untrained
        rng = random.Random(config.seed)
        sets["shuffled"] = [shuffle_bars(score, rng) for score in reference]
        names["shuffled"] = [f"shuffled-{name}" for name in reference_names]

    log("Sanity, listener measures, features, comparison and memorisation")
    metrics.update(evaluate_sets(sets, reference, training, training_names, seed=config.seed, profile=profile,
                                 generations=generations, require_ending=config.require_ending,
                                 profile_source=profile_source))
    metrics["reference"]["names"] = reference_names
    metrics["reference"]["excerpts"] = cut
    for name, set_names in names.items():
        metrics["sets"][name]["names"] = set_names
    metrics["summary"] = _summary(metrics)

    out.mkdir(parents=True, exist_ok=True)
    written = write_report(metrics, sets, reference, out, report_samples=config.report_samples)
    metrics["report"] = {key: str(path) for key, path in written.items()}
    (out / "metrics.json").write_text(json.dumps(_clean(metrics), indent=2) + "\n")
    card_metrics = Path(config.model) / EVAL_METRICS if config.model is not None else None
    # The model card reads the bundle's copy; --out may already be the bundle's eval/ folder.
    if card_metrics is not None and Path(config.model).is_dir() and card_metrics.resolve() != (out / "metrics.json").resolve():
        card_metrics.parent.mkdir(exist_ok=True)
        shutil.copyfile(out / "metrics.json", card_metrics)
    return metrics


def _summary(metrics: dict) -> dict:
    """The headline numbers, the sane share first (what a model card shows): flat numbers, then
    two tallies of the constrained samples: how many fail each sanity check, and how many have
    each feature undefined (NaN: left out of that feature's comparison)."""
    sets = metrics["sets"]
    generated = sets["generated"]
    sanity = generated["sanity"]
    summary = {"sane_share": sanity["sane_share"]}
    if "model_alone" in sets:
        summary["sane_share_model_alone"] = sets["model_alone"]["sanity"]["sane_share"]
    summary["ended_share"] = sanity["ended_share"]
    if "model_alone" in sets:
        summary["ended_share_model_alone"] = sets["model_alone"]["sanity"]["ended_share"]
    for name, likelihood in metrics["likelihood"].items():
        prefix = "" if name == "generated" else f"{name}_"
        summary[prefix + "bits_per_note"] = likelihood["bits_per_note"]
    summary["valid_share"] = metrics["validity"].get("generated", {}).get("valid_share", math.nan)
    summary["mean_notes_per_onset"] = sanity["mean_notes_per_onset"]
    if "model_alone" in sets:
        summary["mean_notes_per_onset_model_alone"] = sets["model_alone"]["sanity"]["mean_notes_per_onset"]
    summary["corpus_mean_notes_per_onset"] = metrics["reference"]["sanity"]["mean_notes_per_onset"]
    summary["corpus_sane_share"] = metrics["reference"]["sanity"]["sane_share"]
    for name, likelihood in metrics["likelihood"].items():
        prefix = "" if name == "generated" else f"{name}_"
        for key in ("loss", "perplexity"):
            summary[prefix + key] = likelihood[key]
    for name, entry in sets.items():
        prefix = "" if name == "generated" else f"{name}_"
        if name not in ("generated", "model_alone"):
            summary[prefix + "sane_share"] = entry["sanity"]["sane_share"]
        summary[prefix + "mean_oa"] = entry["mean_oa"]
        summary[prefix + "mean_kl"] = entry["mean_kl"]
        summary[prefix + "share_copying_over_4_bars"] = entry["memorization"].get("share_copying", math.nan)
        validity = metrics["validity"].get(name)
        if validity and name != "generated":
            summary[prefix + "valid_share"] = validity["valid_share"]
    summary["ceiling_mean_oa"] = metrics["reference"]["ceiling_mean_oa"]
    summary["ceiling_mean_kl"] = metrics["reference"]["ceiling_mean_kl"]
    for name, entry in list(sets.items()) + [("corpus", metrics["reference"])]:
        prefix = "" if name == "generated" else f"{name}_"
        for key in (*LISTENER_MEASURES, "classifier_accuracy"):
            summary[prefix + key] = entry[key]
    # The band checks (issue 26): instruments as asked, drums where asked, parts silent too long.
    for name in ("generated", "model_alone"):
        if name in sets:
            prefix = "" if name == "generated" else "model_alone_"
            band = sets[name]["sanity"]
            for key in ("instruments_as_asked_share", "drums_when_asked_share", "silent_parts"):
                summary[prefix + key] = band.get(key)
    summary["insane_reasons"] = dict(sanity["reasons"])
    if "model_alone" in sets:
        summary["insane_reasons_model_alone"] = dict(sets["model_alone"]["sanity"]["reasons"])
    summary["nan_features"] = dict(generated["nan_features"])
    return summary


def _clean(value):
    """JSON without NaN (null instead), so any JSON reader can load metrics.json."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    return value
