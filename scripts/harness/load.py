"""Loading what `midillm` wrote, the one place in scripts/ that knows where it lies: a
`midillm prepare` folder's report and pieces, and the base model with a codec's new token rows.
The folder layouts are midillm's own (`PreparedData`, `midillm.model.runtime`)."""

from __future__ import annotations

from pathlib import Path


def prepared_report(folder: str | Path) -> dict:
    """The report of a `midillm prepare` output folder: its splits, pieces and tokens per note."""
    from midillm.tokenization.prepared import PreparedData

    return PreparedData(folder).read_report()


def prepared_pieces(folder: str | Path, split: str) -> list[Path]:
    """The MIDI files of one split (train, validation, test) of a prepared folder, in its order."""
    return [Path(piece["path"]) for piece in prepared_report(folder)["pieces"] if piece["split"] == split]


def held_out_tokens_per_note(report: dict) -> float:
    """LM tokens per note over the validation and test splits of a prepare report: the pieces no
    model has trained on, the same ones for every variant (splits go by content hash)."""
    held_out = [report["splits"][split] for split in ("validation", "test")]
    return sum(split["music_tokens"] for split in held_out) / sum(split["notes"] for split in held_out)


def base_with_rows(codec, layers: int | None = None):
    """The codec's base model (its first `layers` decoder layers, as a bundle's config.json
    says) with the codec's new token rows, untrained: no adapter. Generation speed does not
    depend on what the rows have learned, and it is the untrained baseline of the retrieval
    benchmark; a bundle's merged model starts from it too."""
    from midillm.model.runtime import add_music_tokens, load_base_model

    model = load_base_model(codec.base_model, layers=layers)
    add_music_tokens(model, codec)
    return model
