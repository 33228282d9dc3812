"""What a user asks a model for, checked once: the request every door builds.

The `midillm` command, the `midi-generation` pipeline and the studio each turn what they were
given into a `MusicRequest` and hand it to `MidiLM.run`; nothing else turns a request into a
call. A request is checked when it is made, before any model loads, so a bad value is one line
at the door it came through. The sampling settings are the fields of `SamplingSettings`, named
here once: the command's flags and the pipeline's keywords are read off its fields.

The controls (what the piece is to be: key, metre, tempo, parts, instruments, length, density, and the
key-aware bias) are the fields of `MusicRequest` marked `_control`, named here once in the same
way (`CONTROL_NAMES`): the command's flags, the pipeline's keywords and the studio's form are
read off them. A control is given as a field or, for a new piece, in the caption (its "Key",
"Time signature", "Tempo", "Density", "Parts", "Instruments" lines); a field given wins over the caption's
line, and the caption the model is prompted with carries every control given (`prompt_caption`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from midillm.tokenization import caption as captions
from midillm.tokenization.roles import program_role
from midillm.tokenization.rows import TASKS


class TaskError(ValueError):
    """A task the model cannot do, or a request it cannot be done on; one line for the user."""


# Each layout's temperature (`SamplingSettings.for_layout`; docs/benchmarks.md, "Sampling
# temperature"). The onsets layout: 1.0 until 2026-12-06, when an 80-step model looped at 0.7 (an
# inner voice striking one pitch at onset after onset, ~65% of a part's notes repeats). The
# 1,000-step model of the cheaper steps no longer loops (repeats 17% at 1.0, 19% at 0.85, 21% at
# 0.7; Bach 14%), and at 0.85 a chord sounds on 80% of beats against 74% at 1.0 (Bach 89%), all
# 32 samples sane; at 0.7, 86%, but fewer pitches used (23 against Bach's 28), which a classifier
# reads (0.87 against 0.80 at 0.85).
_LAYOUT_TEMPERATURE = {"onsets": 0.85, "bars": 0.7}

# `SamplingSettings.key_guidance`: on the fresh-clone demo bundle of 2026-12-06 (935 steps), 48
# held-out captions in six keys (scripts/bench_control.py), the exact key asked came out 46% of
# the time unguided, 52% at 3, 56% at 5, 62% at 10, 79% at 20 (96 captions: 49% unguided, 66% at
# 10); eval's 32 samples guided at 10 kept their chords on the beat (83% against 84%) and their
# pitch classes (entropy 2.87 against 2.92, Bach 3.00), where the key-aware bias narrows them to
# 2.58; at 20 the model alone was told from Bach 97% of the time (docs/control.md, "Guidance by
# the relative key"). Sampling takes 1.1x (batch 1) to 1.2x (8 samples) the time.
KEY_GUIDANCE = 10.0

# Each sampling value's rule, as (holds, what it must be): `SamplingSettings` checks its own
# values with these, and a request checks the values it changes with the same rules.
_SAMPLING_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "max_new_tokens": (lambda value: value >= 1, "must be at least 1"),
    "temperature": (lambda value: value > 0, "must be above 0"),
    "top_k": (lambda value: value >= 0, "must be 0 (off) or more"),
    "top_p": (lambda value: 0 < value <= 1, "must be in (0, 1]"),
    "min_p": (lambda value: 0 <= value < 1, "must be in [0, 1)"),
    "repetition_penalty": (lambda value: value > 0, "must be above 0"),
    "key_guidance": (lambda value: value >= 1, "must be 1 (off) or more"),
}


def _setting(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass
class SamplingSettings:
    """How to sample; each value is validated with a one-line error.

    The one home of the sampling names and defaults: the command line, the pipeline, the studio,
    eval, the demo and the model card take theirs from here. A bundle's `generation_config.json`
    is written from these fields (`save_pretrained`) and read back over them (`from_pretrained`),
    so a bundle may carry its own.
    """

    max_new_tokens: int = _setting(512, "Length limit in LM tokens")
    # The model's own distribution; `for_layout` gives each layout the temperature measured best.
    temperature: float = _setting(1.0, "Sampling temperature, > 0")
    top_k: int = _setting(0, "Keep the K most likely tokens; 0 = off")
    top_p: float = _setting(0.95, "Nucleus sampling mass in (0, 1]")
    min_p: float = _setting(0.0, "Drop tokens below this share of the top one")
    repetition_penalty: float = _setting(1.0, "> 1 discourages repeats")
    # Classifier-free guidance (as MusicGen samples) of an asked key, with the caption in the
    # relative key as the negative prompt: the model is also run on that caption, and each step's
    # logits become negative + scale x (asked - negative). The key is the control the model learns
    # least from its caption (it drifts to the relative key, which shares its notes in the common
    # key); guidance makes what it did learn count more, at twice the rows a step. Named apart
    # from transformers' `guidance_scale`, which a plain `model.generate` would act on.
    key_guidance: float = _setting(KEY_GUIDANCE, "How strongly an asked key is followed: the model is also run "
                                                 "on the caption in the relative key and pushed away from it "
                                                 "by this scale; 1 = off; a drawn caption's key is not guided")

    def __post_init__(self):
        self.check_changes({setting.name: getattr(self, setting.name) for setting in fields(self)})

    @staticmethod
    def check_changes(changes: dict) -> dict:
        """`changes` (name -> value; None: unchanged) with the unchanged left out, each value
        checked: one line for a bad value, a TypeError for a name that is not a setting."""
        unknown = set(changes) - set(_SAMPLING_RULES)
        if unknown:
            raise TypeError(f"unknown sampling setting(s): {', '.join(sorted(unknown))}")
        given = {name: value for name, value in changes.items() if value is not None}
        for name, value in given.items():
            holds, rule = _SAMPLING_RULES[name]
            if not holds(value):
                raise ValueError(f"{name} {rule}, not {value}")
        return given

    def warpers(self):
        from transformers import (LogitsProcessorList, MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                                  TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

        warpers = LogitsProcessorList()
        if self.repetition_penalty != 1.0:
            warpers.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        if self.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k:
            warpers.append(TopKLogitsWarper(self.top_k))
        if self.top_p < 1.0:
            warpers.append(TopPLogitsWarper(self.top_p))
        if self.min_p:
            warpers.append(MinPLogitsWarper(self.min_p))
        return warpers

    def updated(self, **values) -> SamplingSettings:
        """A copy with `values` in place; a None value keeps this one's, so optional arguments
        can be passed straight through. An unknown name is a TypeError."""
        return replace(self, **self.check_changes(values))

    @classmethod
    def for_layout(cls, layout: str) -> SamplingSettings:
        """The defaults for a codec's layout: the bars layout samples at 0.7, where a voice's
        notes carry their own lengths and at 1.0 it rests or overlaps after 16% and 18% of them;
        the onsets layout at 0.85, where a chord sounds on more beats than at 1.0 and the voices
        keep Bach's variety of pitches, which they lose at 0.7 (docs/benchmarks.md, "Sampling
        temperature"). Another layout: the model's own distribution."""
        return cls(temperature=_LAYOUT_TEMPERATURE.get(layout, 1.0))

    @classmethod
    def from_pretrained(cls, folder: str | Path, defaults: SamplingSettings | None = None) -> SamplingSettings:
        """The sampling of a bundle's `generation_config.json` over `defaults` (None: the field
        defaults; `for_layout` gives a codec's); no file: the defaults alone."""
        from midillm.bundle_files import GENERATION_CONFIG

        defaults = defaults or cls()
        try:
            saved = json.loads((Path(folder) / GENERATION_CONFIG).read_text())
        except (OSError, ValueError):
            return defaults
        return defaults.updated(**{name: saved.get(name) for name in _SAMPLING_RULES})

    def save_pretrained(self, folder: str | Path, eos_token_id: int, pad_token_id: int | None = None) -> Path:
        """Write `generation_config.json` (transformers' `GenerationConfig`) with these settings."""
        from dataclasses import asdict

        from transformers import GenerationConfig

        from midillm.bundle_files import GENERATION_CONFIG

        GenerationConfig(do_sample=True, eos_token_id=eos_token_id,
                         pad_token_id=eos_token_id if pad_token_id is None else pad_token_id,
                         **asdict(self)).save_pretrained(folder, config_file_name=GENERATION_CONFIG)
        return Path(folder) / GENERATION_CONFIG


