"""Writing a dated result: every figure a script writes carries the date, the command that
measured it and the machine (`harness.machine`), so that a reader can tell which run it is from
and run it again."""

from __future__ import annotations

import datetime
import json
import shlex
import sys
from pathlib import Path


def command_line(script: str | None = None, arguments: list[str] | None = None) -> str:
    """The command as a reader would type it from the repository root: `python scripts/NAME.py ...`."""
    script = Path(script or sys.argv[0]).name
    arguments = sys.argv[1:] if arguments is None else arguments
    return " ".join(["python", f"scripts/{script}", *(shlex.quote(argument) for argument in arguments)])


def today() -> str:
    return datetime.date.today().isoformat()


def written_header(hardware: str, command: str | None = None) -> list[str]:
    """The opening lines of a markdown report: who wrote it when, the command and the machine."""
    command = command or command_line()
    script = command.split()[1]
    return [f"Written by `{script}` on {today()}.", "", f"- Command: `{command}`", f"- Hardware: {hardware}"]


def run_info(hardware: dict | None = None, command: str | None = None) -> dict:
    """The date, command and machine of this run, as the "written" field of a JSON result."""
    from harness.machine import machine_info

    return {"date": today(), "command": command or command_line(), "machine": hardware or machine_info()}


def write_json(path: str | Path, data: dict, written: dict | None = None) -> Path:
    """`data` with `written` (default: this run's `run_info()`) first, as indented JSON. Floats
    that numpy hands back (and NaN) are written as JSON numbers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"written": written or run_info(), **data}, indent=1, default=float))
    return path


def write_markdown(path: str | Path, text: str, keep_below: str | None = None) -> Path:
    """Write a markdown report. With `keep_below`, a marker line: what people wrote below it in
    the file already there (why a target is missed, what would close it) is kept."""
    path = Path(path)
    if keep_below and path.is_file() and keep_below in path.read_text():
        text += "\n" + keep_below + path.read_text().split(keep_below, 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
