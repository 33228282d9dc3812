"""What the scripts under scripts/ share, so that each script holds only its own measurement.

- `harness.run`: running variants one after another, each in a process of its own
  (`run_in_subprocess` on the parent's side, `print_result` on the child's), and peak memory.
- `harness.machine`: naming the machine a figure was measured on (CPU model and bf16 flags,
  cores, memory, torch and its threads, or the GPU).
- `harness.report`: writing a dated result: the command line, a "Written by ... on DATE" header
  for a markdown report, JSON with the date, command and machine in it.
- `harness.load`: loading what `midillm` wrote: a prepared-data folder's report and pieces, the
  base model with a codec's new token rows.
- `harness.stretches`: features of equally long stretches of corpus pieces, for the scripts that
  place samples between the corpus and a target (bench_like.py, bench_temperature.py).

The scripts run as `python scripts/NAME.py`, so this folder is on their path and `import harness`
works without installing anything. No script imports another script: what two of them need
moves here. Heavy imports (torch, midillm) happen inside the functions that need them, so that
a script's `--help` stays instant.
"""
