"""The Hub side of a bundle: the `midi-generation` pipeline, the model card, push and export.

    from midillm.hub import complete_bundle, prepare_bundle_for_hub, write_model_card, push_bundle, export_bundle

`import midillm` has `midillm.hub.pipeline` imported (and the task registered) as soon as
transformers' pipelines or auto classes load (`midillm.hub.registration`); the rest is imported
on first use.
"""

_LAZY = {
    "MidiGenerationPipeline": "pipeline", "MidiLLMConfig": "pipeline", "MidiLLMForCausalLM": "pipeline",
    "register": "pipeline",
    "complete_bundle": "bundle", "prepare_bundle_for_hub": "bundle", "export_bundle": "bundle",
    "export_merged": "bundle", "check_bundle": "bundle",
    "build_model_card": "card", "write_model_card": "card",
    "push_bundle": "push", "HubError": "push",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
