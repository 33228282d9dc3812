"""The model runtime that training, inference, eval and retrieval share.

- Precision: `cpu_supports_bf16`, `resolve_mixed_precision` ("auto" -> "bf16" or "fp32").
- The base model: `load_base_model` resolves it (Hub id, folder, GGUF, the offline default) and
  caches a dequantized GGUF as safetensors so later runs start fast.
- The music token rows: `add_music_tokens` grows the embeddings by the codec's tokens, each new
  row starting from the mean embedding of its text description; `compose_token_rows` makes BPE
  merges' rows sums of their base tokens' rows (`ComposedRows`), `plain_token_rows` undoes that
  for saving.
- `MusicLM`: a causal LM whose forward gives the summed NLL of the label tokens over the music
  rows of the head only, and their count: the training loss and the held-out likelihood alike.

What only training needs (LoRA, `build_model`, the optimizer's groups) is `midillm.finetune.model`.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from midillm.errors import first_line
from midillm.tokenization import BaseModelError, MusicCodec, locate_base_model
from midillm.tokenization.base_model import gguf_cache_folder, save_to_cache
from midillm.tokenization.rows import IGNORE_INDEX


# ----------------------------------------------------------------------------- precision


def cpu_supports_bf16() -> bool:
    """AMX or AVX512-BF16 make bf16 matmuls several times faster than fp32 on a CPU."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def resolve_mixed_precision(setting: str = "auto", device: str | torch.device | None = None) -> str:
    """`auto` -> "bf16" or "fp32" for the device the run will use."""
    if setting != "auto":
        return setting
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_supports_bf16() else "fp32"
    return "fp32"


# ----------------------------------------------------------------------------- the base model


def load_base_model(base_model: str, dtype: torch.dtype = torch.float32, log=None, layers: int | None = None):
    """The base causal LM. A GGUF file is dequantized once, then read from the cache.
    `layers`: keep only the first this many decoder layers (`keep_first_layers`)."""
    model = _load_whole_base_model(base_model, dtype, log)
    return keep_first_layers(model, layers) if layers else model


def decoder_layers(model) -> nn.ModuleList:
    """The decoder's stack of layers (`model.layers` in Llama-like models, `h` in GPT-2)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    for name in ("layers", "h", "blocks"):
        stack = getattr(decoder, name, None)
        if isinstance(stack, nn.ModuleList):
            return stack
    raise BaseModelError(f"cannot find the decoder layers of a {type(model).__name__}")


def keep_first_layers(model, layers: int):
    """The base model cut to its first `layers` decoder layers (the final norm and head stay).

    Why: on a CPU most of a training or sampling step is the decoder layers', and a short run
    is far from using all of a pretrained model's depth: 10 of SmolLM2's 30 layers learn as much
    per step and take a third of the time (benchmarks.md, "Fewer base layers"). The first layers
    are kept because they read the embeddings the new music rows are described in."""
    stack = decoder_layers(model)
    if not 1 <= layers <= len(stack):
        raise BaseModelError(f"base_layers must be between 1 and {len(stack)} for this base model, not {layers}")
    if layers == len(stack):
        return model
    del stack[layers:]
    config = model.config
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(getattr(config, name, None), int):
            setattr(config, name, layers)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:layers]
    return model


def _load_whole_base_model(base_model: str, dtype: torch.dtype, log):
    from transformers import AutoModelForCausalLM

    location = locate_base_model(base_model)
    kwargs = {"dtype": dtype}
    try:
        if location.gguf_file:
            cached = gguf_cache_folder(Path(location.name_or_path) / location.gguf_file)
            if (cached / "config.json").is_file():
                return AutoModelForCausalLM.from_pretrained(cached, **kwargs)
            if log:
                log(f"Dequantizing {location.gguf_file} once; cached in {cached}")
            model = AutoModelForCausalLM.from_pretrained(
                location.name_or_path, gguf_file=location.gguf_file, dtype=torch.float32)
            save_to_cache(cached, lambda folder: _save_plain(model, folder))
            return model.to(dtype)
        return AutoModelForCausalLM.from_pretrained(location.name_or_path, **kwargs)
    except (OSError, ValueError) as error:
        raise BaseModelError(f"cannot load the base model {base_model!r}: {first_line(error)}") from error


def _save_plain(model, folder: Path) -> None:
    """config.json + model.safetensors of a GGUF-loaded model (its save_pretrained refuses)."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["dtype"] = "float32"
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})  # drops tied copies


