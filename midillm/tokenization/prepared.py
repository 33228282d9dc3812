"""A `midillm prepare` output folder: its layout, whether it is whole, and loading it.

    OUT/codec/         the codec (`MusicCodec.save_pretrained`)
    OUT/dataset/       the packed rows (`datasets` `save_to_disk`: train / validation / test)
    OUT/prepare.json   the report: files read and skipped, notes, tokens, splits, pieces
    OUT/partial/       only while a run is unfinished: its work so far (`PrepareWork`), which a
                       run with the same files and settings resumes from

`prepare` writes it; training, eval, the model card and the benchmarks read it, all through
`PreparedData`, so the layout is spelled out here only. A result is published whole
(`PreparedData.publish`): the folder holds a complete result or no report at all.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from midillm.errors import ConfigError

CODEC_DIR = "codec"
DATASET_DIR = "dataset"
REPORT_FILE = "prepare.json"
PARTS = (CODEC_DIR, DATASET_DIR, REPORT_FILE)
WORK_DIR = "partial"


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

    @property
    def work_dir(self) -> Path:
        return self.folder / WORK_DIR

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

    def publish(self, staging: Path) -> None:
        """Move a finished result (`staging` holding codec/, dataset/ and prepare.json, on this
        folder's file system) into this folder. The old report goes first and the new one comes
        last, so whenever the process dies the folder is a whole result or has no report, which
        `is_complete` and `check` refuse; renames only, so nothing is copied."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.report_path.unlink(missing_ok=True)
        for part in (CODEC_DIR, DATASET_DIR):
            target, retired = self.folder / part, staging / f"{part}.old"
            if target.exists():
                os.replace(target, retired)
            os.replace(staging / part, target)
            shutil.rmtree(retired, ignore_errors=True)
        os.replace(staging / REPORT_FILE, self.report_path)

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


class PrepareWork:
    """OUT/partial: what an unfinished `prepare` run has made, kept so that a run with the same
    arguments redoes only the rest. Each piece is written under a temporary name and renamed
    when whole, so a run killed at any point leaves only finished pieces under their names.

        partial/checks/NNNNN.json           check results per batch of source files (sources.check_files)
        partial/KEY/codec/                  the codec learned from the train sample
        partial/KEY/shards/SPLIT-NNNNN.arrow  a shard's packed rows (datasets' Arrow format)
        partial/KEY/shards/SPLIT-NNNNN.json   its report; written last, so it marks the shard done
        partial/KEY/published/              the result being assembled for `PreparedData.publish`

    KEY starts the fingerprint of the files' contents and the settings: another run's work,
    with other files or settings, is never mixed in.
    """

    def __init__(self, folder: str | Path, key: str):
        self.folder = Path(folder)
        self.build = self.folder / key[:16]

    @staticmethod
    def checks_dir(folder: str | Path) -> Path:
        """Where check results are recorded; they hold their own file stamps, so need no key."""
        return Path(folder) / "checks"

    @property
    def codec_dir(self) -> Path:
        return self.build / CODEC_DIR

    @property
    def shards_dir(self) -> Path:
        return self.build / "shards"

    @property
    def staging_dir(self) -> Path:
        return self.build / "published"

    def shard_rows(self, name: str) -> Path:
        return self.shards_dir / f"{name}.arrow"

    def shard_report(self, name: str) -> Path:
        return self.shards_dir / f"{name}.json"

    def is_done(self, name: str) -> bool:
        return self.shard_report(name).is_file() and self.shard_rows(name).is_file()

    def open(self) -> list[str]:
        """Make the folders, drop what a killed process left half-written and other runs' work;
        returns the other runs' keys that were dropped."""
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.shards_dir.glob("*.tmp"):
            leftover.unlink(missing_ok=True)
        dropped = []
        for other in self.folder.iterdir():
            if other.is_dir() and other != self.build and other.name != "checks":
                shutil.rmtree(other, ignore_errors=True)
                dropped.append(other.name)
        return dropped
