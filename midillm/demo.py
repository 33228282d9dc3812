"""`midillm demo`: the whole path on the offline default, on a laptop CPU.

    prepare the Bach chorales -> fine-tune SmolLM2 (within `train_minutes` of wall clock)
    -> generate samples -> evaluate (report.html) -> make the bundle Hub-ready (model card with
    the eval numbers)

Thin orchestration over the parts' public functions; only `midillm.cli` imports it (and
`midillm.studio`, for where the demo's bundle lies). The training settings are `configs/bach-demo.yaml`.
"""

from __future__ import annotations

import time
from pathlib import Path

from midillm.bundle_files import MODEL_CARD, PIANO_ROLL, SAMPLE_MIDI
from midillm.tokenization import DEFAULT_BASE_MODEL

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "bach-demo.yaml"
FORMATS = ["mid", "musicxml", "wav", "png"]
STEPS = 5
DEFAULT_DEMO_OUT = "runs/demo"


def demo_bundle_path(out: str | Path = DEFAULT_DEMO_OUT, base_model: str = DEFAULT_BASE_MODEL) -> Path:
    """Where `run_demo` writes its bundle (the studio opens on it when given no model)."""
    return Path(out) / ("bach-smollm2" if base_model == DEFAULT_BASE_MODEL else "model")


def _between_phases() -> None:
    """Hand the finished phase's memory back before the next one starts: its model and tensors
    are garbage now, and glibc keeps freed heap pages unless asked (the demo's peak is a phase's
    own, not the sum of what came before)."""
    import gc

    from midillm.model.runtime import release_free_heap

    gc.collect()
    release_free_heap()


def _header(number: int, text: str, log) -> None:
    log(f"\n[{number}/{STEPS}] {text} ...")


def _format(value, digits: int = 3, percent: bool = False) -> str:
    if not isinstance(value, (int, float)) or value != value:  # None or NaN
        return "n/a"
    return f"{100 * value:.0f}%" if percent else f"{value:.{digits}f}"


