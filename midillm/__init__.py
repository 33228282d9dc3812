"""midillm: teach a pretrained language model to write music.

`MusicCodec` turns scores into LM token ids and back; `MidiLM` samples music from a fine-tuned
bundle. `MidiLM` is imported on first use so that `import midillm` stays light.
"""

from midillm.tokenization import MusicCodec
from midillm.version import __version__
from midillm.hub import pipeline as _pipeline  # noqa: F401 - registers the "midi-generation" pipeline task

__all__ = ["MidiLM", "MusicCodec", "__version__"]


def __getattr__(name: str):
    if name == "MidiLM":
        from midillm.decoding.generate import MidiLM

        return MidiLM
    raise AttributeError(f"module 'midillm' has no attribute {name!r}")
