"""The installed version of midillm, recorded in every codec and bundle it writes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("midillm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
