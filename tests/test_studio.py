"""`midillm studio`: the server on a tiny bundle, its API and limits, the page in headless
Chromium, and the whole command with the network off."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
import torch
from symusic import KeySignature, Note, Score, Tempo, TimeSignature, Track

from conftest import make_band_score
from midillm.tokenization.codec import CODEC_CONFIG_FILE
from midillm.studio.models import PROMPT_TASKS, LoadedModel, build_caption, find_models, form_fields
from midillm.studio.server import create_app
from midillm.decoding.request import KEY_GUIDANCE
from midillm.eval.sanity import bars_written
from midillm.tokenization.caption import score_caption
from midillm.tokenization.roles import program_role

MAX_UPLOAD_MB = 0.5  # small, so an oversized upload is cheap to send


# ----------------------------------------------------------------------------- fixtures and helpers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Client:
    """urllib against the studio: JSON in, (status, JSON or bytes, headers) out."""

    def __init__(self, url: str):
        self.url = url

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None):
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, body, headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, body, headers = error.code, error.read(), error.headers
        if headers.get("content-type", "").startswith("application/json"):
            body = json.loads(body)
        return status, body, headers

    def get(self, path: str):
        status, body, _ = self.request(path)
        return status, body

    def post(self, path: str, fields: dict, file: tuple[str, bytes] | None = None):
        """A multipart form, as the page's FormData sends it."""
        boundary = uuid.uuid4().hex
        parts = []
        for name, value in fields.items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        if file is not None:
            name, content = file
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                         f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        status, answer, _ = self.request(path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return status, answer

    def wait(self, job_id: str, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.get(f"/api/jobs/{job_id}")
            assert status == 200, body
            if body["state"] in ("done", "error"):
                return body
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish in {timeout} s")


@pytest.fixture(scope="module")
def studio(tiny_bundle):
    """The studio app on the tiny bundle, served by uvicorn in a thread; a queue of one."""
    import uvicorn

    models = LoadedModel({"tiny": tiny_bundle}, dtype=torch.float32)
    logs: list[str] = []
    app = create_app(models, queue_size=1, max_upload_mb=MAX_UPLOAD_MB, log=logs.append)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the studio server did not start"
        time.sleep(0.05)
    client = Client(f"http://127.0.0.1:{port}")
    client.models, client.logs = models, logs
    yield client
    server.should_exit = True
    thread.join(timeout=10)


def small_midi(bars: int = 5) -> bytes:
    score = make_band_score(seed=1, bars=bars)
    return bytes(score.dumps_midi())


def assert_still_serving(client: Client) -> None:
    status, body = client.get("/api/models")
    assert status == 200 and body == {"models": ["tiny"]}


def assert_one_line(status: int, body, expected_status: int, *words: str) -> None:
    assert status == expected_status, (status, body)
    message = body["error"]
    assert "\n" not in message and "Traceback" not in message, message
    for word in words:
        assert word in message, message


# ----------------------------------------------------------------------------- captions and models


def test_caption_from_fields_is_written_as_score_caption_writes_it():
    score = Score(480)
    score.key_signatures.append(KeySignature(0, -2, 1))  # G minor
    score.time_signatures.append(TimeSignature(0, 3, 4))
    score.tempos.append(Tempo(0, 84.0))
    for program in (52, 52, 52, 0):
        track = Track(program=program)
        track.notes.append(Note(0, 480, 60, 80))
        score.tracks.append(track)
    expected = score_caption(score, {"composer": "J.S. Bach"})
    # Unnamed parts are named by their roles, and the instruments follow the parts (issue 26).
    assert expected == ("Composer: J.S. Bach\nParts: Choir, Choir, Choir, Piano\nKey: G minor\nTime signature: 3/4\n"
                        "Tempo: 84 BPM\nInstruments: 3 x Choir Aahs, Acoustic Grand Piano\n")
    built = build_caption(composer="J.S. Bach", key="G minor", time_signature="3/4", tempo=84,
                          instruments={52: 3, 0: 1})
    assert built == expected
    # The page reads a caption back into its fields, and the fields give the caption again.
    fields = form_fields(expected)
    assert fields["instruments"] == {52: 3, 0: 1} and fields["tempo"] == 84
    assert build_caption(**fields) == expected
    # An instrument that comes back later in the parts counts all its parts.
    assert form_fields("Instruments: 2 x Choir Aahs, Acoustic Grand Piano, Choir Aahs\n")["instruments"] == {52: 3, 0: 1}
    with pytest.raises(ValueError, match="3/4"):
        build_caption(time_signature="three four")


def test_models_are_found_by_name_and_a_missing_model_is_one_line(tiny_bundle, tmp_path, monkeypatch):
    assert find_models(tiny_bundle) == {tiny_bundle.name: tiny_bundle.resolve()}
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "first").symlink_to(tiny_bundle, target_is_directory=True)
    (runs / "second").symlink_to(tiny_bundle, target_is_directory=True)
    assert list(find_models(runs)) == ["second", "a/first"]
    # Prepared data beside them (a codec, no model) is not a model to choose.
    (runs / "data" / "codec").mkdir(parents=True)
    (runs / "data" / "codec" / CODEC_CONFIG_FILE).write_text((tiny_bundle / CODEC_CONFIG_FILE).read_text())
    assert list(find_models(runs)) == ["second", "a/first"]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="make demo"):
        find_models(None)
    (runs / "demo").mkdir()
    (runs / "demo" / "bach-smollm2").symlink_to(tiny_bundle, target_is_directory=True)
    assert list(find_models(None)) == ["bach-smollm2"]


