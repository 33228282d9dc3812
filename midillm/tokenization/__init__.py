"""Tokenization: MIDI in, LM token ids out (and back), plus corpus sources and datasets."""

from .base_model import DEFAULT_BASE_MODEL, BaseModelError, load_lm_tokenizer, locate_base_model
from .codec import CodecVersionError, MusicCodec

__all__ = ["DEFAULT_BASE_MODEL", "BaseModelError", "CodecVersionError", "MusicCodec",
           "load_lm_tokenizer", "locate_base_model"]
