"""`TrainConfig`: every setting of a fine-tuning run, from a YAML file plus `key=value` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from midillm.errors import ConfigError
from midillm.tokenization import DEFAULT_BASE_MODEL

MIXED_PRECISIONS = ("auto", "bf16", "fp32")
LR_SCHEDULERS = ("cosine", "linear", "constant")
REPORT_TO = ("tensorboard", "none")


@dataclass
class TrainConfig:
    """How `midillm train` fine-tunes a base LM on a `midillm prepare` output."""

    data_dir: str = field(default="", metadata={"help": "A `midillm prepare` output folder (codec/, dataset/, prepare.json)."})
    output_dir: str = field(default="", metadata={"help": "Where the bundle, checkpoints and logs are written."})
    base_model: str = field(default=DEFAULT_BASE_MODEL, metadata={
        "help": "Base LM: Hub id, local folder, .gguf file; default: the offline SmolLM2-135M-Instruct."})
    base_layers: Optional[int] = field(default=None, metadata={
        "help": "Keep only the base model's first N decoder layers (faster steps and sampling); unset: all of them."})
    max_steps: int = field(default=1000, metadata={
        "help": "Optimizer steps to train for at most; the schedule decays over these or max_minutes, whichever ends first."})
    max_minutes: Optional[float] = field(default=None, metadata={
        "help": "Wall-clock budget (resumed runs included): the schedule decays over it, training stops "
                "after the first step past it, then validates and saves; unset: steps only."})
    batch_size: int = field(default=8, metadata={"help": "Rows per micro-batch, per process."})
    gradient_accumulation_steps: int = field(default=1, metadata={
        "help": "Micro-batches per optimizer step (effective batch = batch_size x this x processes)."})
    seq_len: Optional[int] = field(default=None, metadata={
        "help": "Train on the first seq_len tokens of each row; unset: the dataset's row length."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate of the LoRA weights."})
    new_token_learning_rate: Optional[float] = field(default=None, metadata={
        "help": "Peak learning rate of the new token rows; unset: same as learning_rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (not applied to token rows)."})
    warmup_steps: int = field(default=50, metadata={"help": "Linear warm-up steps before the schedule."})
    lr_scheduler: str = field(default="cosine", metadata={"help": f"Learning-rate schedule: {', '.join(LR_SCHEDULERS)}."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the gradient norm to this (0: no clipping)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={
        "help": "Dropout on the LoRA input; its random masks cost a quarter of a CPU step (scripts/bench_train.py)."})
    lora_target_modules: str = field(default="all-linear", metadata={
        "help": "Modules that get LoRA: all-linear, or comma-separated names (q_proj,v_proj)."})
    use_dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (DoRA); slower, sometimes better."})
    mixed_precision: str = field(default="auto", metadata={
        "help": "auto (bf16 on bf16-capable GPUs and AMX/AVX512-BF16 CPUs, else fp32) | bf16 | fp32."})
    compile: bool = field(default=False, metadata={
        "help": "torch.compile each decoder layer: the first step takes ~30 s longer, later ones ~15% less on a CPU."})
    compositional_rows: bool = field(default=True, metadata={
        "help": "A BPE merge's row = the mean of its base tokens' rows + its own residual, so merges share what their parts learn."})
    music_only_head: bool = field(default=True, metadata={
        "help": "Compute logits over the music rows only (same loss, far less memory); false: full vocabulary."})
    eval_every: int = field(default=100, metadata={"help": "Validation loss and bits per note every N steps (0: only at the end)."})
    eval_batches: Optional[int] = field(default=None, metadata={
        "help": "Validation micro-batches per evaluation; unset: the whole validation split."})
    save_every: int = field(default=500, metadata={"help": "Checkpoint every N steps (0: no checkpoints)."})
    resume: Optional[str] = field(default=None, metadata={
        "help": "Continue from a checkpoint folder, or `latest` for the newest in output_dir/checkpoints."})
    seed: int = field(default=0, metadata={"help": "Seed of the weights' random parts, dropout and data order."})
    logging_every: int = field(default=10, metadata={"help": "Log train loss and throughput every N steps."})
    report_to: str = field(default="tensorboard", metadata={"help": f"Experiment tracker: {', '.join(REPORT_TO)}."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes (0: load in the main process)."})

    def __post_init__(self):
        if not self.data_dir:
            raise ConfigError("data_dir is required: the folder written by `midillm prepare`")
        if not self.output_dir:
            raise ConfigError("output_dir is required: where the trained bundle goes")
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "lora_r", "lora_alpha",
                     "logging_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.base_layers is not None and self.base_layers < 1:
            raise ConfigError(f"base_layers must be at least 1 or unset, not {self.base_layers}")
        for name in ("warmup_steps", "eval_every", "save_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, not {getattr(self, name)}")
        if self.seq_len is not None and self.seq_len < 2:
            raise ConfigError(f"seq_len must be at least 2, not {self.seq_len}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"max_minutes must be positive or unset, not {self.max_minutes}")
        if self.eval_batches is not None and self.eval_batches < 1:
            raise ConfigError(f"eval_batches must be at least 1 or unset, not {self.eval_batches}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, not {self.learning_rate}")
        if self.new_token_learning_rate is not None and not self.new_token_learning_rate > 0:
            raise ConfigError(f"new_token_learning_rate must be positive, not {self.new_token_learning_rate}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError("weight_decay and max_grad_norm must not be negative")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), not {self.lora_dropout}")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ConfigError(f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}, not {self.lr_scheduler!r}")
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ConfigError(
                f"mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, not {self.mixed_precision!r}")
        if self.report_to not in REPORT_TO:
            raise ConfigError(f"report_to must be one of {', '.join(REPORT_TO)}, not {self.report_to!r}")
        if not self.lora_target_modules.strip():
            raise ConfigError("lora_target_modules must name modules, or be all-linear")

    @property
    def target_modules(self) -> str | list[str]:
        """`lora_target_modules` in the form `peft.LoraConfig` takes."""
        if self.lora_target_modules.strip().lower() == "all-linear":
            return "all-linear"
        return [name.strip() for name in self.lora_target_modules.split(",") if name.strip()]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _as_argument(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


def load_config(yaml_path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A `TrainConfig` from a YAML file (optional) and `key=value` overrides, later ones winning.

    Values are typed by `HfArgumentParser` from the dataclass fields; any problem (unknown key,
    a value of the wrong type, a setting out of range) is one `ConfigError` line.
    """
    import yaml
    from transformers import HfArgumentParser

    values: dict = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from error
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold `key: value` lines")
        values.update(loaded)
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r} is not of the form key=value")
        values[key.strip().replace("-", "_")] = value

    known = {item.name: item for item in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                          f"known keys: {', '.join(known)}")

    argv = []
    for key, value in values.items():
        empty = value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", ""))
        if empty and known[key].default is None:
            continue  # None is the default of every optional field
        if value is None:
            raise ConfigError(f"{key} cannot be empty")
        argv += [f"--{key}", _as_argument(value)]

    parser = HfArgumentParser(TrainConfig)

    def fail(message: str):
        raise ConfigError(f"bad config value: {message}")

    parser.error = fail  # argparse would print usage and exit; one line is clearer
    try:
        (config,) = parser.parse_args_into_dataclasses(args=argv)
    except ConfigError:
        raise
    except ValueError as error:  # e.g. a bool the parser cannot read
        raise ConfigError(f"bad config value: {error}") from error
    return config
