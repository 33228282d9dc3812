"""midillm: teach a pretrained language model to write music.

`MusicCodec` turns scores into LM token ids and back; `MidiLM` samples music from a fine-tuned
bundle. Both are imported on first use, so `import midillm` loads neither torch nor
transformers; it registers the "midi-generation" pipeline task for when transformers loads
(`midillm.hub.registration`).
"""

from midillm.hub.registration import register_when_transformers_loads
from midillm.version import __version__

__all__ = ["MidiLM", "MusicCodec", "__version__"]

register_when_transformers_loads()


def __getattr__(name: str):
    if name == "MidiLM":
        from midillm.decoding.generate import MidiLM

        return MidiLM
    if name == "MusicCodec":
        from midillm.tokenization import MusicCodec

        return MusicCodec
    raise AttributeError(f"module 'midillm' has no attribute {name!r}")