def test_studio_command_without_a_model_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    from midillm.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["studio", "--port", str(free_port())]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "make demo" in error and "MODEL" in error
    assert main(["studio", str(tmp_path / "nowhere")]) == 1
    assert "is not a folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the API


def test_page_and_model_description(studio, tiny_bundle):
    status, page, _ = studio.request("/")
    assert status == 200 and b"midillm studio" in page and b"/static/studio.js" in page
    # Nothing on the page comes from anywhere but this server.
    assert b"http://" not in page and b"https://" not in page and b"//cdn" not in page
    lm = studio.models.get("tiny")
    status, info = studio.get("/api/models/tiny")
    assert status == 200
    trained_for = getattr(lm, "tasks", ("continue",))
    assert info["tasks"] == ["generate"] + [task for task in PROMPT_TASKS if task in trained_for]
    # The form starts from what `generate` prompts with at the form's seed 0: a training piece's caption.
    assert info["caption"] == lm.default_text(None, seed=0) and info["caption"] in lm.codec.corpus.captions
    assert info["fields"]["time_signature"] == "4/4"
    assert [item["program"] for item in info["instruments"]] == lm.codec.corpus.program_list
    # Parts are picked by role: each instrument says the role its parts play.
    assert {item["program"]: item["role"] for item in info["instruments"]} == {
        program: program_role(program) for program in lm.codec.corpus.program_list}
    assert info["sampling"]["max_new_tokens"] == lm.sampling.max_new_tokens and info["constraints"] is True
    status, caption = studio.post("/api/caption", {"composer": "Anon", "time_signature": "3/4",
                                                   "tempo": "90", "instruments": "0:2,-1:1"})
    assert status == 200
    assert caption["caption"] == ("Composer: Anon\nParts: Piano, Piano, Drums\nTime signature: 3/4\nTempo: 90 BPM\n"
                                  "Instruments: 2 x Acoustic Grand Piano, Drums\n")
    assert_one_line(*studio.get("/api/models/other"), 400, "unknown model")


def test_a_folder_that_fails_to_load_is_one_line(tmp_path):
    models = LoadedModel({"broken": tmp_path})
    with pytest.raises(ValueError, match=f"^cannot load model broken: {tmp_path} is not a midillm bundle"):
        models.get("broken")


def test_generation_from_nothing_gives_every_file(studio):
    status, job = studio.post("/api/jobs", {"model": "tiny", "max_new_tokens": "60", "seed": "3", "num_samples": "2"})
    assert status == 202 and job["state"] in ("queued", "running", "done")
    job = studio.wait(job["id"])
    assert job["state"] == "done", job
    assert job["total"] == 60 and 0 < job["step"] <= 60
    assert len(job["results"]) == 2
    magic = {"mid": b"MThd", "wav": b"RIFF", "png": b"\x89PNG", "svg": b"<svg", "musicxml": b"<?xml"}
    for result in job["results"]:
        assert set(result["files"]) == set(magic)
        for kind, start in magic.items():
            status, content, headers = studio.request(result["files"][kind])
            assert status == 200 and content.startswith(start), (kind, content[:20])
        status, _, headers = studio.request(result["files"]["mid"] + "?download=true")
        assert headers["content-disposition"].startswith("attachment; filename=\"midillm-")
        assert Score.from_midi(studio.request(result["files"]["mid"])[1]).note_num() > 0
    status, history = studio.get("/api/history")
    assert [item["id"] for item in history["results"][:2]] == [r["id"] for r in reversed(job["results"])]


