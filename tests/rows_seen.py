"""`midillm.finetune.train` as `accelerate launch` runs it, noting which rows each process
batches: tests/test_finetune.py launches it to see that processes read different rows.

    accelerate launch ... tests/rows_seen.py OUT_DIR --config FILE.yaml [key=value ...]

Writes OUT_DIR/rows-RANK.json: the sha256 of each row's input ids (int32), in the order batched.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from midillm.finetune.train import main
from midillm.model.data import Collate

seen: list[str] = []
batch = Collate.__call__


def noting(self, rows):
    seen.extend(hashlib.sha256(np.asarray(row["input_ids"], dtype=np.int32).tobytes()).hexdigest() for row in rows)
    return batch(self, rows)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    Collate.__call__ = noting
    code = main(sys.argv[2:])
    (out / f"rows-{os.environ.get('RANK', '0')}.json").write_text(json.dumps(seen))
    sys.exit(code)
