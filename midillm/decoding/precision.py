"""Inference precision: the one home of the choice of fp32, bf16, fp16 or int8 weights for a
loaded model (`MidiLM.from_pretrained(path, dtype=...)`, the `--precision` flags).

"auto" is `default_precision()`: int8 weights on a CPU, bf16 on CUDA (fp16 where it lacks bf16);
the retrieval index embeds in a float precision (`default_precision("embed")`).

int8 here is weight-only: each Linear of the decoder layers keeps its weight as int8 with one
scale per output channel (symmetric, absmax / 127); its input is rounded to bf16 for the int8
kernel, and everything between the Linears (residual stream, norms, attention) stays fp32, as do
the embeddings and the output head (the music rows `MidiLM._head()` multiplies by). Sampling a
token at a small batch reads every weight once, so it is bound by memory bandwidth, and int8
reads half of bf16's bytes. Measured on the 2026-12-04 chorale model (`runs/bench23`, 2 cores of
a Xeon with AMX; the tables are in docs/design.md, "Inference precision"): 31.8 ms a step at
batch 1 against 47.1 for bf16 and 42.2 for fp32, 41.9 against 50.0 at batch 4, 61.3 against
56.3 at batch 8; held-out bits per music token 3.618 / 3.902 (validation / test) against fp32's
3.611 / 3.901 and bf16's 3.610 / 3.903.

Not `torch.ao.quantization.quantize_dynamic` (int8 weights and int8 activations, the usual CPU
recipe, deprecated too): it quantizes activations with one scale per tensor (uint8, 7 bits on
x86), and the input of the MLP's down projection has outliers that this destroys: 5.86 / 5.97
bits per music token with per-channel weights, 6.04 / 5.95 per-tensor, though 10% faster than
this at batch 1 and 20% at batch 8. Activations quantized per token (torchao's
Int8DynamicActivationInt8Weight) still cost 0.08 bits, and one weight scale per tensor instead
of per channel 0.16. torchao (0.18, not a dependency) has the same quality in its weight-only
int8, but on a CPU it widens the int8 weight for an ordinary matmul at every call.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
FLOAT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
            "qint8": "int8"}
# Rows (batch x new positions) up to which an int8 layer runs the int8 kernel
# (`torch._weight_int8pack_mm`), which reads the weight once but converts it again for every
# row. Above it (a larger batch, a prompt, a window being embedded) the weight is widened to
# bf16 (fp32 on a CPU without bf16 matmuls) for an ordinary matmul; `wide_weights` keeps the
# wide copies for a whole sampling call instead of making them at every step. Measured in one
# run, ms per step at batch 8 (2 cores): the kernel 55.8, widened 61.6, bf16 weights 56.3; at
# batch 12 and 16 widened is the faster of the two (70 and 79; bf16 weights 60 and 68).
INT8_KERNEL_MAX_ROWS = 8


def default_precision(purpose: str = "sample") -> str:
    """What "auto" means on this machine; the one home of that choice.

    "sample" (`MidiLM.from_pretrained`'s "auto", every command that samples): bf16 on CUDA
    (fp16 where the GPU lacks bf16); int8 weights on a CPU, where sampling a token reads every
    weight once and the int8 kernel reads a quarter of fp32's bytes (docs/design.md, "Inference
    precision": 1.5x bf16's speed at batch 1, 1.2x at 4, 0.9x at 8, the held-out loss of fp32).
    "embed" (the retrieval index and its queries, `midillm.retrieval`): a float precision, the
    one every index was built with before int8: bf16 where the hardware has fast bf16 matmuls
    (CUDA, or a CPU with AMX / AVX512-BF16), fp16 on a GPU without bf16, else fp32. int8
    weights move a piece's vector more than the index's margins allow (cosine 0.92 to the fp32
    vector after the index's standardisation, bf16 0.99; near duplicates are told apart at 0.98).
    """
    if purpose not in ("sample", "embed"):
        raise ValueError(f"purpose must be sample or embed, not {purpose!r}")
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if purpose == "embed":
        return "bf16" if _cpu_supports_bf16() else "fp32"
    return "int8"


def resolve_precision(precision: str | torch.dtype | None) -> str | None:
    """"auto", a name ("fp32", "bfloat16", "int8"...) or a torch dtype -> one of `PRECISIONS`.
    None stays None (the model as it is)."""
    if precision is None:
        return None
    if isinstance(precision, torch.dtype):
        name = next((name for name, dtype in FLOAT_DTYPES.items() if dtype == precision), None)
        if name is None:
            raise ValueError(f"no inference precision for {precision}; choose one of {', '.join(PRECISIONS)}")
        return name
    text = str(precision).strip().lower().removeprefix("torch.")
    if text == "auto":
        return default_precision()
    name = _ALIASES.get(text, text)
    if name not in PRECISIONS:
        raise ValueError(f"precision must be auto or one of {', '.join(PRECISIONS)}, not {precision!r}")
    return name


class Int8Linear(nn.Module):
    """A Linear with an int8 weight and one scale per output channel. Its input is rounded to
    bf16 for the int8 kernel (`torch._weight_int8pack_mm`, fast with bf16 input only) and the
    output comes back in the input's dtype. Above `INT8_KERNEL_MAX_ROWS` rows the weight is
    widened for an ordinary matmul (see `INT8_KERNEL_MAX_ROWS`). Not trainable (see `float_linears`)."""

    max_kernel_rows = INT8_KERNEL_MAX_ROWS
    wide: torch.Tensor | None = None  # the dequantized weight, within `wide_weights`

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_int8", torch.round(weight / scale[:, None]).clamp(-127, 127)
                             .to(torch.int8).contiguous())
        self.register_buffer("scale", scale.contiguous())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.weight_int8.to(dtype) * self.scale[:, None].to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if x.device.type == "cpu" and rows <= self.max_kernel_rows:
            flat = x.reshape(rows, self.in_features).to(torch.bfloat16).contiguous()
            out = torch._weight_int8pack_mm(flat, self.weight_int8, self.scale.to(torch.bfloat16))
            out = out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        elif self.wide is not None:
            out = functional.linear(x.to(self.wide.dtype), self.wide).to(x.dtype)
        else:  # the scale applies to the output (N values a row), not to the weight (N x K)
            compute = _wide_dtype(x.device, x.dtype)
            out = (functional.linear(x.to(compute), self.weight_int8.to(compute)) * self.scale.to(compute)).to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def to_linear(self) -> nn.Linear:
        """A float32 nn.Linear with the dequantized weight (what this layer computes with)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight_int8.device)
        with torch.no_grad():
            linear.weight.copy_(self.dequantized())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _wide_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """What a many-row matmul of int8 weights runs in: bf16 on a CPU that does bf16 matmuls
    natively (AMX / AVX512-BF16), else the input's dtype."""
    return torch.bfloat16 if device.type == "cpu" and _cpu_supports_bf16() else dtype


@lru_cache(maxsize=1)
def _cpu_supports_bf16() -> bool:
    from midillm.model.runtime import cpu_supports_bf16

    return cpu_supports_bf16()


def _decoder_layers(model) -> nn.Module:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    return getattr(decoder, "layers", decoder)


def _swap(root: nn.Module, kind: type, make) -> list[tuple[nn.Module, str, nn.Module]]:
    """Replace every `kind` child under `root` by `make(child)`; returns (parent, name, old)."""
    swapped = []
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, kind):
                setattr(parent, name, make(child))
                swapped.append((parent, name, child))
    return swapped