def test_each_result_shows_what_was_asked_beside_what_was_written(studio):
    status, job = studio.post("/api/jobs", {"model": "tiny", "max_new_tokens": "200", "seed": "1", "bars": "2",
                                            "registers": "1=C5-G5",
                                            "caption": "Key: D minor\nTime signature: 3/4\nTempo: 90 BPM\n"
                                                       "Parts: Soprano, Bass"})
    job = studio.wait(job["id"])
    assert job["state"] == "done", job
    [result] = job["results"]
    rows = {row["control"]: (row["asked"], row["written"]) for row in result["controls"]}
    written = Score.from_midi(studio.request(result["files"]["mid"])[1])
    assert rows["metre"] == ("3/4", "3/4") and rows["tempo"] == ("90 BPM", "90 BPM")
    assert rows["key"][0] == "D minor" and rows["key"][1].split()[1] in ("major", "minor")
    assert rows["bars"] == ("2", str(bars_written(written)))
    # The register asked for the first part, and each part's lowest and highest note as written.
    soprano = [note.pitch for note in written.tracks[0].notes]
    assert soprano and 72 <= min(soprano) and max(soprano) <= 79
    assert rows["registers"][0] == "1=C5-G5" and rows["registers"][1].startswith("Soprano=")


def test_continuation_of_an_uploaded_midi_starts_with_it(studio):
    prompt = Score.from_midi(small_midi())
    status, job = studio.post("/api/jobs", {"model": "tiny", "task": "continue", "max_new_tokens": "40"},
                              file=("my tune.mid", small_midi()))
    assert status == 202, job
    job = studio.wait(job["id"])
    assert job["state"] == "done", job
    assert job["results"][0]["title"].startswith("Continuation of my tune.mid")
    continued = Score.from_midi(studio.request(job["results"][0]["files"]["mid"])[1])
    assert continued.note_num() >= prompt.note_num()


def test_an_uploaded_recording_is_transcribed_and_continued(studio, tmp_path):
    pytest.importorskip("basic_pitch")
    from midillm.decoding.export import write_wav

    melody = Score(480)
    melody.tempos.append(Tempo(0, 120.0))
    melody.time_signatures.append(TimeSignature(0, 4, 4))
    track = Track(program=0)
    for beat, pitch in enumerate((60, 64, 67, 72)):
        track.notes.append(Note(beat * 480, 460, pitch, 90))
    melody.tracks.append(track)
    recording = write_wav(melody, tmp_path / "take.wav").read_bytes()
    status, job = studio.post("/api/jobs", {"model": "tiny", "task": "continue", "max_new_tokens": "30"},
                              file=("take.wav", recording))
    assert status == 202, job
    job = studio.wait(job["id"])
    assert job["state"] == "done", job
    assert job["results"][0]["title"].startswith("Continuation of take.wav")
    continued = Score.from_midi(studio.request(job["results"][0]["files"]["mid"])[1])
    heard = sorted(note.pitch for track in continued.tracks for note in track.notes if note.time < 4 * continued.ticks_per_quarter)
    assert {60, 64, 67, 72} <= set(heard), heard
    # Not audio after all: one line naming the user's file, not a temporary path.
    status, job = studio.post("/api/jobs", {"model": "tiny", "task": "continue"}, file=("noise.wav", b"RIFF nonsense"))
    job = studio.wait(job["id"])
    assert job["state"] == "error" and job["message"].startswith("noise.wav") and "/tmp" not in job["message"]


