"""The studio's models: which bundles the page may choose, the one loaded, and what the page
shows for it (caption fields from the codec's corpus profile, tasks, sampling defaults).

The page names a model by the name listed here, never by a path: the server maps names to the
folders it was started on.
"""

from __future__ import annotations

import threading
from pathlib import Path

from midillm.errors import first_line
from midillm.model.bundle import Bundle
from midillm.tokenization.caption import (DENSITY_BINS, caption_fields, instrument_name, instruments_listed, key_names,
                                          programs_named, read_tempo, score_caption)
from midillm.tokenization.codec import CODEC_CONFIG_FILE
# What a bundle can be asked to do besides sampling from nothing: the tasks of its training rows,
# in the order the page lists them.
from midillm.tokenization.roles import program_role
from midillm.tokenization.rows import TASKS as PROMPT_TASKS

# A bundle says which tasks it was trained for in `lm.tasks`; without it, continuation only.
DEFAULT_TASKS = ("continue",)
# How deep under a folder of bundles to look: runs/<experiment>/<bundle> is the usual layout.
SEARCH_DEPTH = 3


class StudioError(ValueError):
    """Something the studio cannot do as asked; the message is one line for the user (a
    ValueError, so the command line reports it as it reports any bad value)."""


def default_model() -> Path:
    """The bundle `midillm demo` writes by default, relative to the working folder."""
    from midillm.demo import DEFAULT_DEMO_OUT, demo_bundle_path

    bundle = demo_bundle_path(DEFAULT_DEMO_OUT)
    if not Bundle.is_bundle(bundle):
        raise StudioError(f"no model given and no demo bundle at {bundle}: run `make demo` first, "
                          "or pass MODEL (a bundle folder or a folder of bundles)")
    return bundle


def find_models(model: str | Path | None) -> dict[str, Path]:
    """Name -> bundle folder: the bundle given, the bundles under a folder, or the demo's."""
    if model is None:
        bundle = default_model()
        return {bundle.name: bundle.resolve()}
    root = Path(model).expanduser()
    if not root.is_dir():
        raise StudioError(f"{model} is not a folder (give a bundle folder or a folder of bundles)")
    if Bundle.is_bundle(root):
        return {root.resolve().name: root.resolve()}
    found: dict[str, Path] = {}
    for depth in range(1, SEARCH_DEPTH + 1):
        for config in sorted(root.glob("/".join(["*"] * depth) + "/" + CODEC_CONFIG_FILE)):
            bundle = config.parent
            # A `prepare` folder's codec/ has a codec and no model: data, not something to play.
            if not (Bundle(bundle).adapter_config.is_file() or Bundle(bundle).model_config.is_file()):
                continue
            # A bundle's own checkpoints hold codec files too; list the bundle, not its insides.
            if not any(Bundle.is_bundle(parent) for parent in bundle.parents if root in parent.parents):
                found[bundle.relative_to(root).as_posix()] = bundle.resolve()
    if not found:
        raise StudioError(f"no midillm bundle under {model} (a bundle folder holds {CODEC_CONFIG_FILE})")
    return found


class LoadedModel:
    """One bundle in memory at a time: a studio runs one generation at a time, and a second
    model held for later would double the memory for nothing. `dtype`: the precision each loads
    in, as `MidiLM.from_pretrained` takes it ("auto": int8 weights on a CPU, bf16 on a GPU)."""

    def __init__(self, models: dict[str, Path], dtype="auto"):
        self.models = models
        self.dtype = dtype
        self._lock = threading.Lock()
        self._name: str | None = None
        self._lm = None

    def path(self, name: str) -> Path:
        if name not in self.models:
            raise StudioError(f"unknown model {name!r}; choose one of: {', '.join(self.models)}")
        return self.models[name]

    def get(self, name: str):
        path = self.path(name)
        with self._lock:
            if self._name != name:
                from midillm.decoding.generate import MidiLM

                self._lm = self._name = None  # free the old one before loading the next
                try:
                    self._lm = MidiLM.from_pretrained(path, dtype=self.dtype)
                except Exception as error:  # a broken or foreign folder: one line on the page
                    raise StudioError(f"cannot load model {name}: {first_line(error)}") from None
                self._name = name
            return self._lm


# ------------------------------------------------------------------------------ caption fields


