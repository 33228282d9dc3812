"""The training loop: flat, accelerate-driven, readable top to bottom.

    accelerate launch -m midillm.finetune.train --config configs/bach-cpu.yaml [key=value ...]
    midillm train --config configs/bach-cpu.yaml [key=value ...]          # the same, one process
    accelerate launch --multi_gpu --num_processes 2 -m midillm.finetune.train --config ...
                                                   # 2 gloo processes on a machine without GPU

`train(config)` fine-tunes and writes the model into `config.output_dir`: the adapter, the codec,
`training_summary.json`, and `config.json` + `midi_generation.py`, so the folder loads with
`pipeline("midi-generation", model=DIR, trust_remote_code=True)` however it was trained.
`main(argv)` is the command line.

The model card and `generation_config.json` (from the sampling defaults) come from
`midillm.hub.complete_bundle`, which `midillm train` runs last: the hub sits above this part, so
this part only names the step (`main(finish=...)`) and never imports it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from midillm.bundle_files import CHECKPOINTS, MODEL_CARD, SUMMARY_FILE, write_remote_code
from midillm.model.data import Collate, check_labels, label_tokens, load_prepared
from midillm.model.runtime import release_free_heap
from midillm.version import __version__

from .config import ConfigError, TrainConfig, load_config

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from midillm.tokenization import MusicCodec

TRAINER_STATE = "trainer_state.json"
# glibc keeps the memory a CPU step frees in a fragmented heap: without a trim the training
# process grew ~70 MB a step (4.8 GiB after 25 demo steps), with one every step it stayed near
# 3 GiB (3.2 at its peak); a trim costs 50-100 ms, so it runs every few steps (2026-12-04).
TRIM_EVERY = 4
# Train rows whose labels are checked against the codec before training (all of them in a
# smaller split); the validation split is checked whole, as its label count is needed.
TRAIN_ROWS_CHECKED = 4096




class TrainingBudget:
    """How far a run is through its budget, and the learning rate that follows from it.

    The budget is `max_steps` optimizer steps or `max_minutes` of wall clock (resumed runs
    included), whichever runs out first. The schedule decays over the same budget: its progress
    is the larger of the two fractions, so a run stopped by the clock ends its cosine at the
    bottom instead of being cut off at a high rate, and a fast machine spends all its minutes.
    """

    def __init__(self, config: TrainConfig):
        self.max_steps = config.max_steps
        self.seconds = config.max_minutes * 60 if config.max_minutes is not None else None
        self.warmup_steps = config.warmup_steps
        self.kind = config.lr_scheduler
        self.step, self.elapsed = 0, 0.0

    def advance(self, step: int, elapsed_seconds: float) -> None:
        self.step, self.elapsed = step, elapsed_seconds

    @property
    def progress(self) -> float:
        """0 at the start, 1 when the steps or the minutes are spent."""
        fractions = [self.step / self.max_steps]
        if self.seconds is not None:
            fractions.append(self.elapsed / self.seconds)
        return min(max(fractions), 1.0)

    def out_of_time(self) -> bool:
        return self.seconds is not None and self.elapsed > self.seconds

    def learning_rate_factor(self) -> float:
        """The multiplier of the peak rate for the next optimizer step."""
        warmup = min(1.0, (self.step + 1) / (self.warmup_steps + 1))
        if self.kind == "cosine":
            return warmup * 0.5 * (1.0 + math.cos(math.pi * self.progress))
        if self.kind == "linear":
            return warmup * (1.0 - self.progress)
        return warmup


def hardware_description(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"device": "cuda", "gpu": torch.cuda.get_device_name(device),
                "gpus": torch.cuda.device_count()}
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"device": device.type, "cpu": model, "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def versions() -> dict:
    from importlib.metadata import version

    found = {"midillm": __version__, "python": platform.python_version()}
    for package in ("torch", "transformers", "peft", "accelerate", "datasets", "miditok"):
        try:
            found[package] = version(package)
        except Exception:  # noqa: BLE001 - a missing version is not worth failing a run for
            pass
    return found


def latest_checkpoint(output_dir: Path) -> Path | None:
    folders = sorted((output_dir / CHECKPOINTS).glob("step-*"), key=lambda path: path.name)
    return next((path for path in reversed(folders) if (path / TRAINER_STATE).is_file()), None)


def resolve_resume(config: TrainConfig) -> Path | None:
    if not config.resume:
        return None
    if config.resume == "latest":
        found = latest_checkpoint(Path(config.output_dir))
        if found is None:
            raise ConfigError(f"resume=latest, but {Path(config.output_dir) / CHECKPOINTS} holds no checkpoint")
        return found
    path = Path(config.resume)
    if not (path / TRAINER_STATE).is_file():
        raise ConfigError(f"resume={path} is not a checkpoint folder (no {TRAINER_STATE})")
    return path


@torch.no_grad()
def evaluate(accelerator, model, loader, max_batches: int | None) -> tuple[float, int]:
    """Summed NLL (nats) and label tokens over the validation loader, all processes together."""
    model.eval()
    total_nll, total_tokens = 0.0, 0
    for index, batch in enumerate(loader):
        if max_batches is not None and index >= max_batches:
            break
        row_nll, row_tokens = model(batch["input_ids"], batch["labels"])
        # gather_for_metrics drops the rows accelerate repeated to even out the last batch.
        row_nll, row_tokens = accelerator.gather_for_metrics((row_nll.float(), row_tokens))
        total_nll += row_nll.sum().item()
        total_tokens += int(row_tokens.sum().item())
    model.train()
    return total_nll, total_tokens


def train(config: TrainConfig, log=None) -> Path:
    """Fine-tune per `config`; returns the output folder holding the bundle."""
    from accelerate.state import AcceleratorState, GradientState

    try:
        return _train(config, log)
    finally:
        # accelerate keeps its state in process-wide singletons; clear them (the process group
        # stays) so a later call in the same process may choose another precision.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()


def compile_decoder_layers(causal_lm) -> None:
    """torch.compile layer by layer: one small graph compiled once and reused by every layer, and
    PEFT's wrappers and the loss stay eager (whole-model graphs break on them)."""
    decoder = causal_lm.get_decoder() if hasattr(causal_lm, "get_decoder") else causal_lm.base_model
    layers = getattr(decoder, "layers", None) or getattr(decoder, "h", None)
    if layers is None:
        decoder.compile()
        return
    for layer in layers:
        layer.compile()