@pytest.mark.parametrize("name, content, status, words", [
    ("big.mid", b"MThd" + bytes(int(MAX_UPLOAD_MB * 1e6) + 100_000), 413, ["too large", "0.5 MB"]),
    ("notes.txt", b"C D E F G", 400, ["notes.txt", "not a MIDI file"]),
    ("fake.mid", b"this is text, not MIDI", 400, ["fake.mid", "not a MIDI file"]),
    ("broken.mid", b"MThd\x00\x00\x00\x06garbage", 400, ["broken.mid", "not a readable MIDI file"]),
    ("../../etc/passwd.mid", None, 400, ["looks like a path"]),
    ("..\\evil.mid", None, 400, ["looks like a path"]),
], ids=["oversized", "not-midi", "text-as-midi", "broken-midi", "path-like", "windows-path"])
def test_bad_uploads_get_one_line_and_the_server_keeps_serving(studio, name, content, status, words):
    upload = (name, small_midi() if content is None else content)
    answer_status, answer = studio.post("/api/jobs", {"model": "tiny", "task": "continue"}, file=upload)
    assert_one_line(answer_status, answer, status, *words)
    assert_still_serving(studio)


def test_an_oversized_upload_streamed_without_a_length_is_refused_too(studio):
    import http.client

    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.mid"\r\n\r\n'.encode()
            + b"MThd" + bytes(int(MAX_UPLOAD_MB * 1e6) * 4) + f"\r\n--{boundary}--\r\n".encode())
    connection = http.client.HTTPConnection(studio.url.removeprefix("http://"), timeout=30)
    connection.request("POST", "/api/jobs", body=(body[i:i + 16384] for i in range(0, len(body), 16384)),
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, encode_chunked=True)
    response = connection.getresponse()
    assert_one_line(response.status, json.loads(response.read()), 413, "too large")
    connection.close()
    assert_still_serving(studio)


@pytest.mark.parametrize("fields, status, words", [
    ({"temperature": "0"}, 400, ["temperature must be above 0"]),
    ({"temperature": "hot"}, 422, ["temperature"]),
    ({"num_samples": "9"}, 400, ["samples must be 1 to 4"]),
    ({"task": "continue"}, 400, ["needs a MIDI file"]),
    ({"task": "compose"}, 400, ["unknown task"]),
    ({"model": "../tiny"}, 400, ["unknown model"]),
])
def test_bad_settings_get_one_line(studio, fields, status, words):
    assert_one_line(*studio.post("/api/jobs", {"model": "tiny", **fields}), status, *words)


def test_a_task_the_bundle_was_not_trained_for_fails_in_one_line(studio, monkeypatch):
    lm = studio.models.get("tiny")
    monkeypatch.setattr(type(lm), "tasks", property(lambda self: ("continue",)), raising=False)
    assert studio.get("/api/models/tiny")[1]["tasks"] == ["generate", "continue"]
    status, job = studio.post("/api/jobs", {"model": "tiny", "task": "infill", "bars": "1-2"},
                              file=("tune.mid", small_midi()))
    assert status == 202
    job = studio.wait(job["id"])
    assert job["state"] == "error" and job["message"] == "model tiny was not trained to infill"
    assert_still_serving(studio)


@pytest.mark.parametrize("task, fields, expected", [
    ("infill", {"bars": "2-3"}, {"bars": (2, 3)}),
    ("accompany", {"tracks": "Alto, Bass"}, {"tracks": ["Alto", "Bass"]}),
    ("accompany", {}, {"tracks": None}),
    ("arrange", {"caption": "Instruments: Flute"}, {"text": "Instruments: Flute\n"}),
])
def test_prompt_tasks_reach_the_model_as_one_request_with_the_upload_and_the_settings(studio, monkeypatch, task,
                                                                                       fields, expected):
    from midillm.decoding.generate import Sample

    lm = studio.models.get("tiny")
    calls = []

    def fake_run(self, request):
        calls.append(request)
        return [Sample(request.music, None, True)] * request.num_samples

    monkeypatch.setattr(type(lm), "tasks", property(lambda self: PROMPT_TASKS), raising=False)
    monkeypatch.setattr(type(lm), "run", fake_run)
    assert studio.get("/api/models/tiny")[1]["tasks"] == ["generate", *PROMPT_TASKS]
    status, job = studio.post("/api/jobs", {"model": "tiny", "task": task, "seed": "5", "temperature": "0.9",
                                            "key_guidance": "4", **fields}, file=("tune.mid", small_midi()))
    assert status == 202, job
    job = studio.wait(job["id"])
    assert job["state"] == "done", job
    (call,) = calls
    assert call.task == task
    assert call.music.note_num() == Score.from_midi(small_midi()).note_num()
    # Not defaults (0.7 bars, 0.85 onsets; key guidance 10).
    assert call.num_samples == 1 and call.seed == 5 and call.sampling == {"temperature": 0.9, "key_guidance": 4.0}
    assert call.constrain is True and call.on_step is not None  # the page's progress
    for name, value in expected.items():
        assert getattr(call, name) == value
    # No caption written: the task gets none, and uses its own default.
    assert call.text == expected.get("text")