def quantize_decoder(model) -> None:
    """Each Linear of the decoder layers -> `Int8Linear`, in place (the rest stays as it is)."""
    _swap(_decoder_layers(model), nn.Linear, Int8Linear)


def apply_precision(model, precision: str | torch.dtype | None):
    """The model in `precision` ("auto", a name or a torch dtype; None: as it is), in place."""
    name = resolve_precision(precision)
    if name is None:
        return model
    if name == "int8":
        if model_precision(model) == "int8":
            return model
        model.to(torch.float32)
        quantize_decoder(model)
        return model
    if model_precision(model) == "int8":
        raise ValueError(f"this model's weights are int8 already; load it again for {name}")
    return model.to(FLOAT_DTYPES[name])


def model_precision(model) -> str:
    """The precision a model computes in: "int8" if any layer is `Int8Linear`, else its float
    parameters' dtype as a name."""
    if any(isinstance(module, Int8Linear) for module in model.modules()):
        return "int8"
    dtype = next((parameter.dtype for parameter in model.parameters() if parameter.is_floating_point()),
                 torch.float32)
    return resolve_precision(dtype)


@contextmanager
def float_linears(model) -> Iterator[int]:
    """Within the block, every `Int8Linear` of `model` is a float32 nn.Linear holding its
    dequantized weight (so that gradients flow and PEFT finds Linear layers, as when adapting to
    a taste); the int8 layers are put back afterwards. Yields how many were swapped."""
    swapped = _swap(model, Int8Linear, Int8Linear.to_linear)
    try:
        yield len(swapped)
    finally:
        for parent, name, original in swapped:
            setattr(parent, name, original)


@contextmanager
def wide_weights(model, rows: int) -> Iterator[None]:
    """Within the block, each `Int8Linear` of `model` keeps its weight widened (bf16 on a CPU
    with bf16 matmuls, else fp32) when `rows` (a sampling call's batch) is above
    `INT8_KERNEL_MAX_ROWS`: a batch of 16 then converts every weight once for the call rather
    than at every step, for the memory of a bf16 copy while the call lasts."""
    layers = [module for module in model.modules()
              if isinstance(module, Int8Linear) and rows > module.max_kernel_rows]
    for layer in layers:
        compute = _wide_dtype(layer.weight_int8.device, torch.float32)
        layer.wide = layer.dequantized(compute)
    try:
        yield
    finally:
        for layer in layers:
            layer.wide = None