def _distributed_cpu() -> bool:
    """Launched as several processes on a machine without a GPU: DDP over gloo on the CPU.

    accelerate only picks MULTI_CPU when told `cpu=True`; `accelerate launch --multi_gpu
    --num_processes N` on a CPU-only machine then gives N gloo processes.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("LOCAL_RANK", "-1")) >= 0
    return launched and not torch.cuda.is_available()


def _train(config: TrainConfig, log=None) -> Path:
    """Set up, train within the budget, validate, write the bundle (each step is a function below)."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from .model import trainable_parameter_groups

    accelerator, precision = _make_accelerator(config)
    say = (log or tqdm.write) if accelerator.is_main_process else (lambda *_: None)
    set_seed(config.seed)
    resume_from = resolve_resume(config)

    data = _load_data(config, accelerator.num_processes, say)
    model = _build_model(config, data, precision, accelerator, say)
    optimizer = torch.optim.AdamW(trainable_parameter_groups(model, config), betas=(0.9, 0.95))
    schedule = _Schedule(optimizer, TrainingBudget(config))
    model, optimizer, data.train_loader, data.eval_loader = accelerator.prepare(
        model, optimizer, data.train_loader, data.eval_loader)
    _checkpoint_trained_parameters_only(accelerator, model)

    progress = _Progress()
    if resume_from is not None:
        progress = _Progress.resume(accelerator, resume_from)
        schedule.advance(progress.step, progress.seconds_before)  # the rates where the run left off
        say(f"Resumed from {resume_from} at step {progress.step}")
    if config.report_to == "tensorboard":
        accelerator.init_trackers("midillm", config={
            key: (value if isinstance(value, (int, float, str, bool)) else str(value))
            for key, value in config.to_dict().items()})

    train_loss, wall = _training_loop(accelerator, model, optimizer, schedule, data, config, progress, say)

    validation = _validate(accelerator, model, data, config)
    if validation:
        _log_validation(accelerator, validation, progress.step)
        say(f"final validation loss {validation['loss']:.4f}, {validation['bits_per_note']:.3f} bits/note")
    summary = _training_summary(config, data, progress, wall, train_loss, validation, precision, accelerator)
    return _write_bundle(accelerator, model, data.codec, Path(config.output_dir), summary, say,
                         base_layers=config.base_layers)