SAMPLING_NAMES = tuple(setting.name for setting in fields(SamplingSettings))

# The key-aware bias's strength when it is switched on without one (`--key-bias` alone,
# key_bias=True): each note of the asked key's tonic triad, or a minor key's leading note, that a
# row strikes raises its logit by this much (`grammar.key_bias_rows`), so at temperature 1.0
# such a note is 4.5 times likelier than the model made it. With the common key that settles the
# mode, the one thing a key asks that the model does not keep by construction: 94% of 48
# requests in the exact key on the 1,000-step bundle of 2026-12-06, all sane, and the model's
# chromatic notes kept (docs/control.md, "The key-aware bias without the out-of-scale half").
# Until then 4.5, of which a third raised the triad and the whole lowered each out-of-scale note.
KEY_BIAS = 1.5
# The density-aware bias's strength when switched on without one (`--density-bias` alone):
# while the piece so far is sparser than the asked bin's middle (notes per beat per part), each
# way of moving time on loses this much logit per beat it skips, times how far off the piece is
# (at most 1: the whole target); busier than asked, long moves gain as much. A state's bias,
# not a static one on note lengths, which would open rests inside the voices (docs/control.md).
# Strong because the bins are narrow (the chorales' thirds: 1.03 and 1.16 notes per beat per
# part) and the bias fades as the piece nears its target: at 2, 2 of 12 requests landed in
# their bin, at 8, 8 of 12 against 3 of 12 learned (a 120-step bundle, docs/control.md).
DENSITY_BIAS = 8.0
# A tempo a request may ask for, in BPM (the studio's form and the command alike).
TEMPO_RANGE = (10.0, 400.0)


