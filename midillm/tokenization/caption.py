"""The caption: the text before a piece's music, written and read here and nowhere else.

A caption is "Label: value" lines, what the metadata knows first, then what the score says:

    Title: BWV 10.7                  (metadata: title, composer, genre)
    Composer: J.S. Bach
    Parts: Soprano, Alto, Tenor, Bass    (the played tracks' names, in part order)
    Key: G minor
    Time signature: 4/4
    Tempo: 100 BPM
    Instruments: 4 x Choir Aahs      ("N x Name": N played tracks of one General MIDI instrument)

`write_caption` is the one writer (`score_caption` hands it a score's fields), `caption_fields`
the one reader, `instruments_listed` the one reader of the "N x Name" syntax. Training rows and
prompts tokenize a caption with the LM's own tokenizer and cut it to `caption_budget` of a row
(`caption_ids`), so a prompt starts the way every training row did.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .roles import caption_role, name_says_nothing, track_role

if TYPE_CHECKING:
    from symusic import Score

DRUMS = -1  # the program number captions, the corpus profile and miditok give drums
DRUMS_NAME = "Drums"
# The metadata a caption opens with: (label, metadata key), in the order they are written.
# Corpus: the source a piece came from, where `prepare` was given several (`sources.list_sources`).
METADATA_FIELDS = (("Title", "title"), ("Composer", "composer"), ("Genre", "genre"), ("Corpus", "corpus"))
# The labels of what the score says, which are also the controls a request can set
# (`midillm.decoding.request`), in the order a caption writes them.
PARTS, KEY, TIME_SIGNATURE, TEMPO, INSTRUMENTS = "Parts", "Key", "Time signature", "Tempo", "Instruments"
# How busy the music is: the piece's notes per beat per part against its corpus's thirds
# (`CorpusProfile.density_of`), one of DENSITY_BINS.
DENSITY = "Density"
DENSITY_BINS = ("sparse", "medium", "dense")
FIELD_ORDER = tuple(label for label, _ in METADATA_FIELDS) + (PARTS, KEY, TIME_SIGNATURE, TEMPO, DENSITY, INSTRUMENTS)

_PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MAJOR_KEYS_BY_SHARPS = {-7: "Cb", -6: "Gb", -5: "Db", -4: "Ab", -3: "Eb", -2: "Bb", -1: "F",
                         0: "C", 1: "G", 2: "D", 3: "A", 4: "E", 5: "B", 6: "F#", 7: "C#"}
_MINOR_KEYS_BY_SHARPS = {-7: "Ab", -6: "Eb", -5: "Bb", -4: "F", -3: "C", -2: "G", -1: "D",
                         0: "A", 1: "E", 2: "B", 3: "F#", 4: "C#", 5: "G#", 6: "D#", 7: "A#"}


# ----------------------------------------------------------------------------- names


def pitch_name(pitch: int) -> str:
    """A MIDI pitch as a note name with its octave: 60 -> "C4"."""
    return f"{_PITCH_NAMES[pitch % 12]}{pitch // 12 - 1}"


def key_name(sharps: int, minor: bool) -> str | None:
    """A key signature (sharps, negative for flats; minor or major) as a caption names it:
    "G minor"; None for more than 7 sharps or flats."""
    names = _MINOR_KEYS_BY_SHARPS if minor else _MAJOR_KEYS_BY_SHARPS
    return f"{names[sharps]} {'minor' if minor else 'major'}" if sharps in names else None


def relative_key(name: str) -> str | None:
    """The key with this one's signature in the other mode ("A minor" -> "C major"); None for a
    name no caption can give (`known_key`)."""
    key = known_key(name)
    if key is None:
        return None
    tonic, mode = key.split()
    names = _MINOR_KEYS_BY_SHARPS if mode == "minor" else _MAJOR_KEYS_BY_SHARPS
    sharps = next(sharps for sharps, named in names.items() if named == tonic)
    return key_name(sharps, mode != "minor")


def key_names() -> list[str]:
    """Every key a caption can name: the major keys from 7 flats to 7 sharps, then the minor."""
    return [key_name(sharps, bool(minor)) for minor in (0, 1) for sharps in range(-7, 8)]


def known_key(name: str) -> str | None:
    """A key as a caption names it ("d minor", " D  Minor" -> "D minor"); None if no caption
    can name it (`key_names`)."""
    wanted = " ".join(name.split()).lower()
    return next((key for key in key_names() if key.lower() == wanted), None)


def key_tonic(name: str) -> tuple[int, bool]:
    """A key named as a caption names it -> (its tonic's pitch class, minor): "D minor" -> (2, True)."""
    tonic, mode = known_key(name).split()
    letter = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}[tonic[0]]
    return (letter + tonic.count("#") - tonic.count("b")) % 12, mode == "minor"


