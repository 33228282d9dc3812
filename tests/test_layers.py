"""The house rules the code can check itself: `import midillm` stays light, no part imports
training code to run a model, and the pipeline task is still registered for transformers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "midillm"
# Parts that run a model (or sit below training): none may import midillm.finetune.
NOT_TRAINING = ("model", "tokenization", "decoding", "eval", "hub", "retrieval", "studio", "audio")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function, relative imports resolved."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_no_part_that_runs_a_model_imports_training_code():
    offenders = [f"{path.relative_to(PACKAGE.parent)} imports {module}"
                 for part in NOT_TRAINING for path in sorted((PACKAGE / part).rglob("*.py"))
                 for module in sorted(imported_modules(path)) if module.startswith("midillm.finetune")]
    assert not offenders, offenders


def test_import_midillm_loads_neither_torch_nor_transformers_and_still_registers_the_task():
    code = """
import sys
import midillm
heavy = sorted(name for name in ("torch", "transformers", "miditok", "midillm.hub.pipeline") if name in sys.modules)
print("HEAVY", heavy)
from transformers import AutoModelForCausalLM  # the auto classes learn bundles now
from transformers import AutoConfig
print("AUTO", type(AutoConfig.for_model("midillm")).__name__)
from transformers.pipelines import PIPELINE_REGISTRY
print("TASK", "midi-generation" in PIPELINE_REGISTRY.get_supported_tasks())
"""
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "HEAVY []" in completed.stdout, completed.stdout
    assert "AUTO MidiLLMConfig" in completed.stdout and "TASK True" in completed.stdout, completed.stdout
