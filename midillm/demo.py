"""`midillm demo`: the whole path on the offline default, on a laptop CPU, in about 15 minutes.

    prepare the Bach chorales -> fine-tune SmolLM2 (a wall-clock budget) -> generate samples
    -> evaluate (report.html) -> make the bundle Hub-ready (model card with the eval numbers)

Thin orchestration over the parts' public functions; only `midillm.cli` imports it. The training
settings are `configs/bach-demo.yaml`.
"""

from __future__ import annotations

import time
from pathlib import Path

from midillm.tokenization import DEFAULT_BASE_MODEL

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "bach-demo.yaml"
# No music BPE in the demo: on 379 chorales and a 10-minute CPU budget, plain REMI tokens learn
# far more per note seen (4.8 held-out bits/note against 6.2 with BPE 1024 and 7.8 with 4096,
# docs/benchmarks.md); BPE's fewer tokens per note pay off on bigger corpora and longer runs.
DEMO_MUSIC_VOCABULARY = 0
FORMATS = ["mid", "musicxml", "wav", "png"]
STEPS = 5


def _header(number: int, text: str, log) -> None:
    log(f"\n[{number}/{STEPS}] {text} ...")


def _format(value, digits: int = 3, percent: bool = False) -> str:
    if not isinstance(value, (int, float)) or value != value:  # None or NaN
        return "n/a"
    return f"{100 * value:.0f}%" if percent else f"{value:.{digits}f}"