def tempo_value(bpm: float) -> str:
    """A tempo as a caption writes it: 120.4 -> "120 BPM"."""
    return f"{round(bpm)} BPM"


def read_tempo(value: str) -> float | None:
    """A caption's tempo back as BPM ("120 BPM" -> 120.0); None if it is not one."""
    try:
        return float(value.strip().removesuffix("BPM").strip())
    except ValueError:
        return None


@functools.cache
def _general_midi_names() -> tuple[str, ...]:
    from miditok.constants import MIDI_INSTRUMENTS

    return tuple(instrument["name"] for instrument in MIDI_INSTRUMENTS)


def instrument_name(program: int) -> str:
    """A General MIDI program's name as captions write it; `DRUMS` (-1) is "Drums"."""
    return DRUMS_NAME if program == DRUMS else _general_midi_names()[program]


def programs_named(names: Iterable[str]) -> list[int]:
    """The General MIDI programs (`DRUMS` for drums) of these instrument names, any case;
    names that are no instrument are left out."""
    programs = {name.lower(): program for program, name in enumerate(_general_midi_names())}
    found = set()
    for name in names:
        name = name.strip().lower()
        if name == DRUMS_NAME.lower():
            found.add(DRUMS)
        elif name in programs:
            found.add(programs[name])
    return sorted(found)


def instrument_program(name: str) -> int | None:
    """The General MIDI program (`DRUMS` for drums) of one instrument name, any case; None if
    it names no instrument."""
    name = " ".join(name.split()).lower()
    if name == DRUMS_NAME.lower():
        return DRUMS
    return next((program for program, known in enumerate(_general_midi_names()) if known.lower() == name), None)


def part_names(score: Score) -> list[str]:
    """A name for each played track, in part order: its own where it says something, else its
    role in the band (`roles.part_role`: Drums, Bass, Piano, Lead...; "Track7" says nothing)."""
    return [name if not name_says_nothing(name) else track_role(track)
            for name, track in ((" ".join(track.name.replace(",", " ").split()), track)
                                for track in score.tracks if track.note_num())]


def instruments_value(programs: Iterable[int]) -> str:
    """An "Instruments:" value naming each part's program in part order, a run of parts on one
    instrument as "N x Name": [-1, 33, 0, 0] -> "Drums, Electric Bass (finger), 2 x Acoustic
    Grand Piano". Read back part by part with `part_programs_listed`."""
    runs: list[list] = []
    for program in programs:
        if runs and runs[-1][0] == program:
            runs[-1][1] += 1
        else:
            runs.append([program, 1])
    return ", ".join(f"{count} x {instrument_name(program)}" if count > 1 else instrument_name(program)
                     for program, count in runs)


# ----------------------------------------------------------------------------- writing


def write_caption(fields: Mapping[str, str | None]) -> str:
    """The caption of these fields, in their order: one "Label: value" line for each field with
    a value. The one writer of the caption format."""
    return "".join(f"{label}: {value}\n" for label, value in fields.items() if value)


def with_fields(text: str | None, values: Mapping[str, str | None]) -> str:
    """The caption `text` with these fields set (a None value leaves its field as it is): a
    field it has keeps its place, a new one goes before the first field `FIELD_ORDER` puts after it."""
    fields = list(caption_fields(text).items())
    rank = {label: index for index, label in enumerate(FIELD_ORDER)}
    for label, value in values.items():
        if not value:
            continue
        labels = [name for name, _ in fields]
        if label in labels:
            fields[labels.index(label)] = (label, value)
            continue
        after = [index for index, name in enumerate(labels) if rank.get(name, -1) > rank.get(label, len(FIELD_ORDER))]
        fields.insert(after[0] if after else len(fields), (label, value))
    return write_caption(dict(fields))


