"""Tokenization: MIDI in, LM token ids out (and back), plus corpus sources and datasets.

The token language has one home per piece: `codec` (music tokens and their LM rows), `caption`
(the text before the music: written, read, tokenized), `rows` (the layouts of training rows and
prompts, and the tasks they teach), `metre` (a bar's length).
"""

from .base_model import DEFAULT_BASE_MODEL, BaseModelError, load_lm_tokenizer, locate_base_model
from .codec import CodecVersionError, MusicCodec

__all__ = ["DEFAULT_BASE_MODEL", "BaseModelError", "CodecVersionError", "MusicCodec",
           "load_lm_tokenizer", "locate_base_model"]
