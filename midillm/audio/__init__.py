"""Audio in: a recording becomes a Score on the codec's beat grid.

Transcription is Spotify's Basic Pitch (its ONNX model, run on onnxruntime: no TensorFlow);
tempo and beats come from librosa. A leaf: it imports nothing of midillm above tokenization.
"""

from .transcribe import (AUDIO_SUFFIXES, MAX_AUDIO_SECONDS, AudioError, check_audio, codec_grid, is_audio_path,
                         load_audio, transcribe)

__all__ = ["AUDIO_SUFFIXES", "MAX_AUDIO_SECONDS", "AudioError", "check_audio", "codec_grid", "is_audio_path",
           "load_audio", "transcribe"]