def weights_are_tied(model) -> bool:
    output = model.get_output_embeddings()
    return output is not None and output.weight is model.get_input_embeddings().weight


@torch.no_grad()
def add_music_tokens(model, codec: MusicCodec) -> list[int]:
    """Grow the embeddings to the codec's LM vocabulary; returns the ids of the new rows.

    Each new row (input and, if untied, output) starts as the mean of the base rows of its
    description's LM tokens, so `<Pitch_60>` begins near "note C4": training starts from a
    meaningful point instead of noise, and the untrained logits of new tokens are in range.
    """
    tokenizer = codec.lm_tokenizer
    old_rows = model.get_input_embeddings().weight.shape[0]
    descriptions = codec.new_token_descriptions()
    new_ids = sorted(set(descriptions) | set(range(old_rows, len(tokenizer))))
    if len(tokenizer) > old_rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    tied = weights_are_tied(model)
    matrices = [model.get_input_embeddings().weight]
    if not tied and model.get_output_embeddings() is not None:
        matrices.append(model.get_output_embeddings().weight)
    texts = [descriptions.get(lm_id, "") for lm_id in new_ids]
    encoded = [[token for token in ids if token < old_rows]
               for ids in tokenizer(texts, add_special_tokens=False).input_ids]
    # Rows whose descriptions have the same number of tokens are set together, one gather and
    # one mean for each length (a row at a time took ~0.1 s for the ~1500 rows of a chorale
    # codec, seconds on a busy CPU, at every bundle load); the values are the same bit for bit.
    by_length: dict[int, tuple[list[int], list[list[int]]]] = {}
    for lm_id, ids in zip(new_ids, encoded):
        rows, parts = by_length.setdefault(len(ids), ([], []))
        rows.append(lm_id)
        parts.append(ids)
    read = {token for ids in encoded for token in ids}
    for matrix in matrices:
        fallback = matrix[:old_rows].float().mean(dim=0)
        if read.isdisjoint(new_ids):
            for length, (rows, parts) in by_length.items():
                values = matrix[torch.tensor(parts)].float().mean(dim=1) if length else fallback.expand(len(rows), -1)
                matrix[torch.tensor(rows)] = values.to(matrix.dtype)
            continue
        for lm_id, ids in zip(new_ids, encoded):  # a row is described by another new row: in order
            row = matrix[ids].float().mean(dim=0) if ids else fallback
            matrix[lm_id] = row.to(matrix.dtype)
    return new_ids


# ----------------------------------------------------------------------------- compositional rows


class ComposedRows(nn.Module):
    """A BPE merge's row = its own residual + the mean of its base tokens' rows.

    Registered as a parametrization of PEFT's trainable-token rows: what the model learns about
    `Pitch_60` then reaches every merge that holds it, so a large merge vocabulary, where each
    merge is seen a few times, learns at the pace of the few hundred base tokens. Base tokens
    (and every row that is not a merge) are their own parameter. The residual starts at the
    row's described starting point minus its parts' mean (`right_inverse`), so step 0 is
    unchanged.
    """

    def __init__(self, merged: list[int], components: list[int], weights: list[float]):
        super().__init__()
        self.register_buffer("merged", torch.tensor(merged, dtype=torch.long), persistent=False)
        self.register_buffer("components", torch.tensor(components, dtype=torch.long), persistent=False)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32), persistent=False)

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        parts = residual[self.components] * self.weights[:, None].to(residual.dtype)
        return residual.index_add(0, self.merged, parts)

    def right_inverse(self, rows: torch.Tensor) -> torch.Tensor:
        # Base rows are their own parameter, so the parts' mean can be read off `rows` directly.
        parts = rows[self.components] * self.weights[:, None].to(rows.dtype)
        return rows.index_add(0, self.merged, parts, alpha=-1)