def run_demo(out: str | Path = DEFAULT_DEMO_OUT, base_model: str = DEFAULT_BASE_MODEL, source: str = "music21:bach",
             limit: int | None = None, train_minutes: float | None = 8.0, num_samples: int = 4,
             eval_samples: int = 32, max_new_tokens: int = 400, eval_max_new_tokens: int = 512, config: str | Path = DEMO_CONFIG,
             train_overrides: dict | None = None, prepare_options: dict | None = None, log=print) -> dict:
    """Prepare, fine-tune, generate, evaluate and write the card; returns where everything is.

    `train_overrides` replace keys of `config` (e.g. {"max_steps": 2}); `prepare_options` are
    extra `PrepareConfig` fields (e.g. {"vocab_size": 600}). Re-running reuses the prepared data.
    """
    from midillm.decoding.export import export_score, write_midi, write_png
    from midillm.decoding.generate import MidiLM
    from midillm.decoding.request import MusicRequest
    from midillm.eval import EvalConfig, evaluate
    from midillm.eval.sanity import sample_sanity
    from midillm.finetune.config import load_config
    from midillm.finetune.train import train
    from midillm.hub import prepare_bundle_for_hub
    from midillm.tokenization.caption import key_name
    from midillm.tokenization.dataset import PrepareConfig, prepare
    from midillm.tokenization.prepared import PreparedData

    if num_samples < 1 or eval_samples < 1:
        raise ValueError("num_samples and eval_samples must be at least 1")
    if train_minutes is not None and not train_minutes > 0:
        raise ValueError(f"--train-minutes must be positive, not {train_minutes}")
    out = Path(out)
    data, samples_dir, eval_dir = out / "data", out / "samples", out / "eval"
    bundle = demo_bundle_path(out, base_model)
    # The config is read first (and checked) so prepare builds rows of the length training uses.
    overrides = {"data_dir": data, "output_dir": bundle, "base_model": base_model, **(train_overrides or {})}
    if train_minutes is not None:
        overrides.setdefault("max_minutes", train_minutes)
    train_config = load_config(config, [f"{key}={value}" for key, value in overrides.items()])
    prepare_config = PrepareConfig(source=source, out=str(data), base_model=base_model, limit=limit,
                                   seq_len=train_config.seq_len or 1024, **(prepare_options or {}))
    timings: dict[str, float] = {}
    started = time.time()

    _header(1, f"Preparing {'the Bach chorales' if source == 'music21:bach' else source} into {data}", log)
    begun = time.time()
    report = prepare(prepare_config, log=log)
    log(f"{report['files_used']} pieces, {report['notes']:,} notes, {report['tokens_per_note']:.3f} LM tokens per note")
    timings["prepare"] = time.time() - begun

    budget = (f"{train_config.max_minutes:g} min or {train_config.max_steps} steps, whichever ends first"
              if train_config.max_minutes else f"{train_config.max_steps} steps")
    _header(2, f"Fine-tuning {base_model} with LoRA ({budget})", log)
    begun = time.time()
    train(train_config, log=None if log is print else log)  # None: tqdm.write, clean beside the bar
    timings["train"] = time.time() - begun
    _between_phases()

    _header(3, f"Generating {num_samples} samples into {samples_dir}", log)
    begun = time.time()
    lm = MidiLM.from_pretrained(bundle)
    settings = lm.sampling.updated(max_new_tokens=max_new_tokens)  # the bundle's own sampling, as `generate`
    # The prompt is a caption one training piece had, drawn by the seed (as every training row
    # starts with a caption), and the corpus constraints are on: what a user gets by default.
    caption = lm.default_text(None, seed=0)
    log(f"Caption: {' / '.join(caption.splitlines()) if caption else '(none)'}"
        + (f" (the model writes in {' or '.join(lm.codec.common_keys.values())}; each sample is moved to a key"
           " drawn from the corpus's)" if lm.codec.common_key else ""))
    # Through `run`, as `generate` does: a model trained in the common key writes each sample in a
    # key drawn as often as the corpus's pieces were in it.
    samples = lm.run(MusicRequest(num_samples=num_samples, seed=0, progress=True,
                                  sampling={"max_new_tokens": settings.max_new_tokens}))
    written, showcase_sane = [], 0
    for index, sample in enumerate(samples):
        score = sample.score
        stem = samples_dir / f"sample-{index:03d}"
        export_score(score, stem, FORMATS)
        written.append((stem, score.note_num()))
        # Judged as the model wrote it: the corpus profile was measured on the pieces as trained.
        check = sample_sanity(lm.codec.decode(sample.ids, whole_bars=True), lm.codec.corpus,
                              lm.last_generation[index]) if lm.codec.corpus else None
        showcase_sane += bool(check and check["sane"])
        verdict = ("sane" if check["sane"] else "NOT sane: " + ", ".join(check["reasons"])) if check else "unchecked"
        key = score.key_signatures[0] if len(score.key_signatures) else None
        log(f"{stem}: {score.note_num()} notes, {check['bars'] if check else '?'} bars"
            + (f", {key_name(key.key, bool(key.tonality))}" if key is not None else "")
            + f", {'ended' if sample.ended else 'cut by the token budget'}, {verdict} -> "
            + ", ".join(f"{stem.name}.{fmt}" for fmt in FORMATS))
    # The report's list of pieces lives only in prepare.json (prepare returns the totals).
    harmonised = _harmonise_a_held_out_melody(lm, PreparedData(data).read_report(), samples_dir, log)
    # The card shows the first sample with notes (what the user just heard), not a new one.
    shown = next((index for index, (_, notes) in enumerate(written) if notes), 0)
    card_score = samples[shown].score
    write_midi(card_score, bundle / SAMPLE_MIDI)
    write_png(card_score, bundle / PIANO_ROLL)
    del lm
    _between_phases()
    timings["generate"] = time.time() - begun

    _header(4, f"Evaluating on the held-out chorales ({eval_samples} samples, with baselines) into {eval_dir}", log)
    begun = time.time()
    metrics = evaluate(EvalConfig(model=str(bundle), data=str(data), out=str(eval_dir), num_samples=eval_samples,
                                  max_new_tokens=eval_max_new_tokens), log=log)
    timings["eval"] = time.time() - begun

    _header(5, f"Writing the model card ({bundle / 'README.md'})", log)
    begun = time.time()
    # After the evaluation, so the card carries eval/metrics.json; its sample is the one above.
    card = prepare_bundle_for_hub(bundle, render=False) / MODEL_CARD
    timings["card"] = time.time() - begun
    timings["total"] = time.time() - started

    summary = metrics["summary"]
    result = {"source": source, "showcase_sane": showcase_sane, "showcase_samples": num_samples,
              "harmonised": harmonised, "bundle": bundle, "data": data, "samples": samples_dir, "eval": eval_dir,
              "report": eval_dir / "report.html", "metrics": eval_dir / "metrics.json", "card": card,
              "summary": summary, "timings": timings}
    _print_summary(result, log)
    return result


