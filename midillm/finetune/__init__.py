"""Fine-tuning: run config, LoRA on the base model + the new token rows, the accelerate training loop.

The model runtime it trains (base loading, new rows, `MusicLM`, collation) is `midillm.model`,
which inference, eval and retrieval share. The loop itself is `midillm.finetune.train.train(config)`
(module `midillm.finetune.train`, also run by `accelerate launch -m midillm.finetune.train
--config FILE.yaml`).
"""

from .config import ConfigError, TrainConfig, load_config
from .model import build_model

__all__ = ["ConfigError", "TrainConfig", "build_model", "load_config"]