def test_full_queue_refuses_and_both_waiting_requests_finish(studio):
    # The worker needs the model lock: holding it keeps the first request running, so the
    # second waits in the queue (of one) and a third finds it full.
    with studio.models._lock:
        _, first = studio.post("/api/jobs", {"model": "tiny", "max_new_tokens": "30", "seed": "1"})
        deadline = time.monotonic() + 10
        while studio.get(f"/api/jobs/{first['id']}")[1]["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        status, second = studio.post("/api/jobs", {"model": "tiny", "max_new_tokens": "30", "seed": "2"})
        assert status == 202 and second["state"] == "queued" and second["position"] == 1
        assert_one_line(*studio.post("/api/jobs", {"model": "tiny"}), 429, "busy", "try again")
        assert_still_serving(studio)
    first, second = studio.wait(first["id"]), studio.wait(second["id"])
    assert first["state"] == second["state"] == "done"
    notes = [Score.from_midi(studio.request(job["results"][0]["files"]["mid"])[1]).note_num()
             for job in (first, second)]
    assert all(count > 0 for count in notes)


def test_it_serves_only_its_own_folder_and_its_own_results(studio):
    assert studio.get("/static/studio.js")[0] == 200
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2fserver.py",
                 "/static/%2e%2e/%2e%2e/models.py", "/api/results/..%2f..%2fetc/mid", "/etc/passwd"):
        status, body = studio.get(path)
        assert status == 404 and "\n" not in body["error"], (path, body)
    assert_one_line(*studio.get(f"/api/results/{'0' * 32}/mid"), 404, "no such result")
    assert_one_line(*studio.get(f"/api/jobs/{'0' * 32}"), 404, "no such request")


# ----------------------------------------------------------------------------- the page in Chromium


def test_page_in_headless_chromium_generates_and_shows_everything(studio, tmp_path):
    from studio_browser import MISSING, PAGE_READY, RESULT_SHOWN, Browser, find_chromium

    if find_chromium() is None:
        pytest.skip(MISSING)
    import os

    with Browser(width=1400, height=1000) as browser:
        browser.goto(studio.url + "/")
        browser.wait_for(PAGE_READY, what="the model to load")
        caption = studio.models.get("tiny").default_text(None, seed=0)
        assert caption and browser.evaluate("document.querySelector('#caption').value") == caption
        # The instruments stand under their roles; a part picked there goes into the caption by its role.
        programs = studio.models.get("tiny").codec.corpus.program_list
        roles = browser.evaluate("[...document.querySelectorAll('#instruments .role')].map(group => group.dataset.role)")
        assert sorted(roles) == sorted({program_role(program) for program in programs})
        first = programs[0]
        original = browser.evaluate(f"document.querySelector('#instruments input[data-program=\"{first}\"]').value")
        browser.evaluate(f"(() => {{ const input = document.querySelector('#instruments input[data-program=\"{first}\"]');"
                         f" input.value = '{int(original) + 2}'; input.dispatchEvent(new Event('change', {{bubbles: true}})); }})()")
        built = browser.wait_for("document.querySelector('#caption').value !== " + json.dumps(caption) + " ? "
                                 "document.querySelector('#caption').value : ''", what="the caption rebuilt")
        assert program_role(first) in built.split("Parts: ")[1].split("\n")[0]
        before = json.dumps(caption)
        browser.evaluate(f"(() => {{ document.querySelector('#instruments input[data-program=\"{first}\"]').value = '{original}';"
                         f" document.querySelector('#caption').value = {before}; }})()")  # the rest runs on the drawn caption
        # An error shows as one line on the page, and the page goes on working.
        upload = tmp_path / "notes.txt"
        upload.write_text("not music")
        browser.evaluate("document.querySelector('#task-continue').click()")
        browser.set_files("#upload", [str(upload)])
        browser.evaluate("document.querySelector('#generate').click()")
        error = browser.wait_for("document.querySelector('#error').hidden ? '' : "
                                 "document.querySelector('#error').textContent", what="the error line")
        assert "notes.txt is not a MIDI file" in error and "\n" not in error

        browser.evaluate("document.querySelector('#task-generate').click()")
        # Every sampling setting the page has a field for shows the model's own value.
        assert float(browser.evaluate("document.querySelector('#key_guidance').value")) == KEY_GUIDANCE
        browser.evaluate("document.querySelector('#max_new_tokens').value = '80'")
        browser.evaluate("document.querySelector('#generate').click()")
        browser.wait_for(RESULT_SHOWN, what="the piano roll, the audio and the sheet music")
        assert browser.evaluate("document.querySelector('#error').hidden")
        links = browser.evaluate("[...document.querySelectorAll('.result .downloads a')].map(a => a.href)")
        assert [link.split("/")[-1] for link in links] == ["mid?download=true", "musicxml?download=true",
                                                           "wav?download=true"]
        statuses = browser.evaluate(f"Promise.all({json.dumps(links)}.map(link => fetch(link).then(r => r.status)))")
        assert statuses == [200, 200, 200]
        assert browser.evaluate("document.querySelectorAll('#history li').length") >= 1
        assert browser.evaluate("document.querySelector('.job .state').textContent").startswith("Done in")
        browser.screenshot(tmp_path / "studio.png")
        if os.environ.get("MIDILLM_STUDIO_SCREENSHOT"):
            browser.screenshot(os.environ["MIDILLM_STUDIO_SCREENSHOT"])
        # The page asked for nothing but the studio's own addresses.
        outside = [url for url in browser.requests
                   if not url.startswith((studio.url + "/", "data:", "blob:", "about:"))]
        assert browser.requests and not outside, outside
    assert (tmp_path / "studio.png").stat().st_size > 10_000


