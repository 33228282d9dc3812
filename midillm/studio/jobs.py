"""One generation at a time: a bounded queue of requests, one worker thread, and the results of
this session kept in memory only (a result leaves the machine when the user downloads it;
nothing is written to disk that outlives the request that made it).
"""

from __future__ import annotations

import queue
import tempfile
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from midillm.decoding.request import MusicRequest
from midillm.errors import first_line

from .models import LoadedModel, StudioError

# What a result can be downloaded or shown as: kind -> (file suffix, media type).
RESULT_FILES = {
    "mid": ("mid", "audio/midi"),
    "musicxml": ("musicxml", "application/vnd.recordare.musicxml+xml"),
    "wav": ("wav", "audio/wav"),
    "png": ("png", "image/png"),
    "svg": ("svg", "image/svg+xml"),
}
# Sheet music past this many pages is cut: a page of SVG is ~100 kB and the page is for a glance.
MAX_SHEET_PAGES = 6


@dataclass
class Request:
    """One thing the user asked for on the page, checked by the server before it is queued: the
    model, the page's task, the upload, and what the model is to do (`MusicRequest`, checked when
    it was made)."""

    model: str
    music: MusicRequest
    page_task: str = "generate"  # "generate" (a new piece) or one of the model's tasks
    # An uploaded recording: (suffix, bytes). It stands in as the request's music until the
    # worker transcribes it (slow: it runs in the queue, not in the page's request).
    audio: tuple[str, bytes] | None = None
    upload_name: str = ""


@dataclass
class Job:
    id: str
    request: Request
    state: str = "queued"  # queued -> running -> done | error
    step: int = 0
    total: int = 0
    message: str = ""
    results: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    seconds: float = 0.0


@dataclass
class Result:
    """One sample: its files in memory, and what the history lists of it."""

    id: str
    title: str
    summary: str
    files: dict[str, bytes]
    # What was asked beside what the score says, per control: {"control", "asked", "written"}.
    controls: list[dict] = field(default_factory=list)


class QueueFull(StudioError):
    pass