def composition_of_rows(codec: MusicCodec, token_ids: list[int]) -> tuple[list[int], list[int], list[float]]:
    """(position of a merge, position of one of its base tokens, 1 / its length) over `token_ids`."""
    parts_at = {}
    for position, lm_id in enumerate(token_ids):
        music_id = codec.music_id_of_lm_id(lm_id)
        if music_id is not None:
            parts_at[position] = codec.music_token_parts[music_id]
    single = {parts[0]: position for position, parts in parts_at.items() if len(parts) == 1}
    merged, components, weights = [], [], []
    for position, parts in parts_at.items():
        if len(parts) < 2 or not all(token in single for token in parts):
            continue
        for token in parts:
            merged.append(position)
            components.append(single[token])
            weights.append(1.0 / len(parts))
    return merged, components, weights


def compose_token_rows(peft_model, codec: MusicCodec) -> int:
    """Make the BPE merges' rows compositional (`ComposedRows`); returns how many rows are merges."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    composed = 0
    for module in peft_model.modules():
        if not isinstance(module, TrainableTokensLayer) or module.tied_adapter is not None:
            continue  # a tied head shares the embedding's rows: composing them once is enough
        for adapter, token_ids in module.token_indices.items():
            merged, components, weights = composition_of_rows(codec, list(token_ids))
            if not merged:
                continue
            parametrize.register_parametrization(module.trainable_tokens_delta, adapter,
                                                 ComposedRows(merged, components, weights))
            composed = max(composed, len(set(merged)))
    return composed


@contextmanager
def plain_token_rows(model):
    """Within the block, composed rows are plain parameters holding their composed values: what
    PEFT saves and what a loaded bundle reads. The parametrization (and the optimizer's hold on
    the same parameter objects) comes back afterwards."""
    undone = []
    for module in model.modules():
        if isinstance(module, nn.ParameterDict) and parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                composition = module.parametrizations[name][0]
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
                undone.append((module, name, composition))
    try:
        yield
    finally:
        for module, name, composition in undone:
            parametrize.register_parametrization(module, name, composition)


# ----------------------------------------------------------------------------- the music-only head


def _swapped_in_adapter(layer) -> str | None:
    """The adapter of a PEFT token layer whose trained rows `MusicLM` swaps in itself (for the
    input rows and the music head alike); None where the base rows stand: adapters switched off,
    merged into the base, or none active."""
    active = layer.active_adapters
    return None if layer.disable_adapters or layer.merged or not active else active[0]


class MusicLM(nn.Module):
    """A PEFT causal LM whose loss is computed over the music rows of the head only.

    Training labels are music tokens (and `</music>`), so the logits of the other ~50k rows are
    never needed: the head is `hidden @ W[music_rows].T`, with W the *effective* output matrix
    (base rows with the trained token rows swapped in). `music_only_head=False` uses the full
    head instead (same loss on music labels; needed when labels are ordinary text).

    `forward` returns per-row `(nll_sum, label_tokens)`: the caller normalises by the token count
    of the whole (accumulated, all-process) batch, which a per-batch mean cannot do.
    """

    def __init__(self, peft_model, music_lm_ids: list[int], vocab_size: int, music_only_head: bool = True):
        super().__init__()
        self.peft_model = peft_model
        self.music_only_head = music_only_head
        rows = torch.tensor(sorted(set(music_lm_ids)), dtype=torch.long)
        self.register_buffer("music_rows", rows, persistent=False)
        row_of = torch.full((vocab_size,), -1, dtype=torch.long)
        row_of[rows] = torch.arange(len(rows))
        self.register_buffer("row_of", row_of, persistent=False)
        self._delta_slots = None  # (positions in music_rows, positions in the token adapter)
        self._embedding_slots = None  # per token id: its position in the input adapter, or -1

    @property
    def causal_lm(self):
        return self.peft_model.get_base_model()

    def decoder_hidden_states(self, input_ids, attention_mask=None):
        lm = self.causal_lm
        decoder = lm.get_decoder() if hasattr(lm, "get_decoder") else lm.base_model
        embeddings = self.input_embeddings(input_ids)
        if embeddings is None:
            return decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return decoder(inputs_embeds=embeddings, attention_mask=attention_mask, use_cache=False).last_hidden_state

    def input_embeddings(self, input_ids) -> torch.Tensor | None:
        """The input rows of `input_ids`, the trained token rows swapped in; None where PEFT's own
        forward must run (no token adapter, or one merged or switched off).

        PEFT's forward copies the whole embedding matrix (vocabulary x width: 113 MB for SmolLM2)
        to swap its trained rows in, and its backward fills a gradient as large: about 15% of a
        training step on a CPU (torch.profiler, the demo recipe). Here the frozen rows are looked
        up as the base layer looks them up, and the trained rows are gathered where they occur,
        so the gradient is as large as the trained rows."""
        from peft.utils.other import TrainableTokensWrapper

        wrapper = self.causal_lm.get_input_embeddings()
        if not isinstance(wrapper, TrainableTokensWrapper):
            return None
        layer = wrapper.token_adapter
        adapter = _swapped_in_adapter(layer)
        if adapter is None or len(layer.active_adapters) != 1 or not isinstance(layer.base_layer, nn.Embedding):
            return None
        if self._embedding_slots is None:
            slots = torch.full((layer.base_layer.num_embeddings,), -1, dtype=torch.long)
            slots[torch.tensor(layer.token_indices[adapter], dtype=torch.long)] = torch.arange(len(layer.token_indices[adapter]))
            self._embedding_slots = slots.to(input_ids.device)
        frozen = layer.base_layer(input_ids)  # with the base's own scaling, if it has one
        slot = self._embedding_slots[input_ids]
        trained = F.embedding(slot.clamp(min=0), layer.trainable_tokens_delta[adapter])
        scale = layer._get_embed_scale()
        if scale is not None:
            trained = trained * scale
        return torch.where((slot >= 0)[..., None], trained.to(frozen.dtype), frozen)

    def music_head_weight(self) -> torch.Tensor:
        """W[music_rows] of the effective output matrix, differentiable w.r.t. the token rows."""
        from peft.utils.other import TrainableTokensWrapper

        head = self.causal_lm.get_output_embeddings()
        if not isinstance(head, TrainableTokensWrapper):
            return head.weight[self.music_rows]
        layer = head.token_adapter
        weight = layer.base_layer.weight[self.music_rows]
        adapter = _swapped_in_adapter(layer)
        if adapter is None:
            return weight
        if self._delta_slots is None:
            position_in_adapter = {lm_id: k for k, lm_id in enumerate(layer.token_indices[adapter])}
            pairs = [(j, position_in_adapter[lm_id]) for j, lm_id in enumerate(self.music_rows.tolist())
                     if lm_id in position_in_adapter]
            device = self.music_rows.device
            self._delta_slots = (torch.tensor([j for j, _ in pairs], dtype=torch.long, device=device),
                                 torch.tensor([k for _, k in pairs], dtype=torch.long, device=device))
        rows_here, rows_in_delta = self._delta_slots
        delta = layer.trainable_tokens_delta[adapter]
        return weight.index_copy(0, rows_here, delta[rows_in_delta].to(weight.dtype))

    def _apply(self, fn, *args, **kwargs):
        self._delta_slots = self._embedding_slots = None  # rebuilt on the new device
        return super()._apply(fn, *args, **kwargs)

    def forward(self, input_ids, labels, attention_mask=None):
        """Per row: summed NLL (nats) of its label tokens, and how many there are."""
        hidden = self.decoder_hidden_states(input_ids, attention_mask)
        # Labels are not shifted in the dataset: position t predicts label t+1.
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        row_index = keep.nonzero()[:, 0]
        # Only positions with a label reach the head: captions and padding cost no logits.
        hidden = hidden[:, :-1][keep]
        targets = targets[keep]
        if self.music_only_head:
            logits = hidden @ self.music_head_weight().to(hidden.dtype).T
            bias = getattr(self.causal_lm.get_output_embeddings(), "bias", None)
            if bias is not None:
                logits = logits + bias[self.music_rows].to(logits.dtype)
            targets = self.row_of[targets]
        else:
            logits = self.causal_lm.get_output_embeddings()(hidden)
        nll = F.cross_entropy(logits.float(), targets, reduction="none")
        row_nll = torch.zeros(labels.shape[0], dtype=nll.dtype, device=nll.device).index_add(0, row_index, nll)
        return row_nll, keep.sum(dim=1)


def release_free_heap() -> None:
    """Give the heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing)."""
    global _malloc_trim
    if _malloc_trim is None:
        import ctypes
        import ctypes.util

        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None
