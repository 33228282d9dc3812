"""`midillm prepare` at scale: throughput, peak memory and disk use on a corpus made here.

    python scripts/bench_scale.py                                 # 1,000 and 5,000 files
    python scripts/bench_scale.py --sizes 1000 5000 20000 50000   # the issue's full table
    python scripts/bench_scale.py --sizes 1000 --stop-at 0.3 0.8 --skip-sizes   # killed twice, resumed
    python scripts/bench_scale.py --sizes 200 --band-every 1      # Lakh-sized files only

The corpus (written once under WORK/corpus-bN, file i the same at every size, so sizes nest):
every N-th file (`--band-every`, 10) is a Lakh-sized band piece (~7,500 notes: drums, bass,
piano chords, a pad, a lead and a guitar over ~160 bars; each seed re-orchestrated with its own
programs, tempo and metre changes), the others Bach chorales from music21 (~500 notes)
transposed (-5..+6, then by octaves) and re-timed (tempo x0.8-1.25), so every file but the
repeats of variant 0 is distinct. Lakh MIDI's mean
is about 7,500 notes per file; the chorales keep a 5,000-file run within minutes on 2 cores.

Each size runs `midillm prepare` in a process of its own (`--num-workers` workers). Its memory
is sampled every 0.25 s over the whole process tree as PSS (proportional set size: a page the
forked workers share with the parent counts once), and as the main process's RSS. Reported:
wall time, files/s, notes/s, the peak memory, the dataset's size on disk, and the projected
time for Lakh MIDI's 176,581 files (7,500 notes each) at the measured notes/s.

`--stop-at 0.3 0.8` also prepares the smallest size straight in shards of 64 pieces, then
again into a second folder, SIGKILLs that once 30% and then 80% of its shards are written,
finishes it, and compares the datasets' fingerprints with the straight run's; the times show
that each run after a kill redid only the rest.

Measured: see docs/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

LAKH_FILES = 176_581
LAKH_NOTES_PER_FILE = 7_500


# ----------------------------------------------------------------------------- the corpus


def band_piece(seed: int):
    """A Lakh-sized General MIDI band piece, drawn from `seed`: six tracks over about 160 bars."""
    import numpy as np
    from symusic import Note, Score, Tempo, TimeSignature, Track

    rng = np.random.default_rng(seed)
    tpq = 480
    score = Score(tpq)
    bars = int(rng.integers(150, 175))
    change = int(rng.integers(bars // 2, bars))  # a metre change, as real songs have (a bridge in 3/4)
    score.time_signatures.extend([TimeSignature(0, 4, 4), TimeSignature(change * 4 * tpq, 3, 4)])
    score.tempos.extend([Tempo(0, float(rng.integers(70, 160))), Tempo(change * 4 * tpq, float(rng.integers(70, 160)))])
    bar_starts = np.array([bar * 4 * tpq if bar <= change else change * 4 * tpq + (bar - change) * 3 * tpq
                           for bar in range(bars + 1)])
    end = int(bar_starts[-1])
    # (program choices, is drum, low, high, step in ticks, notes per onset): re-orchestrated per seed.
    parts = [((0,), True, 35, 51, tpq // 2, 1), ((32, 33, 34, 35, 38), False, 28, 48, tpq, 1),
             ((0, 1, 2, 4, 5), False, 48, 72, tpq, 2), ((48, 49, 50, 52, 89), False, 55, 79, 2 * tpq, 1),
             ((56, 65, 66, 73, 80, 81), False, 67, 91, tpq // 4, 1), ((24, 25, 26, 27, 29), False, 52, 76, tpq // 2, 1)]
    for programs, is_drum, low, high, step, chord in parts:
        program = int(rng.choice(programs))
        onsets = np.repeat(np.arange(0, end, step), chord)
        track = Track(name=f"program {program}", program=program, is_drum=is_drum)
        track.notes = Note.from_numpy(onsets.astype(np.int32), np.full(len(onsets), step, dtype=np.int32),
                                      rng.integers(low, high + 1, len(onsets)).astype(np.int8),
                                      rng.integers(40, 120, len(onsets)).astype(np.int8))
        score.tracks.append(track)
    return score


def chorale_variant(chorale_path: Path, variant: int):
    """A chorale transposed and re-timed by `variant` (0: as it is). Variants 0-35 move it by
    -5..+6 semitones at three tempos; each further 36 move those by an octave or two (down,
    up, two down, two up), so 410 chorales give 73,800 distinct files (variant 5 repeats 0)."""
    from symusic import Score

    score = Score(str(chorale_path))
    shift = variant % 12 - 5 if variant else 0
    shift += 12 * (0, -1, 1, -2, 2)[variant // 36 % 5]
    for track in score.tracks:
        if not track.is_drum:
            track.shift_pitch(shift, inplace=True)
    factor = (0.8, 1.0, 1.25)[variant // 12 % 3]
    for tempo in score.tempos:
        tempo.qpm = tempo.qpm * factor
    return score


def make_corpus(folder: Path, size: int, band_every: int) -> Path:
    """WORK/corpus-bN with at least `size` files, and WORK/corpus-bN-SIZE: links to its first `size`."""
    from midillm.tokenization.sources import list_source

    corpus = folder / f"corpus-b{band_every}"
    corpus.mkdir(parents=True, exist_ok=True)
    chorales = [file.path for file in list_source("music21:bach")[0]]
    for index in range(size):
        path = corpus / f"{index:06d}.mid"
        if path.exists():
            continue
        if index % band_every == 0:
            band_piece(index).dump_midi(path)
        else:
            number = index - index // band_every - 1  # the chorale files counted so far
            chorale_variant(chorales[number % len(chorales)], number // len(chorales)).dump_midi(path)
    sized = folder / f"{corpus.name}-{size}"
    if not sized.is_dir():
        partial = sized.with_name(sized.name + ".tmp")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        for index in range(size):
            (partial / f"{index:06d}.mid").symlink_to(corpus.resolve() / f"{index:06d}.mid")
        partial.rename(sized)
    return sized


# ----------------------------------------------------------------------------- measuring a run


def memory_of(process) -> tuple[float, float]:
    """(PSS of the process and its children, RSS of the process), in MiB; 0 for what is gone."""
    import psutil

    tree, own = 0.0, 0.0
    try:
        members = [process] + process.children(recursive=True)
        own = process.memory_info().rss / 2**20
    except psutil.Error:
        return 0.0, 0.0
    for member in members:
        try:
            tree += member.memory_full_info().pss / 2**20
        except psutil.Error:
            pass
    return tree, own


def run_prepare(corpus: Path, out: Path, num_workers: int, stop_at: float | None = None,
                shards: int | None = None, shard_pieces: int | None = None) -> dict:
    """`midillm prepare` in a process of its own, its memory sampled; with `stop_at`, SIGKILLed
    once that share of its `shards` are written."""
    import psutil

    command = [sys.executable, "-m", "midillm.cli", "prepare", str(corpus), "--out", str(out),
               "--num-workers", str(num_workers)] + (["--shard-pieces", str(shard_pieces)] if shard_pieces else [])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = out.with_name(out.name + ".log")
    started = time.time()
    with open(log, "a") as stream:
        process = subprocess.Popen(command, env=env, stdout=stream, stderr=subprocess.STDOUT)
        watched = psutil.Process(process.pid)
        peak_tree = peak_own = 0.0
        killed = False
        while process.poll() is None:
            tree, own = memory_of(watched)
            peak_tree, peak_own = max(peak_tree, tree), max(peak_own, own)
            if stop_at is not None and len(list(out.glob("partial/*/shards/*.json"))) >= stop_at * shards:
                process.send_signal(signal.SIGKILL)
                killed = True
            time.sleep(0.25)
    if process.returncode and not killed:
        raise SystemExit(f"prepare failed (exit {process.returncode}); see {log}")
    return {"seconds": round(time.time() - started, 1), "peak_pss_mib": round(peak_tree),
            "peak_main_rss_mib": round(peak_own), "killed": killed}


def folder_mib(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20


def measure(corpus: Path, work: Path, num_workers: int) -> dict:
    size = len(list(corpus.iterdir()))
    out = work / f"prepared-{corpus.name}"
    shutil.rmtree(out, ignore_errors=True)
    out.with_name(out.name + ".log").unlink(missing_ok=True)
    result = run_prepare(corpus, out, num_workers)
    report = json.loads((out / "prepare.json").read_text())
    seconds = result["seconds"]
    notes_per_second = report["notes"] / seconds
    return {"files": size, **result, "counts": report["counts"], "notes": report["notes"],
            "rows": sum(split["rows"] for split in report["splits"].values()), "shards": report["shards"],
            "files_per_second": round(size / seconds, 2), "notes_per_second": round(notes_per_second),
            "dataset_mib": round(folder_mib(out / "dataset"), 1),
            "lakh_hours": round(LAKH_FILES * LAKH_NOTES_PER_FILE / notes_per_second / 3600, 2)}


def fingerprints(out: Path) -> dict:
    from datasets import load_from_disk

    return {split: data._fingerprint for split, data in load_from_disk(str(out / "dataset")).items()}


def resume_check(corpus: Path, work: Path, num_workers: int, stops: list[float], shard_pieces: int) -> dict:
    """A corpus prepared straight in shards of `shard_pieces`, then again, killed at each of
    `stops` (shares of its shards) and finished."""
    straight, out = work / f"prepared-{corpus.name}-straight", work / f"prepared-{corpus.name}-resumed"
    for folder in (straight, out):
        shutil.rmtree(folder, ignore_errors=True)
        folder.with_name(folder.name + ".log").unlink(missing_ok=True)
    straight_run = run_prepare(corpus, straight, num_workers, shard_pieces=shard_pieces)
    shards = json.loads((straight / "prepare.json").read_text())["shards"]
    runs = [run_prepare(corpus, out, num_workers, stop_at=stop, shards=shards, shard_pieces=shard_pieces)
            for stop in stops]
    runs.append(run_prepare(corpus, out, num_workers, shard_pieces=shard_pieces))
    resumed = [line for line in out.with_name(out.name + ".log").read_text().splitlines() if "Resuming" in line]
    return {"shard_pieces": shard_pieces, "shards": shards, "straight": straight_run, "runs": runs,
            "resuming": resumed, "same_fingerprints": fingerprints(out) == fingerprints(straight),
            "fingerprints": fingerprints(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000], help="Corpus sizes, in files.")
    parser.add_argument("--work", default="runs/bench-scale", help="Folder for the corpus and the prepared data.")
    parser.add_argument("--num-workers", type=int, default=2, help="prepare's --num-workers.")
    parser.add_argument("--band-every", type=int, default=10,
                        help="Every N-th file is a Lakh-sized band piece, the others chorales (1: all band pieces).")
    parser.add_argument("--stop-at", type=float, nargs="*", default=[],
                        help="Also prepare the smallest size straight and then killed at these shares of its "
                             "shards, then finished (shards of --resume-shard-pieces).")
    parser.add_argument("--resume-shard-pieces", type=int, default=64, help="Shard size of the --stop-at runs.")
    parser.add_argument("--skip-sizes", action="store_true", help="Only the --stop-at runs (the corpus must exist).")
    args = parser.parse_args()
    work = Path(args.work)
    results = {"sizes": [], "machine": {"cpus": os.cpu_count(), "load_average_before": os.getloadavg()}}
    corpora = []
    for size in sorted(args.sizes):
        started = time.time()
        corpora.append(make_corpus(work, size, args.band_every))
        print(f"corpus of {size} files ready ({time.time() - started:.0f} s)", file=sys.stderr)
        if not args.skip_sizes:
            results["sizes"].append(measure(corpora[-1], work, args.num_workers))
            print(json.dumps(results["sizes"][-1]), file=sys.stderr)
    if args.stop_at:
        results["resume"] = resume_check(corpora[0], work, args.num_workers, args.stop_at, args.resume_shard_pieces)
    results["machine"]["load_average_after"] = os.getloadavg()
    written = work / f"results-b{args.band_every}{'-resume' if args.skip_sizes else ''}.json"
    written.write_text(json.dumps(results, indent=2) + "\n")
    print("| files | wall s | files/s | notes/s | peak PSS, tree (MiB) | peak RSS, main (MiB) | dataset (MiB) "
          "| Lakh, projected (h) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in results["sizes"]:
        print(f"| {row['files']:,} | {row['seconds']} | {row['files_per_second']} | {row['notes_per_second']:,} "
              f"| {row['peak_pss_mib']} | {row['peak_main_rss_mib']} | {row['dataset_mib']} | {row['lakh_hours']} |")
    if "resume" in results:
        resume = results["resume"]
        print(f"resume ({resume['shards']} shards): straight {resume['straight']['seconds']} s; stopped: "
              + ", ".join(f"{run['seconds']} s{' (killed)' if run['killed'] else ''}" for run in resume["runs"]),
              "| same fingerprints:", resume["same_fingerprints"])
        for line in resume["resuming"]:
            print("  ", line)
    print(f"written: {written}")


if __name__ == "__main__":
    main()