def run_demo(out: str | Path = "runs/demo", base_model: str = DEFAULT_BASE_MODEL, source: str = "music21:bach",
             limit: int | None = None, train_minutes: float | None = 9.0, num_samples: int = 4,
             eval_samples: int = 16, max_new_tokens: int = 768, config: str | Path = DEMO_CONFIG,
             train_overrides: dict | None = None, prepare_options: dict | None = None, log=print) -> dict:
    """Prepare, fine-tune, generate, evaluate and write the card; returns where everything is.

    `train_overrides` replace keys of `config` (e.g. {"max_steps": 2}); `prepare_options` are
    extra `PrepareConfig` fields (e.g. {"vocab_size": 600}). Re-running reuses the prepared data.
    """
    from midillm.decoding.export import export_score, write_midi, write_png
    from midillm.decoding.generate import MidiLM, SamplingSettings
    from midillm.eval import EvalConfig, evaluate
    from midillm.finetune.config import load_config
    from midillm.finetune.train import train
    from midillm.hub import prepare_bundle_for_hub, write_model_card
    from midillm.tokenization.dataset import PrepareConfig, prepare

    if num_samples < 1 or eval_samples < 1:
        raise ValueError("num_samples and eval_samples must be at least 1")
    if train_minutes is not None and not train_minutes > 0:
        raise ValueError(f"--train-minutes must be positive, not {train_minutes}")
    out = Path(out)
    data, bundle, samples_dir, eval_dir = out / "data", out / "bach-smollm2", out / "samples", out / "eval"
    if base_model != DEFAULT_BASE_MODEL:
        bundle = out / "model"
    # The config is read first (and checked) so prepare builds rows of the length training uses.
    overrides = {"data_dir": data, "output_dir": bundle, "base_model": base_model, **(train_overrides or {})}
    if train_minutes is not None:
        overrides.setdefault("max_minutes", train_minutes)
    train_config = load_config(config, [f"{key}={value}" for key, value in overrides.items()])
    # A 1024-token music vocabulary, not prepare's 4096: in an 11-minute budget the smaller one
    # learns faster (held-out 6.38 vs 7.84 bits per note, scale consistency 0.92 vs 0.83 against
    # the chorales' 0.94; measured 2026-11-24), at 1.35 instead of 0.76 LM tokens per note.
    prepare_settings = {"vocab_size": DEMO_MUSIC_VOCABULARY, **(prepare_options or {})}
    prepare_config = PrepareConfig(source=source, out=str(data), base_model=base_model, limit=limit,
                                   seq_len=train_config.seq_len or 1024, **prepare_settings)
    timings: dict[str, float] = {}
    started = time.time()

    _header(1, f"Preparing {'the Bach chorales' if source == 'music21:bach' else source} into {data}", log)
    begun = time.time()
    report = prepare(prepare_config, log=log)
    log(f"{report['files_used']} pieces, {report['notes']:,} notes, {report['tokens_per_note']:.3f} LM tokens per note")
    timings["prepare"] = time.time() - begun

    budget = f", at most {train_config.max_minutes:g} min" if train_config.max_minutes else ""
    _header(2, f"Fine-tuning {base_model} with LoRA ({train_config.max_steps} steps{budget})", log)
    begun = time.time()
    train(train_config, log=None if log is print else log)  # None: tqdm.write, clean beside the bar
    timings["train"] = time.time() - begun

    _header(3, f"Generating {num_samples} samples into {samples_dir}", log)
    begun = time.time()
    lm = MidiLM.from_pretrained(bundle)
    settings = SamplingSettings(max_new_tokens=max_new_tokens, top_p=0.95)
    ids = lm.generate_ids(num_samples, settings=settings, seed=0, progress=True)
    written = []
    for index, row in enumerate(ids):
        score = lm.codec.decode(row)
        stem = samples_dir / f"sample-{index:03d}"
        export_score(score, stem, FORMATS)
        written.append((stem, score.note_num()))
        log(f"{stem}: {score.note_num()} notes -> " + ", ".join(f"{stem.name}.{fmt}" for fmt in FORMATS))
    # The card shows the first sample with notes (what the user just heard), not a new one.
    shown = next((index for index, (_, notes) in enumerate(written) if notes), 0)
    card_score = lm.codec.decode(ids[shown])
    write_midi(card_score, bundle / "samples" / "sample.mid")
    write_png(card_score, bundle / "samples" / "piano-roll.png")
    del lm
    timings["generate"] = time.time() - begun

    _header(4, f"Evaluating on the held-out chorales ({eval_samples} samples, with baselines) into {eval_dir}", log)
    begun = time.time()
    metrics = evaluate(EvalConfig(model=str(bundle), data=str(data), out=str(eval_dir), num_samples=eval_samples,
                                  max_new_tokens=max_new_tokens), log=log)
    timings["eval"] = time.time() - begun

    _header(5, f"Writing the model card ({bundle / 'README.md'})", log)
    begun = time.time()
    prepare_bundle_for_hub(bundle, render=False)  # remote code + card; the sample is the one above
    card = write_model_card(bundle)  # again, explicitly: the card must carry eval/metrics.json
    timings["card"] = time.time() - begun
    timings["total"] = time.time() - started

    summary = metrics["summary"]
    result = {"bundle": bundle, "data": data, "samples": samples_dir, "eval": eval_dir,
              "report": eval_dir / "report.html", "metrics": eval_dir / "metrics.json", "card": card,
              "summary": summary, "timings": timings}
    _print_summary(result, log)
    return result


def _print_summary(result: dict, log) -> None:
    summary, timings = result["summary"], result["timings"]
    bundle, data = result["bundle"], result["data"]
    log("\nDone in " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items() if name != "total")
        + f" (total {timings['total'] / 60:.1f} min)")
    log(f"  model bundle:  {bundle}  (card: {result['card']})")
    log(f"  samples:       {result['samples']}/sample-*.mid, .musicxml, .wav, .png")
    log(f"  eval report:   {result['report']}  (numbers: {result['metrics']})")
    log("Metrics (held-out chorales):")
    log(f"  valid samples:            {_format(summary.get('valid_share'), percent=True)}")
    log(f"  bits per note:            {_format(summary.get('bits_per_note'))} "
        f"(untrained: {_format(summary.get('untrained_bits_per_note'))})")
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