def score_caption(score: Score, metadata: Mapping[str, str] | None = None, density: str | None = None) -> str:
    """A score's caption from what is known: metadata first, then what the score itself says;
    `density` (one of DENSITY_BINS) where the corpus measured its thirds (`CorpusProfile.density_of`)."""
    metadata = dict(metadata or {})
    fields = {label: metadata.get(key) for label, key in METADATA_FIELDS}
    played = [track for track in score.tracks if track.note_num()]
    # The parts' names (or roles) come early: a caption cut to the row's caption budget keeps them.
    if played:
        fields["Parts"] = ", ".join(part_names(score))
    key = metadata.get("key")
    if not key and len(score.key_signatures):
        signature = score.key_signatures[0]
        key = key_name(signature.key, bool(signature.tonality))
    fields["Key"] = key
    if len(score.time_signatures):
        signature = score.time_signatures[0]
        fields["Time signature"] = f"{signature.numerator}/{signature.denominator}"
    if len(score.tempos):
        fields["Tempo"] = tempo_value(score.tempos[0].qpm)
    fields[DENSITY] = density
    # Part by part, in the order of the Parts line: the caption says which part plays what.
    fields["Instruments"] = instruments_value(DRUMS if track.is_drum else track.program for track in played)
    return write_caption(fields)


def accompaniment_caption(given: Score, text: str | None, typical: str | None, keep_style: bool,
                          max_parts: int = 0) -> tuple[str, list[str]]:
    """The caption of an accompaniment (or an arrangement) of the `given` parts, and the names
    of all its parts, the given ones first.

    Its fields are the user's (`text`), then the given music's own key, metre and tempo, then
    the corpus's (`typical`: a training piece's caption, or the typical one; with `keep_style`,
    or where the user gives none), never a title. The parts to write are those its "Parts:" line
    names, else one per instrument its "Instruments:" line counts, else the corpus's other parts,
    else numbered parts up to the corpus's `max_parts`. A part named like a given one is the
    given one; a given part no name matches stands for the first other part of its role (kept
    drums and bass leave a caption's "Drums" and "Bass" unwritten)."""
    given_names = part_names(given)
    own = caption_fields(score_caption(given))
    user = caption_fields(text or "")
    style = caption_fields(typical or "") if keep_style or not user else {}
    # Each field in its place (`FIELD_ORDER`), as the training captions have them.
    fields = caption_fields(with_fields(write_caption(style), {label: own.get(label)
                                                               for label in ("Key", "Time signature", "Tempo")}))
    fields = caption_fields(with_fields(write_caption(fields), user))
    fields.pop("Title", None)
    taken = {name.lower() for name in given_names}
    listed = listed_names(fields.get("Parts", ""))
    others = [name for name in listed if name.lower() not in taken]
    programs = part_programs_listed(fields.get("Instruments", ""))
    program_of = {name.lower(): program for name, program in zip(listed, programs)} if len(programs) == len(listed) else {}
    played = [track for track in given.tracks if track.note_num()]
    for name, track in zip(given_names, played):
        if name.lower() in {other.lower() for other in listed}:
            continue
        role = caption_role(name, DRUMS if track.is_drum else int(track.program))
        same = next((other for other in others if caption_role(other, program_of.get(other.lower())) == role), None)
        if same is not None:
            others.remove(same)
    if not others and fields.get("Instruments"):  # one part per instrument named
        others = [name for count, name in instruments_listed(fields["Instruments"]) for _ in range(count)]
    if not others:
        others = [name for name in names_in_caption(typical) if name.lower() not in taken]
    if not others:  # nothing names them: as many parts as the corpus's pieces have
        most = max_parts or len(given_names) + 1
        others = [f"Part {number + 1}" for number in range(len(given_names), max(most, len(given_names) + 1))]
    fields["Parts"] = ", ".join(given_names + others)
    return write_caption(fields), given_names + others


def without_title(caption: str) -> str:
    """The caption with its Title line left out (each piece has its own, and a title would ask
    for that very piece): what a prompt can borrow from a piece's caption."""
    return write_caption({label: value for label, value in caption_fields(caption).items() if label != "Title"})