def parse_bar_range(bars: tuple[int, int] | list[int] | str) -> tuple[int, int]:
    """"5-8", "5 to 8", "5–8", "5" or (5, 8) -> (5, 8): bars counted from 1, both included;
    one line if not."""
    try:
        if isinstance(bars, str):
            match = re.fullmatch(r"\s*(\d+)\s*(?:(?:-|–|to)\s*(\d+)\s*)?", bars)
            if not match:
                raise ValueError(bars)
            first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        else:
            first, last = (int(value) for value in bars)
    except (TypeError, ValueError):
        raise TaskError(f"bars must look like 5-8 (first and last bar, counted from 1), not {bars!r}") from None
    if first < 1 or last < first:
        raise TaskError(f"bars {first}-{last} is not a range of bars counted from 1 (first <= last)")
    return first, last


def _control(help_text: str, label: str | None = None, metavar: str | None = None):
    """A control: optional (None: the caption's, else the model's choice); `label` is the caption
    line that carries it, `help` the one line the command, pipeline and studio show for it."""
    return field(default=None, metadata={"control": True, "help": help_text, "label": label,
                                         "metavar": metavar})


def parse_time_signature(value: str) -> str:
    """"3/4" (spaces allowed) -> "3/4"; one line if it is not a metre."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(value))
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise TaskError(f"time_signature must look like 3/4 (beats / note value), not {value!r}")
    return f"{int(match.group(1))}/{int(match.group(2))}"


def parse_parts(value) -> list[str] | int:
    """Parts as names ("Soprano, Alto" or a list) or a count (4, "4"); one line if neither."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str, list, tuple)):
        raise TaskError(f"parts is a count (e.g. 4) or names (e.g. \"Soprano, Alto\"), not {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise TaskError(f"parts must be at least 1, not {value}")
        return value
    names = captions.listed_names(value) if isinstance(value, str) else [str(name).strip() for name in value]
    if not [name for name in names if name]:
        raise TaskError("parts names no part: give a count (e.g. 4) or names (e.g. \"Soprano, Alto\")")
    return [name for name in names if name]


def _pitch(value) -> int:
    """A MIDI pitch from a number ("40") or a note name ("E2", "C#4", "Bb3"; middle C is C4)."""
    import pretty_midi

    text = str(value).strip()
    pitch = int(text) if text.isdigit() else pretty_midi.note_name_to_number(text)
    if not 0 <= pitch <= 127:
        raise ValueError(text)
    return pitch


def parse_registers(value) -> dict[str, tuple[int, int]]:
    """Each part's pitch range: "Bass=E2-C4, Soprano=C4-A5" (parts by name or by number from 1;
    note names or MIDI numbers) or a mapping part -> "E2-C4" / (40, 60) -> {part: (low, high)};
    one line for a malformed one."""
    example = 'registers look like "Bass=E2-C4, Soprano=C4-A5" (a part\'s name or number, its lowest and highest note)'
    if isinstance(value, str):
        pairs = []
        for item in filter(None, (piece.strip() for piece in value.split(","))):
            part, equals, bounds = item.partition("=")
            if not equals:
                raise TaskError(f"{example}, not {item!r}")
            pairs.append((part, bounds))
    elif isinstance(value, dict):
        pairs = list(value.items())
    else:
        raise TaskError(f"{example}, not {value!r}")
    registers = {}
    for part, bounds in pairs:
        part = str(part).strip()
        if isinstance(bounds, str):
            match = re.fullmatch(r"\s*(\S+?)\s*(?:-|\u2013|to)\s*(\S+)\s*", bounds)
            bounds = match.groups() if match else ()
        try:
            low, high = (_pitch(bound) for bound in bounds)
        except ValueError:
            raise TaskError(f"{example}, not {part}={bounds!r}") from None
        if not part or low > high:
            raise TaskError(f"{example}: {part or '(no part)'}'s lowest note is above its highest")
        registers[part] = (low, high)
    if not registers:
        raise TaskError(f"{example}; none given")
    return registers


def resolve_registers(registers: dict[str, tuple[int, int]] | None, part_names: list[str],
                      parts: int | None) -> list[tuple[int, int] | None]:
    """The asked registers as one range per part in part order (None: the model's choice): a
    part named as the caption's Parts line names it (any case) or numbered from 1; one line
    naming the parts for one that is neither."""
    if not registers:
        return []
    count = max(len(part_names), parts or 0)
    ranges: list[tuple[int, int] | None] = [None] * count
    lowered = [name.lower() for name in part_names]
    for part, bounds in registers.items():
        if part.lower() in lowered:
            index = lowered.index(part.lower())
        elif part.isdigit() and 1 <= int(part) <= count:
            index = int(part) - 1
        elif not count:
            raise TaskError(f"register for {part!r}: ask for parts too (--parts), to name or number")
        else:
            known = f"the parts are {', '.join(part_names)}" if part_names else f"the piece has {count} parts"
            raise TaskError(f"register for {part!r}: no such part; {known} (or number them from 1)")
        ranges[index] = bounds
    return ranges


@dataclass
class MusicRequest:
    """One thing asked of a model; checked when made (`__post_init__`), run by `MidiLM.run`.

    task: "continue" (a new piece, or a continuation of `music`), "infill" (new bars `bars` of
    `music`), "accompany" (keep the `tracks` of `music`, write the other parts) or "arrange"
    (keep the melody of `music`, write the rest under the caption `text`).
    """

    task: str = "continue"
    # The prompt to continue, or the music a task works on: a MIDI or audio path, MIDI bytes or
    # a symusic Score. A recording is transcribed onto the codec's grid first.
    music: object = None
    text: str | None = None                  # the caption (None: a training piece's by the seed, or the piece's own)
    # A new piece: its length in bars (a control); infill: the bars to write, counted from 1 ("5-8").
    bars: tuple[int, int] | int | str | None = _control(
        "Length in bars of a new piece, written exactly (infill: the bars to write, e.g. 5-8)", metavar="N")
    tracks: list[str] | None = None          # accompany / arrange: the tracks kept, by name
    # The controls of a new piece ("continue" without music; `bars` above is one too).
    programs: list[int] | None = _control(
        "Each part's General MIDI program, in part order, e.g. drums,33,0 for drums, bass and piano "
        "(drums = -1); one program: every part plays it; default: the caption's instruments, "
        "else the corpus's", label=captions.INSTRUMENTS, metavar="P,P")
    time_signature: str | None = _control(
        "The metre, e.g. 3/4: the piece opens in it and keeps it", label=captions.TIME_SIGNATURE, metavar="N/D")
    tempo: float | None = _control(
        "The tempo in BPM, written exactly into the score", label=captions.TEMPO, metavar="BPM")
    key: str | None = _control('The key, e.g. "D minor" (learned from captions; --key-bias helps)',
                               label=captions.KEY, metavar="KEY")
    parts: list[str] | int | None = _control(
        'The parts: names, e.g. "Soprano, Alto, Tenor, Bass", or a count; exactly these play',
        label=captions.PARTS, metavar="PARTS")
    density: str | None = _control(
        "How busy the music is: sparse, medium or dense (notes per beat per part, against the thirds of "
        "the corpus's pieces; learned from captions)", label=captions.DENSITY, metavar="BIN")
    registers: dict[str, tuple[int, int]] | str | None = _control(
        'Each part\'s pitch range, by its name or number (from 1), e.g. "Bass=E2-C4, Soprano=C4-A5" '
        "(note names, middle C = C4, or MIDI numbers): every note of that part stays in it", metavar="PART=LOW-HIGH")
    key_bias: float | bool | None = _control(
        f"Keep to the key's mode: each note of the key's tonic triad (or a minor key's leading note) "
        f"raises its row's logit by STRENGTH (default when on: {KEY_BIAS:g}); off by default", metavar="STRENGTH")
    density_bias: float | bool | None = _control(
        f"Keep to the asked density: while the piece is sparser than asked, each move of time loses "
        f"STRENGTH logit per beat it skips (busier than asked, gains it), scaled by how far off the piece is "
        f"(default when on: {DENSITY_BIAS:g}); off by default", metavar="STRENGTH")
    num_samples: int = 1
    seed: int | None = 0
    constrain: bool = True                   # False: the token syntax and the asked controls, no corpus limits
    # Parts only: no parallel fifths or octaves, no crossing, upper voices within an octave
    # (`midillm.decoding.voice_leading`); it is one of the corpus constraints. None: on where the
    # corpus's own pieces of as many parts avoid parallels (`CorpusProfile.avoids_parallels_with`:
    # the chorales' four voices), off elsewhere (a band doubles its bass and lead in octaves; the
    # chorales' trumpets and strings double the voices).
    strict_voice_leading: bool | None = None
    sampling: dict = field(default_factory=dict)  # changes to the model's own `SamplingSettings`
    progress: bool = False                   # a progress bar on the terminal
    on_step: Callable[[int, int], None] | None = field(default=None, compare=False, repr=False)  # (step, steps)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose from {', '.join(TASKS)}")
        if self.num_samples < 1:
            raise ValueError(f"the number of samples must be at least 1 (-n, num_samples), not {self.num_samples}")
        self.sampling = SamplingSettings.check_changes(self.sampling)
        if self.programs and not all(-1 <= program <= 127 for program in self.programs):
            raise ValueError(f"programs are numbers from -1 (drums) to 127, not {self.programs}")
        if self.task == "infill":
            if self.bars is None:
                raise TaskError('infill needs bars to write, e.g. "5-8" (first and last, counted from 1)')
            self.bars = parse_bar_range(self.bars)
        self._check_controls()
        if self.task == "arrange" and not (self.text or "").strip():
            raise TaskError("arrange needs a caption (--text), e.g. \"Instruments: String Ensemble 1\"")
        if self.strict_voice_leading and not self.constrain:
            raise ValueError("strict voice leading is one of the corpus constraints: it cannot go with "
                             "constraints off (--no-constraints, constrain=False)")
        if self.music is None and self.task != "continue":
            raise TaskError(f"{self.task} works on given music: it needs a MIDI file (or a recording), "
                            "MIDI bytes or a Score")
        if isinstance(self.music, (str, Path)) and not Path(self.music).is_file():
            what = "prompt file" if self.task == "continue" else "file"
            raise FileNotFoundError(f"{what} not found: {self.music}")

    def _check_controls(self) -> None:
        """The controls' values, each checked (one line for a bad one); a new piece's caption
        lines give the controls not set as fields."""
        given = [name for name in CONTROL_NAMES if getattr(self, name) is not None
                 and not (name == "bars" and self.task == "infill")]
        # A prompt decides its own metre, tempo, parts and length; given music decides everything.
        decided = ("time_signature", "tempo", "parts", "bars", "registers") if self.task == "continue" \
            else CONTROL_NAMES
        refused = [name for name in given if name in decided] if self.music is not None else []
        if refused:
            source = "the prompt" if self.task == "continue" else "the music given"
            raise TaskError(f"{', '.join(refused)}: {'a control' if len(refused) == 1 else 'controls'} of a new "
                            f"piece; {self.task} with music takes {'it' if len(refused) == 1 else 'them'} from {source}")
        if self.task == "continue" and self.music is None:
            self._read_caption_controls()
        self._check_control_values()

    def _read_caption_controls(self) -> None:
        """A new piece's caption lines give the controls not set as fields."""
        written = captions.caption_fields(self.text)
        if self.time_signature is None and written.get(captions.TIME_SIGNATURE):
            self.time_signature = written[captions.TIME_SIGNATURE]
        if self.tempo is None and written.get(captions.TEMPO):
            self.tempo = captions.read_tempo(written[captions.TEMPO])
            if self.tempo is None:
                raise TaskError(f"the caption's tempo must look like \"120 BPM\", not {written[captions.TEMPO]!r}")
        if self.key is None and written.get(captions.KEY):
            self.key = written[captions.KEY]
        if self.parts is None and written.get(captions.PARTS):
            self.parts = written[captions.PARTS]
        if self.density is None and written.get(captions.DENSITY):
            self.density = written[captions.DENSITY]

    def _check_control_values(self) -> None:
        if self.time_signature is not None:
            self.time_signature = parse_time_signature(self.time_signature)
        if self.tempo is not None:
            low, high = TEMPO_RANGE
            if not low <= float(self.tempo) <= high:
                raise TaskError(f"tempo must be between {low:g} and {high:g} BPM, not {self.tempo:g}")
            self.tempo = float(self.tempo)
        if self.key is not None:
            known = captions.known_key(str(self.key))
            if known is None:
                raise TaskError(f"unknown key {self.key!r}; a key is a tonic and a mode: "
                                f"{', '.join(captions.key_names())}")
            self.key = known
        if self.parts is not None:
            self.parts = parse_parts(self.parts)
        if self.density is not None:
            if str(self.density).strip().lower() not in captions.DENSITY_BINS:
                raise TaskError(f"density is one of {', '.join(captions.DENSITY_BINS)}, not {self.density!r}")
            self.density = str(self.density).strip().lower()
        if self.programs and self.parts is not None:
            part_instruments(None, self.programs, self.parts)  # one line if they disagree
        if self.registers is not None:
            self.registers = parse_registers(self.registers)
        if self.bars is not None and self.task == "continue":
            if isinstance(self.bars, str) and self.bars.strip().isdigit():
                self.bars = int(self.bars)
            if isinstance(self.bars, bool) or not isinstance(self.bars, int) or self.bars < 1:
                raise TaskError(f"bars (the length of a new piece) must be a whole number of at least 1, "
                                f"not {self.bars!r}")
        self.key_bias = self._bias_strength("key_bias", "key", KEY_BIAS)
        self.density_bias = self._bias_strength("density_bias", "density", DENSITY_BIAS)
        if self.density_bias is not None and self.density is None:
            raise TaskError("the density-aware bias needs a density: give one (--density, density=) or a "
                            "caption with a Density line")

    def _bias_strength(self, name: str, what: str, default: float) -> float | None:
        """A key- or density-aware bias as asked: True its default strength, False or None off,
        else a strength of 0 or more; one of the corpus constraints, so not without them."""
        value = getattr(self, name)
        value = default if value is True else None if value is False or value is None else float(value)
        if value is not None:
            if value < 0:
                raise TaskError(f"{name} (a strength) must be 0 or more, not {value:g}")
            if not self.constrain:
                raise TaskError(f"the {what}-aware bias is one of the corpus constraints: it cannot go with "
                                "constraints off (--no-constraints, constrain=False)")
        return value

    def prompt_caption(self, default: str | None) -> str | None:
        """The caption the model is prompted with: the request's (else `default`, a training
        piece's that the model drew by the request's seed), with a line for every control given
        that a caption can say. Unchanged (the request's text) when no control is given.

        Its parts and instruments agree, part by part: programs asked over a drawn caption
        whose parts are others make the parts theirs (named by role: Drums, Bass...), and a
        count of parts asked over it keeps that many of its parts with their instruments."""
        values = {captions.KEY: self.key, captions.TIME_SIGNATURE: self.time_signature,
                  captions.TEMPO: captions.tempo_value(self.tempo) if self.tempo is not None else None,
                  captions.DENSITY: self.density}
        text = self.text if self.text is not None else default
        if isinstance(self.parts, list):
            values[captions.PARTS] = ", ".join(self.parts)
        count = len(self.parts) if isinstance(self.parts, list) else self.parts
        written_parts = captions.names_in_caption(text)
        if self.programs:
            if count is None and len(self.programs) > 1 and len(written_parts) != len(self.programs):
                values[captions.PARTS] = ", ".join(program_role(program) for program in self.programs)
            count = count or len(written_parts) or None
            values[captions.INSTRUMENTS] = captions.instruments_value(
                self.programs * count if len(self.programs) == 1 and count else self.programs)
        elif count is not None and self.text is None:
            text = _drawn_caption_with_parts(text, count, values)
        if not any(values.values()):
            return self.text if self.text is not None or text == default else text
        return captions.with_fields(text, values)

    def updated(self, **values) -> MusicRequest:
        """A copy with `values` in place, checked again."""
        return replace(self, **values)


CONTROL_NAMES = tuple(name.name for name in fields(MusicRequest) if name.metadata.get("control"))


def _drawn_caption_with_parts(text: str | None, count: int, values: dict) -> str | None:
    """A drawn caption for `count` parts: the first `count` of its parts with their instruments
    (into `values`) where it has that many, else without the lines that count other parts."""
    written = captions.caption_fields(text)
    parts = captions.listed_names(written.get(captions.PARTS, ""))
    instruments = captions.part_programs_listed(written.get(captions.INSTRUMENTS, ""))
    if not values.get(captions.PARTS):
        if len(parts) > count:
            values[captions.PARTS] = ", ".join(parts[:count])
        elif len(parts) not in (0, count):
            written.pop(captions.PARTS)
    if len(instruments) > count and None not in instruments[:count]:
        values[captions.INSTRUMENTS] = captions.instruments_value(instruments[:count])
    elif len(instruments) not in (0, 1, count):
        written.pop(captions.INSTRUMENTS)
    return captions.write_caption(written)


def part_instruments(text: str | None, programs: list[int] | None = None,
                     parts: list[str] | int | None = None) -> list[int] | None:
    """Each part's program (-1: drums), in part order, as a request asks for them: the
    `programs` control, else the caption's "Instruments:" line read part by part ("Drums, 2 x
    Violin" -> [-1, 40, 40]). The parts are `parts` (names or a count), else the caption's
    "Parts:" line; one instrument for several parts is every part's. None where no instrument
    is named, or one is named for parts nobody counted (then it is the only one that plays).
    One line (`TaskError`) where parts and instruments disagree, or a name is no instrument."""
    if programs:
        instruments = list(programs)
    else:
        listed = captions.instruments_listed(captions.caption_field(text, captions.INSTRUMENTS))
        unknown = [name for _, name in listed if captions.instrument_program(name) is None]
        if unknown:
            raise TaskError(f"instrument {unknown[0]!r} is no General MIDI instrument (e.g. \"Electric Bass "
                            f"(finger)\", \"Drums\")")
        instruments = captions.part_programs_listed(captions.caption_field(text, captions.INSTRUMENTS))
    if not instruments:
        return None
    if parts is None:
        parts = captions.names_in_caption(text) or None
    count = len(parts) if isinstance(parts, list) else parts
    if count is None:
        return instruments if len(instruments) > 1 else None
    if len(instruments) == 1:
        return instruments * count
    if len(instruments) != count:
        raise TaskError(f"{count} parts but {len(instruments)} instruments: name one instrument per part, in part "
                        f"order (e.g. \"Drums, Electric Bass (finger), 2 x Acoustic Grand Piano\"), or one for all")
    return instruments
