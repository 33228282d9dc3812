"""A bundle folder (a bundle is a Hub repository): finding it, checking it, reading it.

`Bundle.locate(model)` takes a folder or a Hub id (`owner/name`, downloaded to the local cache);
`check()` says in one line what a folder lacks; `load_model(codec)` gives the causal LM with the
codec's rows and the trained adapter merged in. The file names are `midillm.bundle_files`'s
(training writes them and may import nothing above this floor); the codec's own file is
`midillm.tokenization.codec`'s.
"""

from __future__ import annotations

import json
from pathlib import Path

from midillm.bundle_files import ADAPTER_CONFIG, MODEL_CONFIG, SUMMARY_FILE, saved_base_layers
from midillm.errors import first_line
from midillm.tokenization.codec import CODEC_CONFIG_FILE


class BundleError(Exception):
    """A path that is not a usable midillm bundle; one line for the user."""


class Bundle:
    """A bundle folder: the codec (`midillm_codec.json` and tokenizers) and a model, either a PEFT
    adapter over a base model (what training writes) or merged transformers weights (an export)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r})"

    @classmethod
    def locate(cls, model: str | Path) -> Bundle:
        """A bundle folder, or a Hub id downloaded to the local cache (a missing local folder is
        reported as such, not looked up on the Hub)."""
        path = Path(model).expanduser()
        if path.is_dir():
            return cls(path)
        text = str(model)
        if text.startswith((".", "/", "~")) or text.count("/") != 1:
            raise BundleError(f"{model} is not a folder (and not a Hub id like owner/name)")
        try:
            from huggingface_hub import snapshot_download

            return cls(snapshot_download(text))
        except Exception as error:  # offline, private, missing: one line either way
            raise BundleError(f"cannot download {model}: {first_line(error)}") from error

    @staticmethod
    def is_bundle(folder: str | Path) -> bool:
        """Whether `folder` holds a midillm codec: what marks a bundle (and each of its checkpoints)."""
        return (Path(folder) / CODEC_CONFIG_FILE).is_file()

    @property
    def codec_config(self) -> Path:
        return self.path / CODEC_CONFIG_FILE

    @property
    def adapter_config(self) -> Path:
        return self.path / ADAPTER_CONFIG

    @property
    def model_config(self) -> Path:
        return self.path / MODEL_CONFIG

    @property
    def has_adapter(self) -> bool:
        return self.adapter_config.is_file()

    def check(self) -> Bundle:
        """This bundle, if it is a local folder with a codec and a model; else one `BundleError` line."""
        if not self.path.is_dir():
            raise BundleError(f"{self.path} is not a folder")
        if not self.is_bundle(self.path):
            raise BundleError(f"{self.path} is not a midillm bundle ({CODEC_CONFIG_FILE} missing)")
        if not (self.has_adapter or self.model_config.is_file()):
            raise BundleError(f"{self.path} has a codec but no model ({ADAPTER_CONFIG} or {MODEL_CONFIG})")
        return self

    def base_model(self, codec) -> str:
        """The base model the adapter was trained on (as the user named it), else the codec's."""
        return json.loads(self.adapter_config.read_text()).get("base_model_name_or_path") or codec.base_model

    @property
    def base_layers(self) -> int | None:
        """How many of the base model's decoder layers the adapter was trained on (None: all)."""
        return saved_base_layers(self.path)

    def training_context_length(self) -> int | None:
        """The row length the bundle was trained on, when its training summary says."""
        summary = self.path / SUMMARY_FILE
        if not summary.is_file():
            return None
        try:
            return int(json.loads(summary.read_text()).get("seq_len") or 0) or None
        except (ValueError, TypeError):
            return None

    def load_model(self, codec):
        """The causal LM in fp32: the base with the codec's rows and the adapter merged in, or the
        merged export as saved."""
        self.check()
        if self.has_adapter:
            from peft import PeftModel

            from .runtime import add_music_tokens, load_base_model

            model = load_base_model(self.base_model(codec), layers=self.base_layers)
            add_music_tokens(model, codec)
            return PeftModel.from_pretrained(model, self.path).merge_and_unload()
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.path)
