"""`import midillm` registers the `midi-generation` task without importing transformers itself.

`midillm.hub.pipeline` (which registers the task, `AutoConfig` and `AutoModelForCausalLM` for
bundles) needs transformers, whose import takes seconds. So `import midillm` only asks Python to
import it once transformers is in use:

- when `transformers.pipelines` has loaded (`from transformers import pipeline`, or any pipeline
  use): before the caller gets `pipeline`, the task is known;
- when the auto model classes have loaded (`from transformers import AutoModelForCausalLM`), as
  long as no other import is still half done (`midillm.hub.pipeline` imports more of
  transformers, and a half-imported module would fail it); otherwise at the next of the two;
- at once, if transformers' pipelines were already loaded before midillm.

The hook is a finder on `sys.meta_path` that wraps the loader of those modules; it takes itself
off once the task is registered.
"""

from __future__ import annotations

import importlib.abc
import sys

PIPELINE_MODULE = "midillm.hub.pipeline"
PIPELINES = "transformers.pipelines"
AUTO_MODELS = "transformers.models.auto.modeling_auto"


def _half_imported(besides: str) -> bool:
    """Whether a module other than `besides` is still importing."""
    for name, module in list(sys.modules.items()):
        if name in (besides, "__main__"):
            continue
        if getattr(getattr(module, "__spec__", None), "_initializing", False):
            return True
    return False


def _register(loaded: str) -> None:
    if PIPELINE_MODULE in sys.modules:  # registered, or registering itself now (it imported `loaded`)
        _RegisterOnImport.remove()
        return
    if loaded != PIPELINES and _half_imported(loaded):
        return  # wait for a quieter moment: transformers' pipelines, or the next auto import
    _RegisterOnImport.remove()
    __import__(PIPELINE_MODULE)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it lends the real loader of a watched module a last step."""

    WATCHED = (PIPELINES, AUTO_MODELS)

    def find_spec(self, name, path, target=None):
        if name not in self.WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register(name)

        loader.exec_module = exec_then_register  # this spec's own loader object
        return spec

    @staticmethod
    def remove() -> None:
        sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _RegisterOnImport)]


def register_when_transformers_loads() -> None:
    """What `import midillm` runs: register now if transformers' pipelines are loaded, else on
    their import (or the auto classes')."""
    if PIPELINE_MODULE in sys.modules:
        return
    if PIPELINES in sys.modules:
        __import__(PIPELINE_MODULE)
        return
    if not any(isinstance(finder, _RegisterOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())
