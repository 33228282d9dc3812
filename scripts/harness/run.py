"""Variants in subprocesses: a benchmark that compares variants runs each in a fresh process of
the same script, one after another, so that each variant's peak memory is its own and none
competes with another (or with a model still loaded) for the cores.

The protocol: the parent runs the script again with its own arguments plus `--one NAME`; the
child measures that one variant and prints one line `RESULT {json}` on stdout. Everything else
the child writes (its progress, on stderr) is not part of the result.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CHILD_OPTION = "--one"
RESULT_PREFIX = "RESULT "
# How much of a failed child's captured stderr is shown: its traceback, not its whole log.
FAILURE_TAIL_CHARS = 2000


def add_child_option(parser: argparse.ArgumentParser) -> None:
    """The hidden option a child is started with: the variant it measures."""
    parser.add_argument(CHILD_OPTION, help=argparse.SUPPRESS)  # internal: measure one variant, print its result


def print_result(result: dict) -> None:
    """The child's side: its result as the one line the parent picks out of its stdout."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def result_in(stdout: str) -> dict | None:
    """The last result line a child printed, or None if it printed none."""
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    return json.loads(lines[-1][len(RESULT_PREFIX):]) if lines else None


def child_command(script: str, arguments: list[str], name: str) -> list[str]:
    """The child is given the parent's own arguments, so no option the variant depends on can be
    left out of a hand-written list; the options only the parent reads are ignored there."""
    return [sys.executable, script, *arguments, CHILD_OPTION, name]


def run_in_subprocess(script: str, arguments: list[str], name: str, show_progress: bool = True) -> dict | None:
    """Run `script` for the variant `name` in a process of its own and return its result, or None
    (saying so on stderr) if it failed.

    show_progress: the child's stderr goes straight to ours, for long runs whose log is the
    progress; otherwise it is kept, and only its tail is shown when the variant fails.
    """
    output = subprocess.run(child_command(script, arguments, name), stdout=subprocess.PIPE,
                            stderr=None if show_progress else subprocess.PIPE, text=True)
    result = result_in(output.stdout)
    if output.returncode or result is None:
        tail = "" if show_progress else "\n" + (output.stderr or "")[-FAILURE_TAIL_CHARS:]
        print(f"{name}: failed (exit {output.returncode}){tail}", file=sys.stderr)
        return None
    return result


def rss_mib() -> float:
    """This process's resident memory now, in MiB (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB: in a child, the variant's own peak."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