class Studio:
    """The queue, the worker and this session's results."""

    def __init__(self, models: LoadedModel, queue_size: int = 4, history_size: int = 24, log=print):
        self.models = models
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=queue_size)
        self.jobs: dict[str, Job] = {}
        self.results: OrderedDict[str, Result] = OrderedDict()
        self.history_size = history_size
        self.log = log
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="studio-worker", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ queue

    def submit(self, request: Request) -> Job:
        job = Job(id=uuid.uuid4().hex, request=request)
        with self._lock:
            try:
                self.queue.put_nowait(job)
            except queue.Full:
                raise QueueFull(f"the studio is busy: {self.queue.maxsize} requests are already waiting; "
                                "try again when one has finished") from None
            self.jobs[job.id] = job
            # Finished jobs are only looked up by the page that is polling them: keep a few.
            finished = [key for key, old in self.jobs.items() if old.state in ("done", "error")]
            for key in finished[:-self.history_size]:
                del self.jobs[key]
        return job

    def position(self, job: Job) -> int:
        """Requests ahead of this one (the one running counts), 0 when it runs."""
        if job.state != "queued":
            return 0
        with self.queue.mutex:
            waiting = list(self.queue.queue)
        ahead = waiting.index(job) if job in waiting else 0
        running = any(other.state == "running" for other in self.jobs.values())
        return ahead + int(running)

    def status(self, job: Job) -> dict:
        status = {"id": job.id, "state": job.state, "step": job.step, "total": job.total,
                  "position": self.position(job), "message": job.message, "seconds": round(job.seconds, 1)}
        if job.state == "done":
            status["results"] = [self.describe(result_id) for result_id in job.results
                                 if result_id in self.results]
        return status

    def describe(self, result_id: str) -> dict:
        result = self.results[result_id]
        return {"id": result.id, "title": result.title, "summary": result.summary, "controls": result.controls,
                "files": {kind: f"/api/results/{result.id}/{kind}" for kind in result.files}}

    def history(self) -> list[dict]:
        return [self.describe(result_id) for result_id in reversed(self.results)]

    # ------------------------------------------------------------------ the worker

    def _work(self) -> None:
        while True:
            job = self.queue.get()
            job.state = "running"
            started = time.perf_counter()
            try:
                job.results = self._run(job)
                job.state = "done"
            except Exception as error:  # the page gets one line, the console the cause
                job.message = first_line(error)
                job.state = "error"
                if not isinstance(error, (StudioError, ValueError, OSError)):
                    self.log("".join(traceback.format_exception(error)).rstrip())
            finally:
                job.seconds = time.perf_counter() - started
                # The upload is not kept past its request.
                job.request.music.music = job.request.audio = None
                self.queue.task_done()
            self.log(f"studio: {job.request.page_task} on {job.request.model}: {job.state} in {job.seconds:.1f} s"
                     + (f" ({job.message})" if job.message else ""))

    def _run(self, job: Job) -> list[str]:
        request = job.request
        job.message = "loading the model"
        lm = self.models.get(request.model)
        if request.music.task not in getattr(lm, "tasks", ("continue",)):
            raise StudioError(f"model {request.model} was not trained to {request.music.task}")
        music = request.music
        if request.audio is not None:
            job.message = "transcribing the recording"
            music = music.updated(music=transcribe_upload(*request.audio, lm.codec, request.upload_name))
        job.message = ""

        def on_step(step: int, steps: int) -> None:
            job.step, job.total = step, steps

        samples = lm.run(music.updated(on_step=on_step))
        job.message = "writing the score, the sheet music and the audio"
        results = []
        for index, sample in enumerate(samples):
            title = _title(request, index, len(samples))
            result = Result(id=uuid.uuid4().hex, title=title, summary=_summary(sample),
                            files=render_files(sample.score), controls=asked_and_written(music, sample.score, lm.codec.corpus))
            results.append(result.id)
            with self._lock:
                self.results[result.id] = result
                while len(self.results) > self.history_size:
                    self.results.popitem(last=False)
        job.message = ""
        return results


def transcribe_upload(suffix: str, data: bytes, codec, name: str):
    """An uploaded recording as a Score on the codec's grid. The transcriber reads files: the
    bytes go to a file of our own name in a folder deleted before this returns."""
    from midillm.audio import AudioError, check_audio, codec_grid, transcribe

    with tempfile.TemporaryDirectory(prefix="midillm-studio-") as folder:
        path = Path(folder) / f"recording{suffix}"
        path.write_bytes(data)
        try:
            check_audio(path)
            return transcribe(path, grid=codec_grid(codec))
        except AudioError as error:  # its message names our temporary file: name the user's
            raise StudioError(first_line(error).replace(str(path), name)) from None


def _title(request: Request, index: int, count: int) -> str:
    what = {"generate": "New piece", "continue": "Continuation", "infill": "Infill",
            "accompany": "Accompaniment", "arrange": "Arrangement"}[request.page_task]
    source = f" of {request.upload_name}" if request.upload_name and request.page_task != "generate" else ""
    number = f" {index + 1}/{count}" if count > 1 else ""
    return f"{what}{source}{number} (seed {request.music.seed})"


def asked_and_written(request: MusicRequest, score, corpus=None) -> list[dict]:
    """The controls a musician checks first, asked (blank: left to the model) beside what the
    written score says: its key as found in its notes (`tonality.estimate_key`), its metre,
    tempo and length in bars, its density against the `corpus`'s thirds where it has them, and
    each part's lowest and highest note where registers were asked."""
    from midillm.eval.sanity import bars_written
    from midillm.tokenization.tonality import estimate_key, named_key

    found = estimate_key(score)
    metres = list(dict.fromkeys(f"{sig.numerator}/{sig.denominator}" for sig in score.time_signatures))
    bars = request.bars if request.task == "continue" and isinstance(request.bars, int) else None
    return [
        {"control": "key", "asked": request.key or "", "written": named_key(*found) if found else ""},
        {"control": "metre", "asked": request.time_signature or "", "written": ", ".join(metres) or "4/4"},
        {"control": "tempo", "asked": f"{request.tempo:g} BPM" if request.tempo is not None else "",
         "written": f"{round(score.tempos[0].qpm, 2):g} BPM" if len(score.tempos) else "120 BPM"},
        {"control": "bars", "asked": str(bars or ""), "written": str(bars_written(score))},
    ] + ([{"control": "density", "asked": request.density or "", "written": corpus.density_of(score) or ""}]
         if corpus is not None and corpus.density_edges else []) + _registers_asked_and_written(request, score)


