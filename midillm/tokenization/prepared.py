"""A `midillm prepare` output folder: its layout, whether it is whole, and loading it.

    OUT/codec/         the codec (`MusicCodec.save_pretrained`)
    OUT/dataset/       the packed rows (`datasets` `save_to_disk`: train / validation / test)
    OUT/prepare.json   the report: files read and skipped, notes, tokens, splits, pieces

`prepare` writes it; training, eval, the model card and the benchmarks read it, all through
`PreparedData`, so the layout is spelled out here only.
"""

from __future__ import annotations

import json
from pathlib import Path

from midillm.errors import ConfigError

CODEC_DIR = "codec"
DATASET_DIR = "dataset"
REPORT_FILE = "prepare.json"
PARTS = (CODEC_DIR, DATASET_DIR, REPORT_FILE)


class PreparedData:
    """The folder `midillm prepare SOURCE --out FOLDER` wrote (or will write)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"PreparedData({str(self.folder)!r})"

    @property
    def codec_dir(self) -> Path:
        return self.folder / CODEC_DIR

    @property
    def dataset_dir(self) -> Path:
        return self.folder / DATASET_DIR

    @property
    def report_path(self) -> Path:
        return self.folder / REPORT_FILE

    def is_complete(self) -> bool:
        """A finished run: the report and the saved splits (prepare writes the report last)."""
        return self.report_path.is_file() and (self.dataset_dir / "dataset_dict.json").is_file()

    def check(self, *parts: str, name: str = "") -> PreparedData:
        """This folder, if it holds `parts` (default: all three); else one `ConfigError` line that
        says how to make it. `name` is what the user called the folder (a config key, say)."""
        for part in parts or PARTS:
            if not (self.folder / part).exists():
                named = f"{name} {self.folder}" if name else str(self.folder)
                raise ConfigError(f"{named} has no {part}: run `midillm prepare SOURCE --out {self.folder}` first")
        return self

    def read_report(self) -> dict:
        return json.loads(self.report_path.read_text())

    def load_codec(self):
        from .codec import MusicCodec

        return MusicCodec.from_pretrained(self.codec_dir)

    def load_dataset(self):
        from datasets import load_from_disk

        return load_from_disk(str(self.dataset_dir))

    def load(self, name: str = ""):
        """(codec, dataset splits, report), once the folder is checked to hold all three."""
        self.check(name=name)
        return self.load_codec(), self.load_dataset(), self.read_report()
