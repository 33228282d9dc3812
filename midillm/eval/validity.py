"""Validity of generated samples: do they decode, do they have notes, which token errors.

`token_errors_by_type` follows `miditok.MusicTokenizer._tokens_errors` step by step; miditok
returns only the total, while a report wants the kinds apart: a token whose type may not
follow the previous one ("type"), a position that does not move forward in time ("time"), a
pitch played twice at one position by one program ("duplicate_note").
"""

from __future__ import annotations

from symusic import Score

__all__ = ["ERROR_TYPES", "token_errors_by_type", "sample_validity", "validity_summary"]

ERROR_TYPES = ("type", "time", "duplicate_note")


def token_errors_by_type(tokenizer, tokens: list[str]) -> dict[str, int]:
    """Errors of a sequence of base (not BPE) token strings, by kind; their sum equals miditok's
    `_tokens_errors`. Tokenizers that override miditok's check (MIDILike, MMM, PerTok) get
    their own total under "other"."""
    import miditok

    counts = dict.fromkeys(ERROR_TYPES, 0)
    if not tokens:
        return counts
    if type(tokenizer)._tokens_errors is not miditok.MusicTokenizer._tokens_errors:
        counts["other"] = int(tokenizer._tokens_errors(list(tokens)))
        return counts
    programs = tokenizer.config.programs
    graph = tokenizer.tokens_types_graph
    note_types = ["Pitch", "NoteOn", "PitchDrum"]
    if tokenizer.config.use_pitch_intervals:
        note_types += ["PitchIntervalTime", "PitchIntervalChord"]
    previous_type = tokens[0].split("_")[0]
    current_pos, current_program = -1, 0
    current_pitches = {p: [] for p in programs}
    previous_onset = dict.fromkeys(programs, -128)
    previous_chord = dict.fromkeys(programs, -128)
    if previous_type in note_types:
        current_pitches[current_program].append(int(tokens[0].split("_")[1]))
    elif previous_type == "Position":
        current_pos = int(tokens[0].split("_")[1])

    for index, token in enumerate(tokens[1:]):
        event_type, event_value = token.split("_")
        if event_type not in graph[previous_type]:
            counts["type"] += 1
        elif token == "Bar_None":
            current_pos = -1
            current_pitches = {p: [] for p in programs}
        elif event_type in ("TimeShift", "Time-Shift", "Rest"):
            current_pitches = {p: [] for p in programs}
        elif event_type in note_types:
            if event_type in ("Pitch", "NoteOn", "PitchDrum"):
                pitch = int(event_value)
                previous_onset[current_program] = previous_chord[current_program] = pitch
            elif event_type == "PitchIntervalTime":
                pitch = previous_onset[current_program] + int(event_value)
                previous_onset[current_program] = previous_chord[current_program] = pitch
            else:  # PitchIntervalChord
                pitch = previous_chord[current_program] + int(event_value)
                previous_chord[current_program] = pitch
            if tokenizer.config.remove_duplicated_notes and pitch in current_pitches[current_program]:
                counts["duplicate_note"] += 1
            else:
                current_pitches[current_program].append(pitch)
        elif event_type == "Position":
            # miditok's exception: Rest -> (TimeSig ->) Position may stay in place. Its
            # `tokens[ti - 1]` is two tokens back from the current one; kept as is.
            if (int(event_value) <= current_pos and previous_type != "Rest"
                    and not (previous_type == "TimeSig" and tokens[index - 1].split("_")[0] == "Rest")):
                counts["time"] += 1
            current_pos = int(event_value)
            current_pitches = {p: [] for p in programs}
        elif event_type == "Program":
            current_program = int(event_value)
        previous_type = event_type
    return counts


def sample_validity(codec, ids: list[int], whole_bars: bool = False) -> dict:
    """One generated id sequence: decodes?, notes, tokens and token errors by kind; `whole_bars`:
    a new piece, which the codec ends at its last bar line where the token budget cut it."""
    tokens = codec.music_tokens(ids)
    # With parts, each part is its own miditok stream; errors add up over the parts.
    streams = codec.part_streams(tokens).values() if getattr(codec, "parts", False) else [tokens]
    errors = dict.fromkeys(ERROR_TYPES, 0)
    for stream in streams:
        for kind, count in token_errors_by_type(codec.music_tokenizer, stream).items():
            errors[kind] += count
    try:
        score = codec.decode(ids, whole_bars=whole_bars)
        decoded, notes, error = True, score.note_num(), None
    except Exception as failure:  # noqa: BLE001 - any decoding failure makes the sample invalid
        score, decoded, notes, error = None, False, 0, f"{type(failure).__name__}: {failure}"
    return {"decoded": decoded, "notes": int(notes), "tokens": len(tokens), "errors": errors,
            "error": error, "score": score}


def validity_summary(samples: list[dict]) -> dict:
    """Shares over samples (each from `sample_validity`, or {"decoded", "notes"} for files)."""
    count = len(samples)
    decoded = sum(bool(sample["decoded"]) for sample in samples)
    with_notes = sum(bool(sample["decoded"]) and sample["notes"] > 0 for sample in samples)
    summary = {"samples": count, "decoded": decoded, "with_notes": with_notes,
               "decoded_share": decoded / count if count else float("nan"),
               "valid_share": with_notes / count if count else float("nan")}
    if any("errors" in sample for sample in samples):
        found = {kind for sample in samples for kind in sample.get("errors", {})}
        kinds = list(ERROR_TYPES) + sorted(found - set(ERROR_TYPES))
        totals = {kind: sum(sample.get("errors", {}).get(kind, 0) for sample in samples) for kind in kinds}
        tokens = sum(sample.get("tokens", 0) for sample in samples)
        summary["token_errors"] = totals
        summary["tokens"] = tokens
        summary["token_error_rate"] = sum(totals.values()) / tokens if tokens else 0.0
    return summary


def score_validity(score: Score | None) -> dict:
    """A sample given as a file: it decoded if it loaded."""
    return {"decoded": score is not None, "notes": score.note_num() if score is not None else 0}
