"""The studio's web server: FastAPI routes over the queue (`jobs.Studio`), the page's own static
folder, and nothing else. Every error the page sees is `{"error": "one line"}`.

Why FastAPI and a static page rather than gradio: the page needs a form, a progress bar, an
audio element, two images and links, which plain HTML and JS do in a few hundred lines; FastAPI
with uvicorn adds ~15 MB to the environment and makes no outside request, where gradio adds
~340 MB and phones home unless its analytics are switched off.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import Depends, FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request as StarletteRequest

from midillm.decoding.request import SAMPLING_NAMES, MusicRequest
from midillm.errors import first_line

from .jobs import RESULT_FILES, QueueFull, Request, Studio
from .models import PROMPT_TASKS, LoadedModel, StudioError, build_caption, model_info

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 20.0
MAX_SAMPLES = 4
MIDI_SUFFIXES = (".mid", ".midi")
# A job or result id is ours (uuid4 hex); anything else is refused before a lookup.
_ID = re.compile(r"^[0-9a-f]{32}$")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


# How far past the upload limit a declared body is still read (and dropped) before the refusal.
DRAIN_FACTOR = 8


class UploadLimit:
    """ASGI middleware: a request body over the limit is refused with one line: by its
    Content-Length before any of it is read, or, streamed without one, as soon as it passes."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"the upload is too large: the limit is {self.max_bytes / 1e6:g} MB"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        # The form fields around the file need a little room of their own.
        limit = self.max_bytes + 64 * 1024
        if length is not None and length.isdigit() and int(length) > limit:
            # A client (a browser, urllib) sends the whole body before it reads the answer: read
            # and drop a body of moderate size first, or it meets a closed socket instead of the
            # one-line refusal. A huge one is refused at once.
            if int(length) <= DRAIN_FACTOR * limit:
                while True:
                    message = await receive()
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        break
            return await _error(413, self._message())(scope, receive, send)
        received = 0
        refused = False

        async def counted_receive():
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > limit:
                    # A body streamed without a length: answer now; the app's own answer to the
                    # cut-off body (a parse error) is dropped by quiet_send.
                    refused = True
                    await _error(413, self._message())(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def quiet_send(message):
            if not refused:
                await send(message)

        try:
            await self.app(scope, counted_receive, quiet_send)
        except Exception:
            if not refused:
                raise


def _plain_name(name: str | None) -> str:
    """The upload's name as the user sees it; it is shown, never used as a path."""
    name = (name or "").strip()
    if not name:
        raise StudioError("the upload has no file name")
    if ("/" in name or "\\" in name or name.startswith(".") or ".." in name or ":" in name
            or any(ord(char) < 32 for char in name) or len(name) > 200):
        raise StudioError(f"the file name {name[:60]!r} looks like a path; upload a file with a plain "
                          "name such as melody.mid")
    return name


def read_upload(name: str, data: bytes) -> dict:
    """A MIDI file as a Score, or a recording's bytes and suffix (transcribed by the worker)."""
    from midillm.audio import AUDIO_SUFFIXES

    suffix = Path(name).suffix.lower()
    if not data:
        raise StudioError(f"{name} is empty")
    if suffix in AUDIO_SUFFIXES:
        return {"audio": (suffix, data)}
    if suffix not in MIDI_SUFFIXES:
        raise StudioError(f"{name} is not a MIDI file ({', '.join(MIDI_SUFFIXES)}) or a recording "
                          f"({', '.join(AUDIO_SUFFIXES)})")
    if not data.startswith(b"MThd"):
        raise StudioError(f"{name} is not a MIDI file (it does not start with a MIDI header)")
    from symusic import Score

    try:
        score = Score.from_midi(data)
    except Exception as error:  # symusic's parser errors, whatever their kind
        raise StudioError(f"{name} is not a readable MIDI file: {first_line(error)}") from None
    if score.note_num() == 0:
        raise StudioError(f"{name} has no notes")
    return {"midi": score}


def _bias(value: str) -> float | bool | None:
    """The form's key- or density-aware bias: empty or "false" off, "true" on at its default
    strength, or a strength."""
    value = value.strip().lower()
    if value in ("", "false", "off"):
        return None
    if value in ("true", "on"):
        return True
    try:
        return float(value)
    except ValueError:
        raise StudioError(f"key bias is on, off or a strength (a number), not {value[:40]!r}") from None


async def sampling_form(request: StarletteRequest) -> dict:
    """The sampling settings the page sent: a form field per `SamplingSettings` field, empty or
    absent for the model's own. A value that is not a number is refused like FastAPI's own fields."""
    from midillm.decoding.request import SamplingSettings

    form = await request.form()
    defaults = SamplingSettings()
    sent = {}
    for name in SAMPLING_NAMES:
        raw = form.get(name)
        if raw is None or not str(raw).strip():
            continue
        try:
            sent[name] = type(getattr(defaults, name))(str(raw).strip())
        except ValueError:
            raise RequestValidationError([{"loc": ("body", name), "msg": f"not a number: {str(raw)[:40]!r}",
                                           "type": "number_parsing"}]) from None
    return sent


def create_app(models: LoadedModel, queue_size: int = 4, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
               log=print) -> FastAPI:
    """The studio app over these models (`LoadedModel`); the worker starts with it."""
    studio = Studio(models, queue_size=queue_size, log=log)
    # No docs pages: they would load their scripts from a CDN.
    app = FastAPI(title="midillm studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio
    app.add_middleware(UploadLimit, max_bytes=int(max_upload_mb * 1e6))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(QueueFull)
    async def queue_full(_request, error: QueueFull):
        return _error(429, first_line(error))

    @app.exception_handler(StudioError)
    async def studio_error(_request, error: StudioError):
        return _error(400, first_line(error))

    @app.exception_handler(ValueError)
    async def value_error(_request, error: ValueError):
        return _error(400, first_line(error))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, error: RequestValidationError):
        problem = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in problem.get("loc", ())[1:]) or "request"
        return _error(422, f"{where}: {problem.get('msg', 'invalid value')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, error: StarletteHTTPException):
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected(_request, error: Exception):
        log(f"studio: unexpected error: {type(error).__name__}: {first_line(error)}")
        return _error(500, first_line(error))

    @app.get("/")
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/models")
    def list_models():
        return {"models": list(models.models)}

    @app.get("/api/models/{name:path}")
    def describe_model(name: str):
        # A def, not async: loading a bundle blocks, so it runs in the thread pool.
        return model_info(name, models.get(name))

    @app.post("/api/caption")
    def caption(composer: str = Form(""), genre: str = Form(""), key: str = Form(""),
                time_signature: str = Form(""), tempo: float | None = Form(None),
                instruments: str = Form(""), density: str = Form("")):
        return {"caption": build_caption(composer, genre, key, time_signature, tempo,
                                         _parse_instruments(instruments), density)}

    @app.post("/api/jobs", status_code=202)
    def submit(model: str = Form(...), task: str = Form("generate"), caption: str = Form(""),
               num_samples: int = Form(1), seed: int = Form(0), constrain: bool = Form(True),
               strict_voice_leading: bool | None = Form(None), key_bias: str = Form(""),
               density_bias: str = Form(""), registers: str = Form(""),
               bars: str = Form(""), tracks: str = Form(""), file: UploadFile | None = File(None),
               sampling: dict = Depends(sampling_form)):
        models.path(model)  # an unknown name fails here, not in the queue
        if task not in ("generate",) + PROMPT_TASKS:
            raise StudioError(f"unknown task {task!r}; choose from generate, {', '.join(PROMPT_TASKS)}")
        if not 1 <= num_samples <= MAX_SAMPLES:
            raise StudioError(f"samples must be 1 to {MAX_SAMPLES}, not {num_samples}")
        upload, upload_name = {}, ""
        if file is not None and (file.filename or file.size):
            upload_name = _plain_name(file.filename)
            upload = read_upload(upload_name, file.file.read())
        if task == "generate":  # a new piece: an upload left in the form plays no part
            upload = {}
        elif not upload:
            raise StudioError(f"{task} needs a MIDI file (or a recording) to start from")
        # The request checks itself (sampling values, bars, the controls the caption carries): a bad
        # value is one line now, not in the queue. Bars are a new piece's length or infill's range.
        music = MusicRequest("continue" if task == "generate" else task, upload.get("midi", upload.get("audio")),
                             caption.strip() + "\n" if caption.strip() else None,
                             bars=bars.strip() or None if task in ("infill", "generate") else None,
                             key_bias=_bias(key_bias) if task == "generate" else None,
                             density_bias=_bias(density_bias) if task == "generate" else None,
                             registers=registers.strip() or None if task == "generate" else None,
                             tracks=[item.strip() for item in tracks.split(",") if item.strip()] or None,
                             num_samples=num_samples, seed=seed, constrain=constrain,
                             strict_voice_leading=strict_voice_leading, sampling=sampling)
        request = Request(model=model, music=music, page_task=task, audio=upload.get("audio"),
                          upload_name=upload_name)
        job = studio.submit(request)
        return studio.status(job)

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str):
        job = studio.jobs.get(job_id) if _ID.match(job_id) else None
        if job is None:
            raise StarletteHTTPException(404, "no such request (the studio keeps only this session's)")
        return studio.status(job)

    @app.get("/api/history")
    def history():
        return {"results": studio.history()}

    @app.get("/api/results/{result_id}/{kind}")
    def result_file(result_id: str, kind: str, download: bool = False):
        result = studio.results.get(result_id) if _ID.match(result_id) else None
        if result is None or kind not in RESULT_FILES or kind not in result.files:
            raise StarletteHTTPException(404, "no such result (the studio keeps only this session's)")
        suffix, media_type = RESULT_FILES[kind]
        headers = {}
        if download:
            headers["Content-Disposition"] = f'attachment; filename="midillm-{result_id[:8]}.{suffix}"'
        return Response(result.files[kind], media_type=media_type, headers=headers)

    return app


