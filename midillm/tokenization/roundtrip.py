"""How faithfully a codec round-trips a score: the share of notes that come back intact."""

from __future__ import annotations

from collections import Counter

from symusic import Score


def note_keys(score: Score, durations: bool = False) -> Counter:
    """Each note as (program or -1 for drums, pitch, onset in quarter notes), with its duration
    in quarter notes last where `durations` (drum hits excepted: a drum sounds its own length)."""
    keys = Counter()
    for track in score.tracks:
        program = -1 if track.is_drum else track.program
        for note in track.notes:
            key = (program, note.pitch, note.time / score.ticks_per_quarter)
            if durations and not track.is_drum:
                key += (note.duration / score.ticks_per_quarter,)
            keys[key] += 1
    return keys


def notes_kept(codec, score: Score, durations: bool = False) -> tuple[int, int]:
    """(notes that survive decode(encode(score)), notes in the score), judged after the
    tokenizer's own quantisation: same program or drum, same pitch, same quantised onset, and
    with `durations` the same quantised duration."""
    reference = note_keys(codec.music_tokenizer.preprocess_score(score.copy()), durations)
    decoded = note_keys(codec.decode(codec.encode(score)), durations)
    kept = sum((reference & decoded).values())
    return kept, score.note_num()