def _harmonise_a_held_out_melody(lm, report: dict, samples_dir: Path, log) -> dict | None:
    """The first held-out piece's top part (a chorale's soprano) harmonised by the model, next
    to the composer's own setting: samples/harmonised-000.* and samples/reference-000.*."""
    from symusic import Score

    from midillm.decoding.export import export_score
    from midillm.eval.sanity import sample_sanity

    if "accompany" not in lm.tasks:
        return None
    for piece in report["pieces"]:
        if piece["split"] != "test":
            continue
        score = Score(piece["path"])
        played = [track for track in score.tracks if track.note_num()]
        if len(played) < 2 or not played[0].name:
            continue
        reference = lm.codec.decode(lm.codec.encode(score))
        # The melody by its name in the reference (a track whose name says nothing is named by its role).
        melody = next(track.name for track in reference.tracks if track.note_num())
        result = lm.accompany(reference, [melody], seed=0, max_new_tokens=1024)[0]
        check = sample_sanity(result, lm.codec.corpus, lm.last_generation[0])
        export_score(result, samples_dir / "harmonised-000", FORMATS)
        export_score(reference, samples_dir / "reference-000", FORMATS)
        log(f"{samples_dir / 'harmonised-000'}: the {melody} of held-out {piece['name']} harmonised "
            f"({', '.join(track.name for track in result.tracks)}), "
            f"{'sane' if check['sane'] else 'NOT sane: ' + ', '.join(check['reasons'])}; "
            f"the composer's own setting: {samples_dir / 'reference-000'}")
        return {"piece": piece["name"], "melody": melody, "sane": check["sane"]}
    return None


def _print_summary(result: dict, log) -> None:
    from midillm.eval.listener import listener_lines

    summary, timings = result["summary"], result["timings"]
    bundle, data = result["bundle"], result["data"]
    log("\nDone in " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items() if name != "total")
        + f" (total {timings['total'] / 60:.1f} min)")
    log(f"  model bundle:  {bundle}  (card: {result['card']})")
    log(f"  samples:       {result['samples']}/sample-*.mid, .musicxml, .wav, .png")
    log(f"  eval report:   {result['report']}  (numbers: {result['metrics']})")
    log(f"Showcase: {result['showcase_sane']} of {result['showcase_samples']} samples sane")
    if result.get("harmonised"):
        harmonised = result["harmonised"]
        log(f"Harmonised the {harmonised['melody']} of held-out {harmonised['piece']}: "
            f"{'sane' if harmonised['sane'] else 'not sane'} (samples/harmonised-000.*, beside reference-000.*)")
    log("Metrics (held-out chorales):")
    # What separates the model from its corpus leads; the sane share is the floor below it.
    corpus = "Bach (held-out)" if result.get("source", "music21:bach") == "music21:bach" else "held-out pieces"
    for line in listener_lines(summary, corpus):
        log(line)
    log(f"  sane samples (the floor): {_format(summary.get('sane_share'), percent=True)} with the corpus constraints, "
        f"{_format(summary.get('sane_share_model_alone'), percent=True)} with the model alone "
        f"(untrained: {_format(summary.get('untrained_sane_share'), percent=True)}, "
        f"held-out pieces: {_format(summary.get('corpus_sane_share'), percent=True)})")
    log(f"  bits per note:            {_format(summary.get('bits_per_note'))} "
        f"(untrained: {_format(summary.get('untrained_bits_per_note'))})")
    log(f"  ended by themselves:      {_format(summary.get('ended_share'), percent=True)} "
        f"(model alone {_format(summary.get('ended_share_model_alone'), percent=True)})")
    log(f"  notes per onset:          {_format(summary.get('mean_notes_per_onset'), 2)} "
        f"(model alone {_format(summary.get('mean_notes_per_onset_model_alone'), 2)}, "
        f"held-out pieces {_format(summary.get('corpus_mean_notes_per_onset'), 2)})")
    log(f"  parts as asked:           {_format(summary.get('instruments_as_asked_share'), percent=True)} of samples "
        f"play the caption's instruments part by part (model alone "
        f"{_format(summary.get('model_alone_instruments_as_asked_share'), percent=True)}); "
        f"{_format(summary.get('silent_parts'), 0)} parts silent longer than their role's longest rest in the corpus")
    reasons = summary.get("insane_reasons") or {}
    if reasons:
        log("  why not sane (constrained): " + ", ".join(f"{reason} {count}" for reason, count in reasons.items()))
    log(f"  valid samples:            {_format(summary.get('valid_share'), percent=True)} (decode and have a note)")
    log(f"  mean overlapped area:     {_format(summary.get('mean_oa'))} "
        f"(ceiling {_format(summary.get('ceiling_mean_oa'))}, untrained {_format(summary.get('untrained_mean_oa'))}, "
        f"shuffled bars {_format(summary.get('shuffled_mean_oa'))})")
    log(f"  samples copying > 4 bars: {_format(summary.get('share_copying_over_4_bars'), percent=True)}")
    log("Next:")
    log(f"  midillm generate {bundle} --out samples -n 8 --text \"Composer: J.S. Bach\" --formats mid,wav,png")
    log(f"  midillm eval {bundle} --data {data} --out eval -n 32")
    log(f"  midillm push {bundle} --repo YOUR-NAME/bach-smollm2")
    log(f"  python -c \"import midillm; from transformers import pipeline; "
        f"print(pipeline('midi-generation', model='{bundle}')('Composer: J.S. Bach', max_new_tokens=256))\"")