# ----------------------------------------------------------------------------- setting up


def _make_accelerator(config: TrainConfig):
    """The accelerator for this run, and the precision "auto" became on its device."""
    from accelerate import Accelerator, PartialState
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

    from midillm.model.runtime import resolve_mixed_precision

    cpu = _distributed_cpu()
    state = PartialState(cpu=cpu)
    precision = resolve_mixed_precision(config.mixed_precision, state.device)
    output_dir = Path(config.output_dir)
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision="bf16" if precision == "bf16" else "no",
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=config.gradient_accumulation_steps, sync_with_dataloader=False),
        log_with="tensorboard" if config.report_to == "tensorboard" else None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    return accelerator, precision


@dataclass
class _Data:
    """The prepared data as the loop reads it: the codec, the loaders, and the figures that turn
    label tokens into notes."""

    codec: MusicCodec
    train_loader: DataLoader
    eval_loader: DataLoader
    seq_len: int
    music_only: bool
    validation_label_tokens: int
    validation_notes: int
    tokens_per_note: float
    global_batch: int


def _load_data(config: TrainConfig, num_processes: int, say) -> _Data:
    """The `prepare` folder checked against the config (splits, row length, labels, one batch at
    least), and its loaders."""
    from accelerate.data_loader import SeedableRandomSampler
    from torch.utils.data import DataLoader

    codec, dataset, report = load_prepared(Path(config.data_dir))
    for split in ("train", "validation"):
        if split not in dataset:
            raise ConfigError(f"{config.data_dir}/dataset has no {split} split")
    row_len = len(dataset["train"][0]["input_ids"])
    seq_len = config.seq_len or row_len
    if seq_len > row_len:
        raise ConfigError(f"seq_len={seq_len} is longer than the dataset's rows ({row_len}); "
                          f"re-run `midillm prepare` with --seq-len {seq_len}")
    if codec.base_model != config.base_model:
        say(f"note: the codec was built for base model {codec.base_model!r}; training {config.base_model!r}")
    dataset = dataset.with_format("numpy", columns=["input_ids", "labels"])
    music_only = config.music_only_head and codec.render == "tokens"
    check_ids = codec.music_lm_ids if music_only else []
    validation_label_tokens = check_labels(dataset["validation"], check_ids, "validation")
    check_labels(dataset["train"], check_ids, "train", most_rows=TRAIN_ROWS_CHECKED)
    global_batch = config.batch_size * num_processes
    if len(dataset["train"]) < global_batch:
        raise ConfigError(f"the train split has {len(dataset['train'])} rows, fewer than one batch "
                          f"({config.batch_size} x {num_processes} processes)")
    collate = Collate(seq_len)
    # The sampler's order depends only on (seed, epoch): a resumed run sees the same batches.
    train_loader = DataLoader(
        dataset["train"], batch_size=config.batch_size, drop_last=True, collate_fn=collate,
        sampler=SeedableRandomSampler(dataset["train"], data_seed=config.seed),
        num_workers=config.num_workers)
    eval_loader = DataLoader(dataset["validation"], batch_size=config.batch_size, collate_fn=collate,
                             num_workers=config.num_workers)
    return _Data(codec=codec, train_loader=train_loader, eval_loader=eval_loader, seq_len=seq_len,
                 music_only=music_only, validation_label_tokens=validation_label_tokens,
                 validation_notes=report.get("splits", {}).get("validation", {}).get("notes", 0),
                 tokens_per_note=report.get("tokens_per_note") or 1.0, global_batch=global_batch)


