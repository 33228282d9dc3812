"""What only training adds to the model runtime: LoRA on the base model, the trained token rows.

`build_model` loads the base (`midillm.model.runtime.load_base_model`), grows it by the codec's
described rows (`add_music_tokens`), wraps it with PEFT (LoRA + `trainable_token_indices`) and
returns a `MusicLM`, whose forward gives the summed NLL of the label tokens and their count;
`trainable_parameter_groups` gives the optimizer its groups.
"""

from __future__ import annotations

import torch

from midillm.model.runtime import MusicLM, add_music_tokens, compose_token_rows, load_base_model, weights_are_tied
from midillm.tokenization import MusicCodec


def _module_name(model, module) -> str:
    return next(name for name, candidate in model.named_modules() if candidate is module)


def lora_config(config, model, token_ids: list[int]):
    """LoRA on the config's modules; the new token rows trained through `trainable_token_indices`.

    PEFT ties a tied output head to the input embedding's token adapter by itself, so a tied
    model lists only the embedding; an untied one lists both matrices.
    """
    from peft import LoraConfig

    if weights_are_tied(model) or model.get_output_embeddings() is None:
        trainable = list(token_ids)
    else:
        trainable = {
            _module_name(model, model.get_input_embeddings()).split(".")[-1]: list(token_ids),
            _module_name(model, model.get_output_embeddings()).split(".")[-1]: list(token_ids),
        }
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        use_dora=config.use_dora,
        trainable_token_indices=trainable,
    )


def build_model(config, codec: MusicCodec, dtype: torch.dtype = torch.float32, log=None) -> MusicLM:
    """Base model + described new rows + LoRA, wrapped for the music-only loss."""
    from peft import get_peft_model

    model = load_base_model(config.base_model, dtype=dtype, log=log, layers=config.base_layers)
    token_ids = add_music_tokens(model, codec)
    model.config.use_cache = False
    peft_model = get_peft_model(model, lora_config(config, model, token_ids))
    # Adapter weights stay fp32 (PEFT upcasts LoRA itself); the token rows are copies of bf16
    # rows when the base is bf16, and AdamW on bf16 parameters loses small updates.
    for name, parameter in peft_model.named_parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    if config.compositional_rows and codec.render == "tokens":
        composed = compose_token_rows(peft_model, codec)
        if composed and log:
            kind = "note compound" if getattr(codec, "layout", "bars") == "onsets" else "BPE merge"
            log(f"{composed:,} {kind} rows are built from their base tokens' rows plus their own")
    # Adapters record where the base came from; the offline default's GGUF cache path is
    # meaningless elsewhere, so keep the user's own string.
    for adapter_config in peft_model.peft_config.values():
        adapter_config.base_model_name_or_path = config.base_model
    music_only = config.music_only_head and codec.render == "tokens"
    return MusicLM(peft_model, codec.music_lm_ids, len(codec.lm_tokenizer), music_only_head=music_only)


def trainable_parameter_groups(music_lm: MusicLM, config) -> list[dict]:
    """AdamW groups: LoRA weights (with weight decay) and the new token rows (own rate, no decay)."""
    lora, tokens = [], []
    for name, parameter in music_lm.named_parameters():
        if not parameter.requires_grad:
            continue
        (tokens if "trainable_tokens_delta" in name else lora).append(parameter)
    groups = [{"params": lora, "weight_decay": config.weight_decay, "lr": config.learning_rate}]
    if tokens:
        groups.append({"params": tokens, "weight_decay": 0.0,
                       "lr": config.new_token_learning_rate or config.learning_rate})
    return groups