def build_caption(composer: str = "", genre: str = "", key: str = "", time_signature: str = "",
                  tempo: float | None = None, instruments: dict[int, int] | None = None, density: str = "") -> str:
    """The caption for these fields, written by `score_caption` itself (the one home of the
    caption format): a score holding just the asked metre, tempo and instruments, with the
    composer, genre and key as metadata."""
    from symusic import Note, Score, Tempo, TimeSignature, Track

    sketch = Score(480)
    if time_signature:
        try:
            numerator, denominator = (int(part) for part in time_signature.split("/"))
        except ValueError:
            raise StudioError(f"time signature must look like 3/4, not {time_signature!r}") from None
        sketch.time_signatures.append(TimeSignature(0, numerator, denominator))
    if tempo:
        from midillm.decoding.request import TEMPO_RANGE

        if not TEMPO_RANGE[0] <= float(tempo) <= TEMPO_RANGE[1]:
            raise StudioError(f"tempo must be between {TEMPO_RANGE[0]:g} and {TEMPO_RANGE[1]:g} BPM, not {tempo:g}")
        sketch.tempos.append(Tempo(0, float(tempo)))
    for program, count in (instruments or {}).items():
        if not -1 <= int(program) <= 127 or not 0 <= int(count) <= 16:
            raise StudioError(f"an instrument is a program from -1 (drums) to 127 played by 0 to 16 parts, "
                              f"not {program} x {count}")
        for _ in range(int(count)):
            track = Track(program=max(int(program), 0), is_drum=int(program) == -1)
            track.notes.append(Note(0, 1, 60, 64))  # score_caption lists only tracks that play
            sketch.tracks.append(track)
    metadata = {"composer": composer.strip(), "genre": genre.strip(), "key": key.strip()}
    if density.strip() and density.strip().lower() not in DENSITY_BINS:
        raise StudioError(f"density is one of {', '.join(DENSITY_BINS)}, not {density.strip()[:40]!r}")
    return score_caption(sketch, metadata, density.strip().lower() or None)


def form_fields(caption: str) -> dict:
    """A caption as the page's fields (read by `caption_fields`, the one reader): composer,
    genre, key, time signature, tempo, instruments (program -> parts)."""
    written = caption_fields(caption)
    fields: dict = {"composer": written.get("Composer", ""), "genre": written.get("Genre", ""),
                    "key": written.get("Key", ""), "time_signature": written.get("Time signature", ""),
                    "tempo": None, "density": written.get("Density", ""), "instruments": {}}
    fields["tempo"] = read_tempo(written.get("Tempo", ""))
    for count, name in instruments_listed(written.get("Instruments", "")):
        programs = programs_named([name])
        if programs:  # the parts of one instrument, wherever they stand
            fields["instruments"][programs[0]] = fields["instruments"].get(programs[0], 0) + count
    return fields


def model_info(name: str, lm) -> dict:
    """What the page needs to offer for this model: its tasks, caption fields and defaults."""
    from midillm.decoding.request import SamplingSettings

    codec = lm.codec
    corpus = codec.corpus
    tasks = [task for task in PROMPT_TASKS if task in tuple(getattr(lm, "tasks", DEFAULT_TASKS))]
    caption = lm.default_text(None, seed=0) or ""  # what `generate` prompts with at the form's seed 0
    programs = corpus.program_list if corpus is not None else []
    return {
        "name": name,
        "tasks": ["generate"] + tasks,
        "captions": bool(codec.captions),
        "caption": caption,
        "fields": form_fields(caption),
        "keys": key_names(),
        # Density bins where the model's captions said them (a corpus with measured thirds).
        "densities": list(DENSITY_BINS) if corpus is not None and corpus.density_edges else [],
        "time_signatures": list(corpus.time_signatures) if corpus is not None else [],
        # Each with its role (what a part of it does in a band: Drums, Bass, Piano...): the page picks parts by role.
        "instruments": [{"program": program, "name": instrument_name(program), "role": program_role(program)}
                        for program in programs],
        # The fields of SamplingSettings only: a running job's copy carries its progress hook too.
        "sampling": {name: getattr(lm.sampling, name) for name in SamplingSettings.__dataclass_fields__},
        "constraints": corpus is not None,
        # The form's strict voice leading starts as the corpus's habit (on where it avoids parallels);
        # left untouched, the request leaves it unsaid: the habit for as many parts as it asks.
        "strict_voice_leading": corpus is not None and corpus.avoids_parallels,
    }