def _build_model(config: TrainConfig, data: _Data, precision: str, accelerator, say):
    """The `MusicLM` to train, on the accelerator's device type in the run's precision."""
    from .model import build_model

    # bf16 runs as autocast over fp32 weights on a CPU: measured faster there than bf16-stored
    # weights (scripts/bench_train.py: 389 vs 350 tokens/s on SmolLM2-135M). On a GPU the frozen
    # base is stored in bf16, which halves its memory; adapters and token rows stay fp32.
    dtype = torch.bfloat16 if precision == "bf16" and accelerator.device.type == "cuda" else torch.float32
    model = build_model(config, data.codec, dtype=dtype, log=say)
    model.music_only_head = data.music_only
    if config.compile:
        compile_decoder_layers(model.causal_lm)
    if accelerator.is_main_process:
        trainable, total = model.peft_model.get_nb_trainable_parameters()
        say(f"Training {trainable:,} of {total:,} parameters ({precision}, "
            f"{'music-only' if data.music_only else 'full'} head, {accelerator.num_processes} process(es))")
    return model


class _Schedule:
    """The learning rates: the peak rates times the budget's factor. They follow the budget, not
    a step count of their own (a budget in minutes has none)."""

    def __init__(self, optimizer, budget: TrainingBudget):
        self.optimizer, self.budget = optimizer, budget
        self.peak_rates = [group["lr"] for group in optimizer.param_groups]
        self.set_rates()

    def set_rates(self) -> None:
        factor = self.budget.learning_rate_factor()
        for group, peak in zip(self.optimizer.param_groups, self.peak_rates):
            group["lr"] = peak * factor

    def advance(self, step: int, elapsed_seconds: float) -> None:
        self.budget.advance(step, elapsed_seconds)
        self.set_rates()


def _checkpoint_trained_parameters_only(accelerator, model) -> None:
    """Checkpoints hold the trained parameters only: the frozen base is rebuilt from base_model."""
    trained = {name for name, parameter in accelerator.unwrap_model(model).named_parameters(remove_duplicate=False)
               if parameter.requires_grad}

    def keep_trained(models, weights, folder):
        for state_dict in weights:
            for key in list(state_dict):
                if key.removeprefix("module.") not in trained:
                    del state_dict[key]

    accelerator.register_save_state_pre_hook(keep_trained)


# ----------------------------------------------------------------------------- the loop


@dataclass
class _Progress:
    """How far the run is: what a checkpoint's trainer_state.json records and a resumed run reads."""

    step: int = 0
    tokens_seen: int = 0
    label_tokens_seen: int = 0
    seconds_before: float = 0.0  # the wall clock of the run before it was resumed
    started: float = 0.0  # when this process's loop started

    @classmethod
    def resume(cls, accelerator, checkpoint: Path) -> _Progress:
        accelerator.load_state(str(checkpoint), strict=False)
        saved = json.loads((checkpoint / TRAINER_STATE).read_text())
        return cls(step=saved["step"], tokens_seen=saved["tokens_seen"],
                   label_tokens_seen=saved["label_tokens_seen"], seconds_before=saved["wall_seconds"])

    def wall_seconds(self) -> float:
        return self.seconds_before + time.time() - self.started