# ----------------------------------------------------------------------------- the command, network off


OFFLINE_DRIVER = r'''
import json, subprocess, sys, time, urllib.request
port = sys.argv[1]
url = f"http://127.0.0.1:{port}"
server = subprocess.Popen([sys.executable, "-m", "midillm.cli", "studio", "--port", port],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
try:
    deadline = time.monotonic() + 120
    while True:
        try:
            page = urllib.request.urlopen(url + "/", timeout=5).read().decode()
            break
        except OSError:
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "the studio did not start"
            time.sleep(0.3)
    assert "midillm studio" in page
    for asset in ("/static/studio.js", "/static/studio.css"):
        assert urllib.request.urlopen(url + asset, timeout=5).status == 200
    models = json.load(urllib.request.urlopen(url + "/api/models", timeout=5))["models"]
    body = "model=bach-smollm2&max_new_tokens=40".encode()
    job = json.load(urllib.request.urlopen(urllib.request.Request(url + "/api/jobs", data=body), timeout=60))
    while job["state"] not in ("done", "error"):
        time.sleep(0.2)
        job = json.load(urllib.request.urlopen(url + "/api/jobs/" + job["id"], timeout=60))
    wav = urllib.request.urlopen(url + job["results"][0]["files"]["wav"], timeout=10).read() if job["state"] == "done" else b""
    print(json.dumps({"models": models, "state": job["state"], "message": job["message"], "wav": wav[:4].decode()}))
finally:
    server.terminate()
    server.wait(timeout=20)
'''


def test_studio_command_opens_on_the_demo_bundle_with_the_network_off(tiny_bundle, tmp_path):
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not unshare or not ip or subprocess.run([unshare, "-n", "true"], capture_output=True).returncode:
        pytest.skip("no network namespace here (needs root, `unshare` and `ip`)")
    # A fresh clone after `make demo`: the demo's bundle where the demo writes it.
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    shutil.copytree(tiny_bundle, tmp_path / "runs" / "demo" / "bach-smollm2")
    driver = tmp_path / "driver.py"
    driver.write_text(OFFLINE_DRIVER)
    command = f"{ip} link set lo up && exec {sys.executable} {driver} {free_port()}"
    result = subprocess.run([unshare, "-n", "sh", "-c", command], cwd=tmp_path, capture_output=True, text=True,
                            timeout=240, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"models": ["bach-smollm2"], "state": "done", "message": "", "wav": "RIFF"}
