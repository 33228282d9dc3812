"""The floor that training, inference, eval and retrieval share: artifacts and the model runtime.

- `midillm.model.bundle`: `Bundle` (a bundle folder or Hub id: locate, check, load its model) and
  `BundleError`.
- `midillm.model.runtime`: precision, base-model loading, the codec's token rows, `MusicLM` (the
  loss over the music rows of the head).
- `midillm.model.data`: a `prepare` folder's rows on their way into a `MusicLM`: `load_prepared`,
  `check_labels`, `Collate`.

It sits above `midillm.tokenization` (which owns the prepared-data layout, `PreparedData`) and
below `midillm.finetune` and `midillm.decoding`, so nothing imports training code to run a model.
Import the modules themselves: this package imports nothing, so `torch` loads with `runtime` only.
"""