class _LogWindow:
    """Loss and speed over the steps since the last log line."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.start, self.tokens, self.nll, self.labels = time.time(), 0, 0.0, 0

    def add(self, tokens: int, nll: float, labels: int) -> None:
        self.tokens += tokens
        self.nll += nll
        self.labels += labels

    def figures(self, learning_rate: float, tokens_per_note: float) -> dict:
        elapsed = time.time() - self.start
        return {"train/loss": self.nll / max(self.labels, 1), "train/lr": learning_rate,
                "train/tokens_per_second": self.tokens / max(elapsed, 1e-9),
                "train/notes_per_second": self.labels / tokens_per_note / max(elapsed, 1e-9)}


def _training_loop(accelerator, model, optimizer, schedule: _Schedule, data: _Data, config: TrainConfig,
                   progress: _Progress, say) -> tuple[float, float]:
    """Optimizer steps until `max_steps` or the budget's minutes are spent, logging, validating and
    saving checkpoints as the config says; returns the last step's train loss and the wall clock."""
    from tqdm.auto import tqdm

    accumulation = config.gradient_accumulation_steps
    batches = _micro_batches(accelerator, data.train_loader, progress.step * accumulation)
    bar = tqdm(total=config.max_steps, initial=progress.step, desc="Training", unit="step",
               disable=not accelerator.is_main_process, dynamic_ncols=True)
    progress.started = time.time()
    window = _LogWindow()
    train_loss = float("nan")
    model.train()
    while progress.step < config.max_steps:
        group = [next(batches) for _ in range(accumulation)]
        step_nll, step_labels, step_tokens = _optimizer_step(accelerator, model, optimizer, group, config)
        progress.step += 1
        step = progress.step
        if step % TRIM_EVERY == 0:
            release_free_heap()
        progress.tokens_seen += step_tokens
        progress.label_tokens_seen += step_labels
        train_loss = step_nll / max(step_labels, 1)
        window.add(step_tokens, step_nll, step_labels)
        bar.update(1)
        if step % config.logging_every == 0 or step == config.max_steps:
            logged = window.figures(optimizer.param_groups[0]["lr"], data.tokens_per_note)
            bar.set_postfix(loss=f"{logged['train/loss']:.3f}", tok_s=f"{logged['train/tokens_per_second']:.0f}")
            accelerator.log(logged, step=step)
            window.reset()
        if config.eval_every and step % config.eval_every == 0 and step < config.max_steps:
            validation = _validate(accelerator, model, data, config)
            if validation:
                _log_validation(accelerator, validation, step)
                say(f"step {step}: validation loss {validation['loss']:.4f}, "
                    f"{validation['bits_per_note']:.3f} bits/note")
        if config.save_every and step % config.save_every == 0:
            _save_checkpoint(accelerator, Path(config.output_dir), progress)
        # Every process must read the same clock, so they set the same rate and stop together.
        elapsed = torch.tensor(progress.wall_seconds(), device=accelerator.device)
        schedule.advance(step, accelerator.reduce(elapsed, reduction="max").item())
        budget = schedule.budget
        if budget.progress > 0:  # the bar counts the steps the budget will allow, so its ETA is true
            bar.total = min(config.max_steps, max(step, round(step / budget.progress)))
            bar.refresh()
        if budget.out_of_time():
            say(f"max_minutes={config.max_minutes} reached after step {step} of {config.max_steps}; stopping")
            break
    bar.close()
    return train_loss, progress.wall_seconds()


def _micro_batches(accelerator, train_loader, start: int):
    """Batches from micro-batch `start` on, epoch after epoch, in the seeded order."""
    epoch, skip = divmod(start, len(train_loader))
    while True:
        train_loader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        yield from loader
        epoch, skip = epoch + 1, 0


def _optimizer_step(accelerator, model, optimizer, group: list, config: TrainConfig) -> tuple[float, int, int]:
    """One optimizer step over the micro-batches of `group`; returns its summed NLL (nats), its
    label tokens and the positions the model ran, all processes together."""
    accumulation = config.gradient_accumulation_steps
    # Normalise by the label tokens of the whole optimizer step on all processes, so every
    # token weighs the same however they fall into micro-batches. The positions ride along in
    # the same reduce: batches are cut after their last label, so processes differ in length.
    counts = torch.tensor([sum(int(label_tokens(batch)) for batch in group),
                           sum(batch["input_ids"].numel() for batch in group)], device=accelerator.device)
    step_labels, step_tokens = accelerator.reduce(counts, reduction="sum").tolist()
    step_nll = torch.zeros((), device=accelerator.device)
    for batch in group:
        with accelerator.accumulate(model):
            row_nll, _ = model(batch["input_ids"], batch["labels"])
            nll = row_nll.sum()
            # backward() divides by the accumulation steps and DDP averages over processes;
            # both are undone here so the gradient is that of (total NLL / step_labels).
            accelerator.backward(nll * accumulation * accelerator.num_processes / max(step_labels, 1))
            if accelerator.sync_gradients and config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        step_nll += nll.detach()
    return accelerator.reduce(step_nll, reduction="sum").item(), step_labels, step_tokens


