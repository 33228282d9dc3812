"""midillm: teach a pretrained language model to write music.

`MusicCodec` turns scores into LM token ids and back; later parts fine-tune, sample and evaluate.
"""

from midillm.tokenization import MusicCodec
from midillm.version import __version__

__all__ = ["MusicCodec", "__version__"]
