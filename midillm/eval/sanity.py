"""Is a sample music a listener of its corpus would accept? Per-sample checks against a `CorpusProfile`.

Before any likelihood or feature number means anything, a sample must be *sane* for its corpus
(DESIGN.md, "Judging the music"): it has notes and time moves (two onsets or more), no onset
strikes more notes than the corpus's excerpts do (`crowding_limit`), no program strikes one pitch at
one onset more often than the corpus's voices do in unison (`max_unison`: two chorale voices on
one piano program often meet on a pitch; a cluster of repeated keys is a duplicate), time never
stalls longer than the corpus's longest gap between
onsets (from the piece's start too), no part stays on one pitch longer than the corpus's parts do, it plays only programs the corpus plays, no more of them
than a corpus piece has, and each program within the pitch range the corpus gives its General MIDI
family (`CorpusProfile.pitch_range`; `OUT_OF_RANGE_SHARE` of the notes may stray, as the corpus's
own do). A band is
heard part by part too: every part its caption asks for plays, on the instrument asked; no part
falls silent longer than the corpus's parts of its role (Drums, Bass, Piano...: `roles`) do, and
each part strikes about as many notes per beat as they do. Whether
a sample ended with `</music>` by itself or was cut by the token budget is reported beside the
sane share; it counts against sanity only with `require_ending=True`.

The same checks run on the held-out reference pieces: their sane share is a check of the
measure itself (near 100%; a few pieces may pass the corpus's 99th-percentile limits).

"Valid" (`validity.py`) keeps its narrow meaning: the sample decodes and has a note.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np
from symusic import Score

from midillm.tokenization.metre import bar_length
from midillm.tokenization.caption import DRUMS
from midillm.tokenization.profile import (OUT_OF_RANGE_SHARE, CorpusProfile, longest_same_pitch_beats,
                                          measure_corpus, part_activity, played_tracks)

__all__ = ["PROFILE_SOURCES", "REASONS", "crowding_limit", "sample_sanity", "sanity_summary", "bars_written", "corpus_profile"]

# Why a sample is not sane, in report order: key -> what a listener hears.
REASONS = {
    "no_notes": "no notes at all",
    "one_onset": "time does not move (fewer than 2 onsets)",
    "crowded_onset": "more notes at one onset than the corpus's excerpts have",
    "duplicate_notes": "one program strikes a pitch at one onset more often than the corpus's unisons",
    "stall": "a longer stretch without a new onset than the corpus has",
    "stuck_part": "a part stays on one pitch (held or repeated) longer than the corpus's parts do",
    "foreign_program": "an instrument the corpus never uses",
    "too_many_programs": "more instruments than a corpus piece has",
    "pitch_out_of_range": f"more than {OUT_OF_RANGE_SHARE:.0%} of the notes outside the range the corpus gives "
                          "their instrument's family",
    "missing_part": "a part the caption asks for does not play",
    "other_instrument": "a part plays another instrument than the caption asks for",
    "silent_part": "a part is silent longer than the corpus's parts of its role are",
    "part_density": "a part strikes more or fewer notes per beat than the corpus's parts of its role do",
    "no_ending": "cut by the token budget (no </music>)",
}
# Where the profile the samples are judged against comes from, as the report says it.
PROFILE_SOURCES = {
    "codec": "the corpus profile `prepare` measured on the train split (kept in the codec)",
    "held-out": "a profile measured on the held-out pieces themselves (this codec was written before "
                "corpus profiles existed), so the held-out pieces' own sane share checks little",
    "given": "the corpus profile given to `evaluate_sets`",
}
# Times compared in beats; grids make them exact, this only absorbs float rounding.
_EPSILON = 1e-6


def _tick_score(score: Score) -> Score:
    return score if str(score.ttype).endswith("Tick") else score.to("tick")


def bars_written(score: Score) -> int:
    """Bars from 0 to the end of the last note, following the time signatures (4/4 without one)."""
    score = _tick_score(score)
    ends = [int((notes["time"] + notes["duration"]).max()) for notes in
            (track.notes.numpy() for track in score.tracks if track.note_num())]
    if not ends:
        return 0
    end = max(ends)
    tpq = score.ticks_per_quarter
    signatures = sorted((int(sig.time), int(sig.numerator), int(sig.denominator)) for sig in score.time_signatures)
    if not signatures or signatures[0][0] > 0:
        signatures.insert(0, (0, 4, 4))
    bars = 0
    for index, (start, numerator, denominator) in enumerate(signatures):
        if start >= end:
            break
        stop = signatures[index + 1][0] if index + 1 < len(signatures) else end
        length = bar_length(numerator, denominator, tpq)
        if length > 0:
            bars += math.ceil((min(stop, end) - start) / length - _EPSILON)
    return max(bars, 1)


def crowding_limit(profile: CorpusProfile) -> int:
    """The most notes a sample may strike at one onset: the corpus's excerpts' most crowded onset
    (`excerpt_max_notes_per_onset`), a sample being about an excerpt long. The per-onset 99th
    percentile, which the sampler holds every onset to, failed a fifth of the corpus's own 8-bar
    excerpts: most excerpts hold an onset or two from that rarest 1% (docs/bands.md, "The most
    crowded onset, judged as an excerpt's"). Profiles measured before it: the per-onset cap."""
    return getattr(profile, "excerpt_max_notes_per_onset", 0) or profile.max_notes_per_onset


def _duplicates(keys: np.ndarray, allowed: int) -> int:
    """Notes beyond `allowed` strikes of one (program, pitch, onset)."""
    _, counts = np.unique(keys, axis=0, return_counts=True)
    return int(np.maximum(counts - max(allowed, 1), 0).sum())


def sample_sanity(score: Score | None, profile: CorpusProfile, generation: Mapping | None = None,
                  require_ending: bool = False) -> dict:
    """What a listener hears in one piece, against the corpus `profile`.

    `generation` is the sampler's record of the piece (`MidiLM.last_generation[i]`: "ended",
    "new_tokens", "masked_mass", and "part_programs": each part's instrument its caption asked
    for); None for files and reference pieces (ending and caption unknown).
    Returns the measures, `sane` and the `reasons` it is not (keys of `REASONS`).

    The band checks: every part the caption asks for plays, on the instrument asked (drums as
    a drum track); no part is silent longer than the corpus's parts of its role are
    (`CorpusProfile.role_rest_beats`); each part's notes per beat lie in its role's range
    (`role_notes_per_beat`). Roles and rests are measured by `profile.part_activity`, the
    function that measured the corpus.
    """
    generation = dict(generation or {})
    ended = generation.get("ended")
    result = {"sane": False, "reasons": [], "notes": 0, "bars": 0, "onsets": 0, "max_notes_per_onset": 0,
              "mean_notes_per_onset": math.nan, "duplicate_notes": 0, "longest_gap_beats": math.nan,
              "first_onset_beats": math.nan, "same_pitch_beats": 0.0, "programs": [], "foreign_programs": [],
              "pitches_out_of_range": 0, "ended": None if ended is None else bool(ended),
              "new_tokens": generation.get("new_tokens"), "masked_mass": generation.get("masked_mass", math.nan)}
    reasons = result["reasons"]
    onset_parts, keys, programs = [], [], set()
    if score is not None:
        score = _tick_score(score)
        tpq = score.ticks_per_quarter
        for program, notes in played_tracks(score):
            programs.add(program)
            onset_parts.append(notes["time"].astype(np.int64))
            keys.append(np.stack([np.full(len(notes["time"]), program, dtype=np.int64),
                                  notes["pitch"].astype(np.int64), notes["time"].astype(np.int64)], axis=1))
            low, high = profile.pitch_range(program) or (0, 127)
            result["pitches_out_of_range"] += int(((notes["pitch"] < low) | (notes["pitch"] > high)).sum())
    if onset_parts:
        times = np.concatenate(onset_parts)
        onsets, per_onset = np.unique(times, return_counts=True)
        gaps = np.diff(np.concatenate([[0], onsets])) / tpq
        result.update(
            notes=int(times.size), bars=bars_written(score), onsets=int(onsets.size),
            max_notes_per_onset=int(per_onset.max()), mean_notes_per_onset=float(per_onset.mean()),
            duplicate_notes=_duplicates(np.concatenate(keys), getattr(profile, "max_unison", 1)),
            longest_gap_beats=float(gaps.max()), first_onset_beats=float(onsets[0] / tpq),
            same_pitch_beats=longest_same_pitch_beats(score))
    result["programs"] = sorted(programs)
    result["foreign_programs"] = sorted(program for program in programs if program not in profile.programs)
    result.update(_band_checks(score, profile, generation.get("part_programs")))

    if result["notes"] == 0:
        reasons.append("no_notes")
    elif result["onsets"] < 2:
        reasons.append("one_onset")
    if result["max_notes_per_onset"] > crowding_limit(profile):
        reasons.append("crowded_onset")
    if result["duplicate_notes"]:
        reasons.append("duplicate_notes")
    if result["notes"] and result["longest_gap_beats"] > profile.max_gap_beats + _EPSILON:
        reasons.append("stall")
    # Profiles measured before this limit existed hold 0: not checked.
    limit = getattr(profile, "max_same_pitch_beats", 0.0)
    if limit and result["same_pitch_beats"] > limit + _EPSILON:
        reasons.append("stuck_part")
    if result["foreign_programs"]:
        reasons.append("foreign_program")
    if len(programs) > profile.max_programs_per_piece:
        reasons.append("too_many_programs")
    if result["pitches_out_of_range"] > OUT_OF_RANGE_SHARE * result["notes"]:
        reasons.append("pitch_out_of_range")
    if result["parts_asked"] and result["parts_played"] < result["parts_asked"]:
        reasons.append("missing_part")
    if result["other_instruments"]:
        reasons.append("other_instrument")
    if result["silent_parts"]:
        reasons.append("silent_part")
    if result["parts_out_of_density"]:
        reasons.append("part_density")
    if require_ending and result["ended"] is False:
        reasons.append("no_ending")
    result["sane"] = not reasons
    return result


def _band_checks(score: Score | None, profile: CorpusProfile, asked: list[int] | None) -> dict:
    """The parts against what the caption asked (`asked`: each part's program, -1 for drums;
    None: nothing asked) and against the corpus's parts of their roles."""
    tracks = [track for track in score.tracks if track.note_num()] if score is not None else []
    written = [DRUMS if track.is_drum else int(track.program) for track in tracks]
    activity = part_activity(_tick_score(score)) if tracks else []
    rests, densities = getattr(profile, "role_rest_beats", {}) or {}, getattr(profile, "role_notes_per_beat", {}) or {}
    # Rounded as the profile keeps its limits, so a part exactly like the corpus's is within them.
    activity = [(role, round(rest, 4), round(density, 4)) for role, rest, density in activity]
    parts = [{"role": role, "longest_rest_beats": rest, "notes_per_beat": density,
              "silent": role in rests and rest > rests[role] + _EPSILON,
              "out_of_density": role in densities and not densities[role][0] - _EPSILON <= density
              <= densities[role][1] + _EPSILON}
             for role, rest, density in activity]
    return {
        "parts_asked": len(asked) if asked else None,
        "parts_played": len(tracks),
        # Instruments written = instruments asked: the parts' programs, part by part (an ended
        # piece plays every asked part; one cut short may lack the last).
        "instruments_as_asked": written == list(asked) if asked else None,
        "other_instruments": sorted((Counter(written) - Counter(asked or [])).elements()) if asked else [],
        "drums_asked": DRUMS in asked if asked else None,
        "drums_written": DRUMS in written,
        "silent_parts": sum(part["silent"] for part in parts),
        "parts_out_of_density": sum(part["out_of_density"] for part in parts),
        "parts": parts,
    }


def sanity_summary(checks: list[dict]) -> dict:
    """Shares and means over a set's `sample_sanity` results.

    `ended_share` counts the samples whose ending is known (None when none is);
    `mean_notes_per_onset` pools every onset of the set, as the corpus profile does.
    """
    count = len(checks)
    sane = sum(check["sane"] for check in checks)
    endings = [check["ended"] for check in checks if check.get("ended") is not None]
    onsets = sum(check["onsets"] for check in checks)
    notes = sum(check["notes"] for check in checks if check["onsets"])
    masked = [check["masked_mass"] for check in checks
              if check.get("masked_mass") is not None and not math.isnan(check["masked_mass"])]
    tally = Counter(reason for check in checks for reason in check["reasons"])
    asked = [check for check in checks if check.get("parts_asked")]
    drums_asked = [check for check in asked if check.get("drums_asked")]
    return {
        "samples": count,
        "sane": sane,
        "sane_share": sane / count if count else math.nan,
        "ended": sum(endings),
        "ended_share": sum(endings) / len(endings) if endings else None,
        "mean_notes_per_onset": notes / onsets if onsets else math.nan,
        "max_notes_per_onset": max((check["max_notes_per_onset"] for check in checks), default=0),
        "duplicate_notes": sum(check["duplicate_notes"] for check in checks),
        "mean_bars": float(np.mean([check["bars"] for check in checks])) if checks else math.nan,
        "mean_masked_mass": float(np.mean(masked)) if masked else None,
        # The band checks over the set: None where no sample's caption asked for parts.
        "instruments_as_asked_share": (sum(bool(check["instruments_as_asked"]) for check in asked) / len(asked)
                                       if asked else None),
        "drums_when_asked_share": (sum(check["drums_written"] for check in drums_asked) / len(drums_asked)
                                   if drums_asked else None),
        "silent_parts": sum(check.get("silent_parts", 0) for check in checks),
        "reasons": {reason: tally[reason] for reason in REASONS if tally[reason]},
    }


def corpus_profile(codec, reference: Iterable[Score]) -> tuple[CorpusProfile, str]:
    """The corpus profile to judge against, and where it comes from: the codec's (measured on the
    train split by `prepare`), or, for codecs written before profiles existed, one measured on
    the held-out `reference` pieces."""
    profile = getattr(codec, "corpus", None) if codec is not None else None
    if profile is not None:
        return profile, "codec"
    return measure_corpus(list(reference)), "held-out"
