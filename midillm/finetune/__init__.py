"""Fine-tuning: run config, base model + new token rows + LoRA, the accelerate training loop.

The loop itself is `midillm.finetune.train.train(config)` (module `midillm.finetune.train`, also
run by `accelerate launch -m midillm.finetune.train --config FILE.yaml`).
"""

from .config import ConfigError, TrainConfig, load_config
from .model import MusicLM, add_music_tokens, build_model, load_base_model, resolve_mixed_precision

__all__ = ["ConfigError", "MusicLM", "TrainConfig", "add_music_tokens", "build_model", "load_base_model",
           "load_config", "resolve_mixed_precision"]