def _parse_instruments(text: str) -> dict[int, int]:
    """'0:4,40:1' (program:parts) -> {0: 4, 40: 1}."""
    instruments: dict[int, int] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        program, _, count = item.partition(":")
        try:
            instruments[int(program)] = int(count or 1)
        except ValueError:
            raise StudioError(f"instruments are program:parts pairs such as 0:4, not {item.strip()!r}") from None
    return instruments


def serve(model: str | None = None, port: int = DEFAULT_PORT, host: str = "127.0.0.1", queue_size: int = 4,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, log=print, precision: str = "auto") -> None:
    """Start the studio on MODEL (a bundle, a folder of bundles, or the demo's bundle) and serve
    until interrupted; models load in `precision` (`MidiLM.from_pretrained`'s dtype)."""
    import threading

    import uvicorn

    from .models import find_models

    if not 1 <= port <= 65535:
        raise StudioError(f"--port must be 1 to 65535, not {port}")
    if queue_size < 1 or max_upload_mb <= 0:
        raise StudioError("--queue-size must be at least 1 and --max-upload-mb above 0")
    models = LoadedModel(find_models(model), dtype=precision)
    app = create_app(models, queue_size=queue_size, max_upload_mb=max_upload_mb, log=log)
    first = next(iter(models.models))
    # Load the first model while the browser opens, so the page is ready sooner; a failure
    # shows on the page when it asks for the model.
    threading.Thread(target=lambda: _quietly(models.get, first), daemon=True).start()
    log(f"midillm studio on {first} ({len(models.models)} model{'s' * (len(models.models) > 1)}): "
        f"http://{host}:{port}  (Ctrl+C to stop)")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    _check_port_free(host, port)
    server.run()


def _check_port_free(host: str, port: int) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise StudioError(f"cannot listen on {host}:{port}: {error.strerror or error} "
                              "(another studio running? try --port)") from None


def _quietly(function, *arguments) -> None:
    try:
        function(*arguments)
    except Exception:  # reported when the page asks for the model
        pass


__all__ = ["create_app", "serve", "read_upload", "DEFAULT_PORT", "STATIC"]
