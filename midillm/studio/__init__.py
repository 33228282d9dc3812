"""`midillm studio`: a local web page for musicians who do not code.

A FastAPI server (`server`) with a static page of its own (`static/`: HTML, CSS and plain JS,
nothing from a CDN) over one generation queue (`jobs`) and the bundles it may use (`models`).
It listens on 127.0.0.1 by default and makes no outside request.
"""

from .models import StudioError, build_caption, find_models
from .server import DEFAULT_PORT, create_app, serve

__all__ = ["DEFAULT_PORT", "StudioError", "build_caption", "create_app", "find_models", "serve"]