def typical_caption(captions: Iterable[str]) -> str:
    """Each caption field's most common value, in the fields' usual order; titles left out.
    Each field is counted on its own, so on a corpus of varied pieces the result may describe
    no piece (four parts, six instruments): a neutral context (retrieval embeds pieces under
    it), not a prompt to generate from (`CorpusProfile.captions` holds real ones)."""
    values: dict[str, Counter] = {}
    for caption in captions:
        for label, value in caption_fields(caption).items():
            if label != "Title":
                values.setdefault(label, Counter())[value] += 1
    return write_caption({label: counter.most_common(1)[0][0] for label, counter in values.items()})


def parts_agreeing(text: str | None) -> str | None:
    """The caption, without its "Instruments:" line where that line counts other parts than its
    "Parts:" line: a typical caption's fields are each the commonest on its own ("Parts: Track7,
    Track8, Track9, Track10" beside six instruments), and a prompt's parts must have one
    instrument each, or one for all."""
    fields = caption_fields(text)
    parts = listed_names(fields.get(PARTS, ""))
    instruments = part_programs_listed(fields.get(INSTRUMENTS, ""))
    if not parts or len(instruments) in (0, 1, len(parts)):
        return text
    fields.pop(INSTRUMENTS)
    return write_caption(fields)


# ----------------------------------------------------------------------------- reading


def caption_fields(text: str | None) -> dict[str, str]:
    """A caption's "Label: value" lines as {label: value} (labels as written, values stripped):
    the one reader of the caption format `write_caption` writes."""
    fields = {}
    for line in (text or "").splitlines():
        label, separator, value = line.partition(":")
        if separator and label.strip():
            fields[label.strip()] = value.strip()
    return fields


def caption_field(text: str | None, label: str) -> str:
    """One field of a caption, its label matched without case ("" without it)."""
    return next((value for name, value in caption_fields(text).items() if name.lower() == label.lower()), "")


def listed_names(value: str) -> list[str]:
    """The names of a comma-separated field ("Soprano, Alto" -> ["Soprano", "Alto"])."""
    return [name.strip() for name in value.split(",") if name.strip()]


def names_in_caption(text: str | None) -> list[str]:
    """The part names of a caption's "Parts:" line (empty without one)."""
    return listed_names(caption_field(text, "Parts"))


def instruments_listed(value: str) -> list[tuple[int, str]]:
    """An "Instruments:" value as (tracks, name) pairs: "2 x Violin, Cello" -> [(2, "Violin"),
    (1, "Cello")]. A count that is not a number counts one; empty items are left out."""
    instruments = []
    for item in value.split(","):
        count, times, name = item.strip().partition(" x ")
        if not times:
            count, name = "1", count
        if name.strip():
            instruments.append((int(count) if count.strip().isdigit() else 1, name.strip()))
    return instruments


def programs_listed(value: str) -> list[int]:
    """General MIDI programs that an "Instruments:" value names (`DRUMS` = -1 for drums)."""
    return programs_named(name for _, name in instruments_listed(value))


def part_programs_listed(value: str) -> list[int | None]:
    """An "Instruments:" value part by part, in part order: "Drums, 2 x Violin" -> [-1, 40, 40];
    None for a name that is no instrument."""
    return [instrument_program(name) for count, name in instruments_listed(value) for _ in range(count)]


def programs_named_in(text: str | None) -> list[int]:
    """General MIDI programs that a caption's "Instruments:" line names (`DRUMS` = -1 for drums)."""
    return programs_listed(caption_field(text, "Instruments"))


# ----------------------------------------------------------------------------- tokenizing


def caption_budget(seq_len: int) -> int:
    """The most caption tokens a row of `seq_len` holds (the rest is music); generation cuts
    its prompt caption the same way, so it starts as training rows do."""
    return seq_len // 4


def as_written(text: str) -> str:
    """A caption given by hand, ended as `write_caption` ends one: its lines, then one newline."""
    return text.strip() + "\n"


def caption_ids(lm_tokenizer, text: str, seq_len: int | None = None) -> list[int]:
    """A caption's LM ids (the LM's own text tokens, no special ones), cut to the caption budget
    of a row of `seq_len` (None: whole; training rows are cut as they are laid out)."""
    ids = lm_tokenizer(text, add_special_tokens=False).input_ids
    return ids if seq_len is None else ids[: caption_budget(seq_len)]
