"""The `midi-generation` task for `transformers.pipeline`, registered when midillm is imported.

    import midillm                                    # registers the task
    from transformers import pipeline
    pipe = pipeline("midi-generation", model="bundle/or/owner-name")
    pipe("Composer: J.S. Bach", max_new_tokens=256)   # [{"score": Score, "midi": bytes, "ids": [...]}]

How transformers gets from a folder to this pipeline:

- `pipeline()` loads the model before it builds the pipeline, with the task's model classes.
  A plain auto class cannot load a bundle (the base model, the new token rows and the adapter
  come from three places), so the registered model class is `MidiLLMForCausalLM`, whose
  `from_pretrained` is `MidiLM.from_pretrained`: it returns the merged causal LM with the
  `MidiLM` (codec, grammar) attached, which the pipeline then uses.
- Every bundle (`midillm train` writes it, see `midillm.bundle_files`) has a `config.json` of
  model type `midillm` with `auto_map` and `custom_pipelines` pointing at `midi_generation.py`,
  so `pipeline("midi-generation", model=..., trust_remote_code=True)` works without importing
  midillm first. With midillm imported, its own (registered) `MidiLLMConfig` is used, which
  leaves `custom_pipelines` out: transformers would otherwise insist on `trust_remote_code`
  for a task the installed package already provides.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, Pipeline, PretrainedConfig, PreTrainedModel

from midillm.bundle_files import MODEL_TYPE, TASK

# Keyword arguments of the pipeline call besides the sampling settings (the fields of
# `SamplingSettings`) and the controls (`CONTROL_NAMES`, `MusicRequest`'s control fields): the
# caption, then the rest of a `MusicRequest`.
_PROMPT_PARAMETERS = ("text",)
_REQUEST_PARAMETERS = ("task", "num_samples", "seed", "constrain", "strict_voice_leading", "tracks")


class MidiLLMConfig(PretrainedConfig):
    """`config.json` of a Hub-ready bundle: which base model, and where the remote code is."""

    model_type = MODEL_TYPE
    # The copy in a bundle's midi_generation.py sets this: only remote code reads custom_pipelines.
    keep_custom_pipelines = False

    def __init__(self, base_model_name_or_path: str | None = None, **kwargs):
        if not self.keep_custom_pipelines:
            kwargs.pop("custom_pipelines", None)
        self.base_model_name_or_path = base_model_name_or_path
        super().__init__(**kwargs)


class MidiLLMForCausalLM(PreTrainedModel):
    """Loader only: `from_pretrained` returns the bundle's merged causal LM (a transformers model),
    with its `MidiLM` attached as `model.midi_lm`. It is never instantiated itself."""

    config_class = MidiLLMConfig

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, dtype="auto", **kwargs):
        from midillm.decoding.generate import MidiLM

        midi_lm = MidiLM.from_pretrained(str(pretrained_model_name_or_path), dtype=dtype or "auto")
        model = midi_lm.model
        model.midi_lm = midi_lm
        return model


def _as_prompt(inputs):
    """Pipeline input -> (caption text, MIDI prompt). A str is a caption unless it names a MIDI or
    audio file."""
    from symusic import Score

    if inputs is None or (isinstance(inputs, str) and not inputs.strip()):
        return None, None
    if isinstance(inputs, (bytes, bytearray)):
        return None, bytes(inputs)
    if isinstance(inputs, Score) or (hasattr(inputs, "tracks") and hasattr(inputs, "dump_midi")):
        return None, inputs
    from midillm.audio import is_audio_path

    named_file = isinstance(inputs, str) and (inputs.lower().endswith((".mid", ".midi")) or is_audio_path(inputs))
    if isinstance(inputs, Path) or named_file:  # a MIDI file, or a recording (transcribed first)
        if not Path(inputs).is_file():
            raise FileNotFoundError(f"prompt file not found: {inputs}")
        return None, str(inputs)
    if isinstance(inputs, str):
        return inputs, None
    raise TypeError(f"midi-generation takes a caption, a MIDI path, MIDI bytes, a symusic Score or "
                    f"nothing, not {type(inputs).__name__}")


class MidiGenerationPipeline(Pipeline):
    """Caption text, a MIDI file / bytes / Score or a recording to continue, or nothing -> generated scores.

    Call parameters are those of a `MusicRequest` (task, num_samples, seed, constrain, tracks,
    text, and the controls: key, time_signature, tempo, parts, programs, bars, key_bias) and the
    fields of `SamplingSettings`;
    sampling values not given are the bundle's (`generation_config.json`, else the defaults).
    `task="infill"` (with `bars="5-8"`), `"accompany"` (with `tracks=[...]`) or `"arrange"` (with
    `text=` the new caption) work on the MIDI given as input; `text=` also sets the caption of a
    continuation. Every call goes through `MidiLM.run`, as the command and the studio do.
    Each output is `{"score": symusic.Score, "midi": bytes, "ids": list[int] | None}` (no ids for
    the tasks on given music, whose scores are assembled from given and written bars).
    """

    # The codec carries the LM tokenizer; transformers need not look for one.
    _load_tokenizer = False
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def __init__(self, model, *args, device=None, **kwargs):
        from midillm.decoding.generate import MidiLM

        if isinstance(model, MidiLM):
            midi_lm = model
        elif getattr(model, "midi_lm", None) is not None:
            midi_lm = model.midi_lm
        else:
            raise ValueError("the midi-generation pipeline needs a midillm bundle; load it with "
                             'pipeline("midi-generation", model=PATH_OR_HUB_ID) or pass a MidiLM')
        self.midi_lm = midi_lm
        kwargs.setdefault("tokenizer", midi_lm.codec.lm_tokenizer)
        # MidiLM samples on the device its model is on; do not let the pipeline move it to cuda:0.
        super().__init__(midi_lm.model, *args, device=midi_lm.model.device if device is None else device,
                         **kwargs)

    def __call__(self, inputs=None, *args, **kwargs):
        return super().__call__(inputs, *args, **kwargs)

    def _sanitize_parameters(self, **kwargs):
        from midillm.decoding.request import CONTROL_NAMES, SAMPLING_NAMES

        request_parameters = _REQUEST_PARAMETERS + CONTROL_NAMES
        unknown = set(kwargs) - set(_PROMPT_PARAMETERS) - set(request_parameters) - set(SAMPLING_NAMES)
        if unknown:
            raise TypeError(f"midi-generation got unknown parameter(s): {', '.join(sorted(unknown))}")
        preprocess = {key: kwargs[key] for key in _PROMPT_PARAMETERS if key in kwargs}
        forward = {key: kwargs[key] for key in request_parameters if key in kwargs}
        forward["sampling"] = {key: kwargs[key] for key in SAMPLING_NAMES if key in kwargs}
        return preprocess, forward, {}

    def preprocess(self, inputs, text=None):
        caption, prompt = _as_prompt(inputs)
        return {"music": prompt, "text": text if text is not None else caption}

    def _forward(self, model_inputs, **request):
        from midillm.decoding.request import MusicRequest

        return {"samples": self.midi_lm.run(MusicRequest(**model_inputs, **request))}

    def postprocess(self, model_outputs):
        from midillm.decoding.export import to_midi_bytes

        return [{"score": sample.score, "midi": to_midi_bytes(sample.score), "ids": sample.ids}
                for sample in model_outputs["samples"]]


def register() -> None:
    """Make `pipeline("midi-generation")`, `AutoConfig` and `AutoModelForCausalLM` know bundles."""
    from transformers.pipelines import PIPELINE_REGISTRY

    AutoConfig.register(MODEL_TYPE, MidiLLMConfig, exist_ok=True)
    AutoModelForCausalLM.register(MidiLLMConfig, MidiLLMForCausalLM, exist_ok=True)
    registered = PIPELINE_REGISTRY.supported_tasks.get(TASK, {})
    if registered.get("impl") is not MidiGenerationPipeline:
        PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=MidiGenerationPipeline,
                                            pt_model=MidiLLMForCausalLM)


register()