def _validate(accelerator, model, data: _Data, config: TrainConfig) -> dict:
    """Validation loss and bits per note ({} when the split has no label tokens)."""
    nll, tokens = evaluate(accelerator, model, data.eval_loader, config.eval_batches)
    if tokens == 0:
        return {}
    loss = nll / tokens
    # Mean bits per label token, times the split's label tokens per note: exact when the
    # whole split is evaluated, an estimate when eval_batches samples it.
    bits_per_note = (loss / math.log(2)) * data.validation_label_tokens / max(data.validation_notes, 1)
    return {"loss": loss, "bits_per_note": bits_per_note, "tokens": tokens}


def _log_validation(accelerator, validation: dict, step: int) -> None:
    accelerator.log({"validation/loss": validation["loss"],
                     "validation/bits_per_note": validation["bits_per_note"]}, step=step)


def _save_checkpoint(accelerator, output_dir: Path, progress: _Progress) -> None:
    folder = output_dir / CHECKPOINTS / f"step-{progress.step:07d}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        (folder / TRAINER_STATE).write_text(json.dumps({
            "step": progress.step, "tokens_seen": progress.tokens_seen,
            "label_tokens_seen": progress.label_tokens_seen, "wall_seconds": progress.wall_seconds()},
            indent=2) + "\n")
    accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------- the bundle


def _training_summary(config: TrainConfig, data: _Data, progress: _Progress, wall: float, train_loss: float,
                      validation: dict, precision: str, accelerator) -> dict:
    """training_summary.json: what was trained on what, how fast, to what loss."""
    return {
        "steps": progress.step,
        "tokens_seen": progress.tokens_seen,
        "label_tokens_seen": progress.label_tokens_seen,
        "notes_seen": round(progress.label_tokens_seen / data.tokens_per_note),
        "wall_seconds": round(wall, 2),
        "tokens_per_second": progress.tokens_seen / max(wall, 1e-9),
        "notes_per_second": progress.label_tokens_seen / data.tokens_per_note / max(wall, 1e-9),
        "final_train_loss": train_loss,
        "validation": validation or None,
        "mixed_precision": precision,
        "music_only_head": data.music_only,
        "processes": accelerator.num_processes,
        "seq_len": data.seq_len,
        "effective_batch_rows": data.global_batch * config.gradient_accumulation_steps,
        "hardware": hardware_description(accelerator.device),
        "versions": versions(),
        "config": config.to_dict(),
    }


def _write_bundle(accelerator, model, codec, output_dir: Path, summary: dict, say,
                  base_layers: int | None = None) -> Path:
    """The adapter, the codec, the remote code and the summary (on the main process); ends the run."""
    from midillm.model.runtime import plain_token_rows

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        unwrapped = accelerator.unwrap_model(model)
        # The new rows travel as trainable-token deltas; the full embedding matrix is not needed.
        with plain_token_rows(unwrapped):
            unwrapped.peft_model.save_pretrained(output_dir, save_embedding_layers=False)
        # PEFT wrote a placeholder card naming `base_model` as a Hub id; the card is midillm.hub's.
        (output_dir / MODEL_CARD).unlink(missing_ok=True)
        codec.save_pretrained(output_dir)
        write_remote_code(output_dir, base_layers=base_layers)
        (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        say(f"Saved the model to {output_dir}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return output_dir


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="midillm train",
        description="Fine-tune a base LM on a `midillm prepare` output. Settings come from the YAML "
                    "file, then from key=value overrides.")
    parser.add_argument("--config", metavar="FILE.yaml", help="Run config (see configs/).")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="Settings that replace the file's.")
    return parser


def main(argv: list[str] | None = None, finish: Callable[[Path], object] | None = None) -> int:
    """The command line. `finish(output_dir)` runs on the main process once training has written
    the folder: `midillm train` passes `midillm.hub.complete_bundle` (model card, generation config)."""
    args = build_arg_parser().parse_args(argv)
    from accelerate import PartialState

    from midillm.tokenization import BaseModelError, CodecVersionError

    try:
        config = load_config(args.config, args.overrides)
        output_dir = train(config)
        if finish is not None and PartialState().is_main_process:
            finish(output_dir)
    except (ConfigError, BaseModelError, CodecVersionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
