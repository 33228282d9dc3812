"""`midillm push`: upload a bundle to the Hugging Face Hub with `huggingface_hub`.

The token is the usual one (`HF_TOKEN`, or `hf auth login`); offline (`HF_HUB_OFFLINE=1`), no
token, or any failure of the Hub is one `HubError` line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from midillm.bundle_files import UPLOAD_IGNORE
from midillm.errors import first_line

from .bundle import check_bundle, prepare_bundle_for_hub

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


class HubError(OSError):
    """Talking to the Hub failed (offline, no token, refused); the message is one line."""


def _offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.HF_HUB_OFFLINE or value.upper() in ("1", "ON", "YES", "TRUE")


def push_bundle(bundle: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                license: str | None = None, render: bool = True, log=None) -> str:
    """Make the bundle Hub-ready, create the repository and upload; returns the commit URL."""
    from huggingface_hub import HfApi, get_token

    bundle = check_bundle(bundle)
    if not _REPO_ID.match(repo_id or ""):
        raise HubError(f"--repo must look like OWNER/NAME, not {repo_id!r}")
    if _offline():
        raise HubError("cannot push: offline (HF_HUB_OFFLINE is set)")
    token = token or get_token()
    if not token:
        raise HubError("cannot push: no Hugging Face token; run `hf auth login` or set HF_TOKEN")
    prepare_bundle_for_hub(bundle, repo_id=repo_id, license=license, render=render, log=log)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if log:
            log(f"Uploading {bundle} to {url}")
        commit = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(bundle),
                                   ignore_patterns=UPLOAD_IGNORE,
                                   commit_message="Upload midillm bundle")
    except Exception as error:  # network, auth, refused: the user needs one line either way
        raise HubError(f"cannot push to {repo_id}: {first_line(error)}") from error
    return str(getattr(commit, "commit_url", commit))