def _registers_asked_and_written(request: MusicRequest, score) -> list[dict]:
    """Where registers were asked: each asked one, and each pitched part's lowest and highest note."""
    from pretty_midi import note_number_to_name as note_name

    if not request.registers:
        return []
    asked = ", ".join(f"{part}={note_name(low)}-{note_name(high)}" for part, (low, high) in request.registers.items())
    written = [f"{track.name or number}={note_name(min(pitches))}-{note_name(max(pitches))}"
               for number, track in enumerate(score.tracks, start=1)
               if not track.is_drum and (pitches := [note.pitch for note in track.notes])]
    return [{"control": "registers", "asked": asked, "written": ", ".join(written)}]


def _summary(sample) -> str:
    seconds = sample.score.to("second").end()
    ended = ", ended" if sample.ended else ", cut by the token limit"
    return f"{sample.score.note_num()} notes, {seconds:.0f} s{ended}"


def render_files(score) -> dict[str, bytes]:
    """The score as MIDI, MusicXML, sheet music (SVG), WAV and a piano roll (PNG), in memory.

    The project's writers take paths: they write into a folder deleted before this returns."""
    from midillm.decoding.export import to_midi_bytes, write_musicxml, write_png, write_wav

    files = {"mid": to_midi_bytes(score)}
    with tempfile.TemporaryDirectory(prefix="midillm-studio-") as folder:
        folder = Path(folder)
        files["png"] = write_png(score, folder / "piano-roll.png", width=1100, height=320).read_bytes()
        files["wav"] = write_wav(score, folder / "audio.wav").read_bytes()
        files["musicxml"] = write_musicxml(score, folder / "score.musicxml").read_bytes()
    files["svg"] = sheet_music_svg(files["musicxml"])
    return files


def sheet_music_svg(musicxml: bytes) -> bytes:
    """Engrave MusicXML with verovio (bundled fonts, no network): the pages stacked in one SVG."""
    import verovio

    toolkit = verovio.toolkit()
    toolkit.setOptions({"pageWidth": 2100, "adjustPageHeight": True, "scale": 40, "header": "none",
                        "footer": "none", "breaks": "auto"})
    if not toolkit.loadData(musicxml.decode("utf-8")):
        raise StudioError("verovio could not read the MusicXML export")
    pages = [toolkit.renderToSVG(page) for page in range(1, min(toolkit.getPageCount(), MAX_SHEET_PAGES) + 1)]
    if not pages:
        raise StudioError("verovio rendered no page of sheet music")
    # One document: each page as a nested <svg>, one under the other.
    import re

    heights, bodies, width = [], [], 0
    for page in pages:
        size = re.search(r'<svg[^>]*width="(\d+)px"[^>]*height="(\d+)px"', page)
        page_width, page_height = (int(size.group(1)), int(size.group(2))) if size else (2100, 2970)
        width = max(width, page_width)
        body = re.sub(r"^<\?xml[^>]*>\s*", "", page)
        bodies.append((sum(heights), body.replace("<svg ", f'<svg y="{sum(heights)}" ', 1)))
        heights.append(page_height)
    inner = "".join(body for _, body in bodies)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{width}px" height="{sum(heights)}px" viewBox="0 0 {width} {sum(heights)}">{inner}</svg>'
            ).encode("utf-8")
