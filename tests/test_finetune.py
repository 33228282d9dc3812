"""Fine-tuning on tiny Llama models built from a config (no download): tied and untied heads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from midillm.finetune import ConfigError, TrainConfig, build_model, load_config
from midillm.finetune.model import trainable_parameter_groups
from midillm.finetune.train import SUMMARY_FILE, TRAINER_STATE, main, train
from midillm.model.data import Collate, load_prepared
from midillm.model.runtime import add_music_tokens, load_base_model
from midillm.tokenization.rows import IGNORE_INDEX


def tiny_config(data_dir: Path, output_dir: Path, base_model: Path, **overrides) -> TrainConfig:
    settings = dict(data_dir=str(data_dir), output_dir=str(output_dir), base_model=str(base_model),
                    max_steps=6, batch_size=4, learning_rate=3e-3, warmup_steps=0, lr_scheduler="constant",
                    lora_r=4, lora_alpha=8, lora_dropout=0.0, mixed_precision="fp32", eval_every=0,
                    save_every=0, logging_every=1, report_to="none")
    settings.update(overrides)
    return TrainConfig(**settings)


def first_batches(data_dir: Path, count: int, batch_size: int = 4):
    _, dataset, _ = load_prepared(data_dir)
    rows = dataset["train"].with_format("numpy", columns=["input_ids", "labels"])
    collate = Collate(128)
    return [collate([rows[i] for i in range(start, start + batch_size)])
            for start in range(0, count * batch_size, batch_size)]


@pytest.mark.parametrize("tying", ["tied", "untied"])
def test_training_steps_change_only_the_adapter(tiny_models, tiny_data, tmp_path, tying):
    codec, _, _ = load_prepared(tiny_data)
    config = tiny_config(tiny_data, tmp_path, tiny_models[tying])
    torch.manual_seed(0)
    model = build_model(config, codec)
    lm = model.causal_lm
    assert (lm.get_output_embeddings().token_adapter.tied_adapter is not None) == (tying == "tied")
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    embedding = lm.get_input_embeddings().token_adapter.base_layer.weight
    embedding_before = embedding.detach().clone()
    optimizer = torch.optim.AdamW(trainable_parameter_groups(model, config))
    batch = first_batches(tiny_data, 1)[0]
    losses = []
    for _ in range(8):
        row_nll, tokens = model(batch["input_ids"], batch["labels"])
        loss = row_nll.sum() / tokens.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses

    changed = {name for name, parameter in model.named_parameters()
               if not torch.equal(parameter.detach(), before[name])}
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert changed == trainable  # every trained parameter moved, nothing frozen did
    assert any("lora_B" in name for name in changed)
    assert any("trainable_tokens_delta" in name for name in changed)
    assert torch.equal(embedding, embedding_before)  # the base rows, old and new, stay as they were

    # The effective embedding changes exactly on the new rows.
    new_ids = sorted(codec.new_token_descriptions())
    old_rows = [i for i in range(embedding.shape[0]) if i not in set(new_ids)]
    effective = lm.get_input_embeddings().weight
    assert torch.equal(effective[old_rows], embedding_before[old_rows])
    assert not torch.allclose(effective[new_ids], embedding_before[new_ids])
    if tying == "untied":
        head = lm.get_output_embeddings()
        assert head.token_adapter.trainable_tokens_delta["default"].requires_grad
        assert torch.equal(head.weight[old_rows], head.token_adapter.base_layer.weight[old_rows])


def test_new_rows_start_from_their_descriptions(tiny_models, tiny_data):
    codec, _, _ = load_prepared(tiny_data)
    model = load_base_model(str(tiny_models["untied"]))
    base_input = model.get_input_embeddings().weight.detach().clone()
    base_output = model.get_output_embeddings().weight.detach().clone()
    new_ids = add_music_tokens(model, codec)
    assert model.get_input_embeddings().weight.shape[0] == len(codec.lm_tokenizer)
    description = codec.new_token_descriptions()[new_ids[3]]
    ids = codec.lm_tokenizer(description, add_special_tokens=False).input_ids
    assert torch.allclose(model.get_input_embeddings().weight[new_ids[3]], base_input[ids].mean(0), atol=1e-6)
    assert torch.allclose(model.get_output_embeddings().weight[new_ids[3]], base_output[ids].mean(0), atol=1e-6)


@pytest.mark.parametrize("tying", ["tied", "untied"])
def test_music_only_head_matches_full_head(tiny_models, tiny_data, tmp_path, tying):
    codec, _, _ = load_prepared(tiny_data)
    config = tiny_config(tiny_data, tmp_path, tiny_models[tying])
    model = build_model(config, codec)
    with torch.no_grad():  # move the token rows away from their copies in the base matrix
        for name, parameter in model.named_parameters():
            if "trainable_tokens_delta" in name:
                parameter.add_(torch.randn_like(parameter) * 0.5)
    model.eval()
    batch = first_batches(tiny_data, 1)[0]
    with torch.no_grad():
        model.music_only_head = True
        music_nll, music_tokens = model(batch["input_ids"], batch["labels"])
        model.music_only_head = False
        full_nll, full_tokens = model(batch["input_ids"], batch["labels"])
        reference = model.peft_model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
    assert torch.equal(music_tokens, full_tokens)
    assert music_nll.shape == (4,)
    full_loss = (full_nll.sum() / full_tokens.sum()).item()
    assert full_loss == pytest.approx(reference.item(), rel=1e-4)  # the full head is the usual LM loss

    # The music-only head is the full head with the non-music logits masked out (which is what
    # the sampler does): same numbers from the full output matrix, restricted afterwards.
    with torch.no_grad():
        hidden = model.decoder_hidden_states(batch["input_ids"])[:, :-1]
        logits = model.causal_lm.get_output_embeddings()(hidden)
        rows = model.music_rows
        assert sorted(rows.tolist()) == sorted(codec.music_lm_ids)
        targets = batch["labels"][:, 1:]
        keep = targets != -100
        masked = torch.log_softmax(logits[keep][:, rows], dim=-1)
        expected = -masked.gather(1, model.row_of[targets[keep]][:, None]).sum()
    music_loss = (music_nll.sum() / music_tokens.sum()).item()
    assert music_nll.sum().item() == pytest.approx(expected.item(), rel=1e-5)
    assert music_loss < full_loss  # renormalised over fewer rows


@pytest.mark.parametrize("tying", ["tied", "untied"])
def test_input_rows_and_their_gradient_are_those_of_the_token_adapter(tiny_models, tiny_data, tmp_path, tying):
    # MusicLM looks the input rows up itself (PEFT's forward copies the whole matrix each step):
    # the same rows, and the same gradient for the trained token rows, as PEFT's own forward.
    codec, _, _ = load_prepared(tiny_data)
    model = build_model(tiny_config(tiny_data, tmp_path, tiny_models[tying]), codec)
    delta = next(parameter for name, parameter in model.named_parameters() if "trainable_tokens_delta" in name)
    with torch.no_grad():
        delta.add_(torch.randn_like(delta) * 0.5)
    batch = first_batches(tiny_data, 1)[0]
    assert torch.isin(batch["input_ids"], torch.tensor(codec.music_lm_ids)).any()  # trained rows occur
    weights = torch.randn(*batch["input_ids"].shape, model.causal_lm.config.hidden_size)
    gradients = []
    for embed in (model.input_embeddings, model.causal_lm.get_input_embeddings()):
        delta.grad = None
        rows = embed(batch["input_ids"])
        (rows * weights).sum().backward()
        gradients.append((rows.detach(), delta.grad.clone()))
    (ours, our_gradient), (peft, peft_gradient) = gradients
    assert torch.allclose(ours, peft, atol=1e-6)
    assert our_gradient.abs().sum() > 0 and torch.allclose(our_gradient, peft_gradient, atol=1e-5)


def test_a_batch_is_cut_after_its_last_label_and_keeps_its_loss(tiny_models, tiny_data, tmp_path):
    # Padding after the last label costs compute and cannot change the loss (attention is causal).
    codec, dataset, _ = load_prepared(tiny_data)
    model = build_model(tiny_config(tiny_data, tmp_path, tiny_models["tied"]), codec).eval()
    rows = dataset["train"].with_format("numpy", columns=["input_ids", "labels"])
    padded = []
    for index, labelled in ((0, 70), (1, 90)):  # two rows whose labels end at different places
        row = {name: rows[index][name][:128].copy() for name in ("input_ids", "labels")}
        row["labels"][labelled:] = IGNORE_INDEX
        row["input_ids"][labelled:] = codec.lm_tokenizer.pad_token_id or 0
        padded.append(row)
    batch = Collate(128)(padded)
    assert batch["input_ids"].shape == (2, 90) and batch["labels"].shape == (2, 90)
    whole = {name: torch.stack([torch.as_tensor(row[name]) for row in padded]).long() for name in ("input_ids", "labels")}
    with torch.no_grad():
        cut_nll, cut_tokens = model(batch["input_ids"], batch["labels"])
        whole_nll, whole_tokens = model(whole["input_ids"], whole["labels"])
    assert torch.equal(cut_tokens, whole_tokens)
    assert torch.allclose(cut_nll, whole_nll, rtol=1e-5)


def test_train_writes_the_model_and_what_the_pipeline_needs(tiny_models, tiny_data, tmp_path):
    output = train(tiny_config(tiny_data, tmp_path / "run", tiny_models["tied"], max_steps=4,
                               save_every=2, eval_every=2, report_to="tensorboard"))
    for name in ("adapter_config.json", "adapter_model.safetensors", "midillm_codec.json", "music_tokenizer.json",
                 "tokenizer.json", SUMMARY_FILE, "config.json", "midi_generation.py"):
        assert (output / name).is_file(), name
    # PEFT's placeholder card is gone: the one card writer is midillm.hub's (`midillm train` runs it).
    assert not (output / "README.md").exists()
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == "midillm" and config["base_model_name_or_path"] == str(tiny_models["tied"])
    assert config["auto_map"]["AutoModelForCausalLM"] == "midi_generation.MidiLLMForCausalLM"
    assert "midi-generation" in config["custom_pipelines"]
    summary = json.loads((output / SUMMARY_FILE).read_text())
    # Every position the model ran, padding after the rows' last labels left out.
    assert summary["steps"] == 4 and summary["label_tokens_seen"] < summary["tokens_seen"] <= 4 * 4 * 128
    assert summary["validation"]["bits_per_note"] > 0 and summary["notes_seen"] > 0
    assert list((output / "logs").rglob("events.out.tfevents*"))
    assert (output / "checkpoints" / "step-0000002" / TRAINER_STATE).is_file()


def test_midillm_train_writes_the_whole_bundle(tiny_models, tiny_data, tmp_path):
    from huggingface_hub import ModelCard

    from midillm.cli import main as cli_main
    from midillm.decoding.request import SamplingSettings

    output = tmp_path / "run"
    assert cli_main(["train", f"data_dir={tiny_data}", f"output_dir={output}", f"base_model={tiny_models['tied']}",
                     "max_steps=2", "batch_size=4", "mixed_precision=fp32", "eval_every=0", "save_every=0",
                     "report_to=none"]) == 0
    for name in ("README.md", "config.json", "midi_generation.py", "generation_config.json", "adapter_config.json",
                 "midillm_codec.json", SUMMARY_FILE):
        assert (output / name).is_file(), name
    card = ModelCard.load(output / "README.md")
    assert card.data.library_name == "midillm" and "symbolic-music" in card.data.tags
    assert "samples/piano-roll.png" not in card.text  # no sample is rendered at the end of training
    generation = json.loads((output / "generation_config.json").read_text())
    codec, _, _ = load_prepared(tiny_data)
    assert generation["eos_token_id"] == codec.music_end_id and generation["do_sample"]
    assert SamplingSettings.from_pretrained(output) == SamplingSettings.for_layout(codec.layout)


def test_compiled_training_matches_eager(tiny_models, tiny_data, tmp_path):
    settings = dict(max_steps=3, seq_len=64)
    eager = train(tiny_config(tiny_data, tmp_path / "eager", tiny_models["tied"], **settings))
    compiled = train(tiny_config(tiny_data, tmp_path / "compiled", tiny_models["tied"], compile=True, **settings))
    a = json.loads((eager / SUMMARY_FILE).read_text())
    b = json.loads((compiled / SUMMARY_FILE).read_text())
    assert b["config"]["compile"] and not a["config"]["compile"]
    assert b["final_train_loss"] == pytest.approx(a["final_train_loss"], rel=1e-3)
    assert b["validation"]["loss"] == pytest.approx(a["validation"]["loss"], rel=1e-3)
    # The compiled run saves a plain adapter: same parameter names, loadable as usual.
    from safetensors.torch import load_file

    assert load_file(compiled / "adapter_model.safetensors").keys() == load_file(eager / "adapter_model.safetensors").keys()


class Preempted(Exception):
    pass


def test_resume_continues_with_the_same_batches(tiny_models, tiny_data, tmp_path, monkeypatch):
    seen: list[list[int]] = []
    stop_at = [None]
    original = Collate.__call__

    def recording(self, rows):
        if len(seen) == stop_at[0]:
            raise Preempted  # the machine goes away mid-run
        batch = original(self, rows)
        seen.append(batch["input_ids"][:, :8].sum(dim=1).tolist())
        return batch

    monkeypatch.setattr(Collate, "__call__", recording)
    # 14 micro-batches make an epoch at this size; resuming at micro-batch 10 crosses into the next.
    common = dict(max_steps=10, batch_size=8, seq_len=64, gradient_accumulation_steps=2,
                  lr_scheduler="cosine", warmup_steps=2)
    straight = train(tiny_config(tiny_data, tmp_path / "straight", tiny_models["untied"], **common))
    straight_batches = seen[:20]
    seen.clear()
    # Checkpoint at step 5 (micro-batches 0-9); the loader collates one batch ahead, so the
    # run dies while fetching the second batch of step 6, after the checkpoint was written.
    stop_at[0] = 12
    with pytest.raises(Preempted):
        train(tiny_config(tiny_data, tmp_path / "split", tiny_models["untied"], save_every=5, **common))
    first_batches_seen = seen[:10]
    seen.clear()
    stop_at[0] = None
    resumed = train(tiny_config(tiny_data, tmp_path / "split", tiny_models["untied"], resume="latest", **common))
    assert first_batches_seen + seen[:10] == straight_batches
    a = json.loads((straight / SUMMARY_FILE).read_text())
    b = json.loads((resumed / SUMMARY_FILE).read_text())
    assert b["steps"] == 10 and b["tokens_seen"] == a["tokens_seen"]
    assert b["final_train_loss"] == pytest.approx(a["final_train_loss"], rel=1e-3)
    assert b["validation"]["loss"] == pytest.approx(a["validation"]["loss"], rel=1e-3)


def test_accelerate_launch_two_cpu_processes(tiny_models, tiny_data, tmp_path):
    config = tmp_path / "run.yaml"
    output = tmp_path / "out"
    config.write_text(f"data_dir: {tiny_data}\noutput_dir: {output}\nbase_model: {tiny_models['tied']}\n"
                      "max_steps: 3\nbatch_size: 2\nmixed_precision: fp32\nreport_to: none\n"
                      "eval_every: 0\nsave_every: 0\neval_batches: 2\n")
    accelerate = Path(sys.executable).parent / "accelerate"
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        # `--cpu` alone starts a single process (several need mpirun); `--multi_gpu` starts two
        # with torchrun, and train() picks gloo DDP on the CPU when no GPU is there.
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "midillm.finetune.train",
         "--config", str(config), "lora_r=2"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((output / SUMMARY_FILE).read_text())
    assert summary["processes"] == 2 and summary["steps"] == 3
    # Both processes' positions counted: more than one process's batches could hold.
    assert 3 * 2 * 128 < summary["tokens_seen"] <= 3 * 2 * 2 * 128
    assert (output / "adapter_model.safetensors").is_file()


def test_config_errors_are_one_clear_line(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("data_dir: d\noutput_dir: o\nlearning_rate: 1e-4\n")
    assert load_config(config, ["max_steps=3", "use_dora=true"]).learning_rate == 1e-4
    cases = {"unknown config key 'lerning_rate'": ["lerning_rate=1"],
             "invalid int value: 'many'": ["max_steps=many"],
             "lr_scheduler must be one of": ["lr_scheduler=step"],
             "mixed_precision must be one of": ["mixed_precision=fp8"],
             "batch_size must be at least 1": ["batch_size=0"],
             "not of the form key=value": ["max_steps"]}
    for expected, overrides in cases.items():
        with pytest.raises(ConfigError) as error:
            load_config(config, overrides)
        assert expected in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    assert main(["--config", str(config), "bogus=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown config key 'bogus'") and "\n" not in err
    with pytest.raises(ConfigError, match="has no codec"):
        train(load_config(config))


def test_merge_rows_are_built_from_their_base_tokens(tiny_models, tiny_data, tmp_path):
    """Compositional rows: a merge starts where it did without them, learns through its parts'
    rows, and the saved bundle holds the composed rows as plain trainable-token rows."""
    from safetensors.torch import load_file
    from torch.nn.utils import parametrize

    from midillm.model.runtime import composition_of_rows, plain_token_rows

    codec, _, _ = load_prepared(tiny_data)
    config = tiny_config(tiny_data, tmp_path, tiny_models["tied"])
    torch.manual_seed(0)
    separate = build_model(TrainConfig(**{**config.to_dict(), "compositional_rows": False}), codec)
    torch.manual_seed(0)
    composed = build_model(config, codec)
    embedding = lambda model: model.causal_lm.get_input_embeddings().weight.detach()  # noqa: E731
    assert torch.allclose(embedding(separate), embedding(composed), atol=1e-5)

    adapter = composed.causal_lm.get_input_embeddings().token_adapter
    rows = adapter.trainable_tokens_delta
    assert parametrize.is_parametrized(rows)
    token_ids = list(adapter.token_indices["default"])
    merged, components, _ = composition_of_rows(codec, token_ids)
    assert merged  # the tiny data's BPE learned merges
    merge = merged[0]
    parts = [components[k] for k, position in enumerate(merged) if position == merge]
    assert len(parts) >= 2
    assert [codec.music_token_parts[codec.music_id_of_lm_id(token_ids[part])][0] for part in parts] == \
        codec.music_token_parts[codec.music_id_of_lm_id(token_ids[merge])]

    # A loss on the merge's row alone reaches its base tokens' parameters, and no others.
    raw = rows.parametrizations["default"].original
    rows["default"][merge].sum().backward()
    touched = sorted(set(raw.grad.abs().sum(dim=1).nonzero()[:, 0].tolist()))
    assert touched == sorted({merge, *parts})

    # Moving a base token's parameter moves every merge that holds it.
    with torch.no_grad():
        before = rows["default"].detach().clone()
        raw[parts[0]] += 1.0
        after = rows["default"].detach()
    moved = sorted(set((after - before).abs().sum(dim=1).nonzero()[:, 0].tolist()))
    holders = {position for position, part in zip(merged, components) if part == parts[0]}
    assert moved == sorted(holders | {parts[0]})

    # Saved: plain rows with the composed values, and the parametrization is back afterwards.
    with plain_token_rows(composed):
        assert not parametrize.is_parametrized(rows)
        composed.peft_model.save_pretrained(tmp_path / "saved", save_embedding_layers=False)
    assert parametrize.is_parametrized(rows)
    saved = next(value for key, value in load_file(tmp_path / "saved" / "adapter_model.safetensors").items()
                 if "trainable_tokens_delta" in key)
    assert torch.allclose(saved, rows["default"].detach(), atol=1e-6)


def test_the_schedule_decays_over_the_minutes_when_they_run_out_before_the_steps(tmp_path):
    from midillm.finetune.train import TrainingBudget

    config = TrainConfig(data_dir=str(tmp_path), output_dir=str(tmp_path), max_steps=1000, max_minutes=1.0,
                         warmup_steps=0, lr_scheduler="cosine")
    budget = TrainingBudget(config)
    assert budget.learning_rate_factor() == pytest.approx(1.0)
    budget.advance(10, 30.0)  # 1% of the steps, half the minutes: the clock leads
    assert budget.progress == pytest.approx(0.5)
    assert budget.learning_rate_factor() == pytest.approx(0.5)
    assert not budget.out_of_time()
    budget.advance(20, 61.0)
    assert budget.out_of_time() and budget.learning_rate_factor() == pytest.approx(0.0)
    # Without minutes the steps alone set the pace, as a plain cosine schedule.
    steps_only = TrainingBudget(TrainConfig(data_dir=str(tmp_path), output_dir=str(tmp_path), max_steps=100,
                                            warmup_steps=0, lr_scheduler="linear"))
    steps_only.advance(25, 1e6)
    assert steps_only.learning_rate_factor() == pytest.approx(0.75) and not steps_only.out_of_time()


def test_warmup_ramps_the_rate_before_the_schedule(tmp_path):
    from midillm.finetune.train import TrainingBudget

    budget = TrainingBudget(TrainConfig(data_dir=str(tmp_path), output_dir=str(tmp_path), max_steps=100,
                                        warmup_steps=3, lr_scheduler="constant"))
    factors = []
    for step in range(5):
        budget.advance(step, 0.0)
        factors.append(budget.learning_rate_factor())
    assert factors == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])


def test_two_processes_read_different_rows_of_a_sharded_dataset(tiny_models, tmp_path):
    """Two gloo processes under `accelerate launch` on a dataset written in several shards:
    each batches rows of its own, and between them they read more than one shard."""
    import hashlib
    from collections import Counter

    from datasets import Dataset, load_from_disk

    from conftest import make_band_score
    from midillm.tokenization.dataset import PrepareConfig, prepare

    midi, data = tmp_path / "midi", tmp_path / "data"
    midi.mkdir()
    for seed in range(12):
        make_band_score(seed, bars=6).dump_midi(midi / f"band{seed}.mid")
    prepare(PrepareConfig(source=str(midi), out=str(data), base_model=str(tiny_models["tied"]), seq_len=128,
                          num_workers=1, shard_pieces=2), log=lambda *_: None)
    train_files = sorted((data / "dataset" / "train").glob("data-*.arrow"))
    assert len(train_files) >= 4
    shard_of, copies = {}, Counter()
    for number, path in enumerate(train_files):
        for row in Dataset.from_file(str(path)).with_format("numpy")["input_ids"]:
            digest = hashlib.sha256(row.astype("int32").tobytes()).hexdigest()
            shard_of[digest] = number
            copies[digest] += 1
    assert sum(copies.values()) == len(load_from_disk(str(data / "dataset"))["train"])

    config = tmp_path / "run.yaml"
    config.write_text(f"data_dir: {data}\noutput_dir: {tmp_path / 'out'}\nbase_model: {tiny_models['tied']}\n"
                      "max_steps: 4\nbatch_size: 2\nmixed_precision: fp32\nreport_to: none\n"
                      "eval_every: 0\nsave_every: 0\neval_batches: 1\nlora_r: 2\n")
    accelerate = Path(sys.executable).parent / "accelerate"
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", str(Path(__file__).parent / "rows_seen.py"),
         str(tmp_path), "--config", str(config)],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    # Train rows only (the final evaluation batches validation rows through the same collate).
    seen = [[row for row in json.loads((tmp_path / f"rows-{rank}.json").read_text()) if row in shard_of]
            for rank in (0, 1)]
    assert all(len(rows) >= 4 * 2 for rows in seen)  # 4 steps of 2 rows each, at least
    # A row whose ids occur twice in the split (two identical short pieces of music) may be batched by both.
    assert not {row for row in seen[0] if copies[row] == 1} & set(seen[1])
    assert len({shard_of[row] for rows in seen for row in rows}) > 1


@pytest.mark.parametrize("recipe", sorted((Path(__file__).parent.parent / "configs").glob("*.yaml")),
                         ids=lambda path: path.name)
def test_every_recipe_loads_and_opens_with_its_command(recipe):
    first = recipe.read_text().splitlines()[0]
    assert first.startswith(("# midillm ", "# accelerate launch "))
    config = load_config(recipe)
    if first.startswith("# accelerate launch"):
        assert f"--config configs/{recipe.name}" in first
        launcher = Path(__file__).parent.parent / first.split("--config_file ")[1].split()[0]
        assert launcher.is_file()
        if "deepspeed" in launcher.name:  # DeepSpeed's own accumulation must match the run's
            assert f"gradient_accumulation_steps: {config.gradient_accumulation_steps}" in launcher.read_text()


def test_a_bundle_trained_on_fewer_base_layers_loads_with_them(tiny_models, tiny_data, tmp_path, capsys):
    from midillm.cli import main as cli_main
    from midillm.decoding.generate import MidiLM
    from midillm.model.runtime import decoder_layers

    output = tmp_path / "run"
    common = [f"data_dir={tiny_data}", f"base_model={tiny_models['tied']}", "max_steps=2", "batch_size=4",
              "mixed_precision=fp32", "eval_every=0", "save_every=0", "report_to=none"]
    assert cli_main(["train", f"output_dir={output}", "base_layers=1", *common]) == 0
    # `midillm train` rewrites config.json when it completes the bundle: the layer count survives.
    assert json.loads((output / "config.json").read_text())["base_layers"] == 1
    lm = MidiLM.from_pretrained(output, dtype="fp32")
    assert len(decoder_layers(lm.model)) == 1 and lm.model.config.num_hidden_layers == 1
    samples = lm.generate(num_samples=1, seed=0, max_new_tokens=48)
    assert samples[0].note_num() > 0

    capsys.readouterr()
    assert cli_main(["train", f"output_dir={tmp_path / 'too-deep'}", "base_layers=5", *common]) != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the weights' progress bar
    assert err == "error: base_layers must be between 1 and 2 for this base model, not 5"


def test_keeping_the_first_layers_computes_what_those_layers_computed(tiny_models):
    from transformers import GPT2Config, GPT2LMHeadModel

    from midillm.model.runtime import decoder_layers, keep_first_layers

    full = load_base_model(str(tiny_models["untied"])).eval()
    cut = load_base_model(str(tiny_models["untied"]), layers=1).eval()
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    with torch.no_grad():
        after_first_layer = full.model(input_ids=ids, output_hidden_states=True).hidden_states[1]
        # The cut model is the whole model's first layer, then the same final norm.
        assert torch.allclose(cut.model(input_ids=ids).last_hidden_state, full.model.norm(after_first_layer), atol=1e-5)
    # GPT-2 names its stack differently; its config says the new depth too.
    gpt2 = keep_first_layers(GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=50)), 2)
    assert len(decoder_layers(gpt2)) == 2 and gpt2.config.n_layer == 2
    assert gpt2(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 50)
