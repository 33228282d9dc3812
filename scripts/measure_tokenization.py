"""Measure the codec on a real corpus: LM tokens per note and round-trip fidelity.

    .venv/bin/python scripts/measure_tokenization.py music21:bach
    .venv/bin/python scripts/measure_tokenization.py path/to/midi/folder --vocab-size 8192

Splits the corpus as `midillm prepare` does (by content hash), trains music BPE on the train
split, and reports on the held-out pieces: LM tokens per note for plain REMI (one new LM token
per miditok token), REMI + music BPE, and the plain-text rendering through the LM's own
tokenizer; then the share of notes that survive decode(encode(x)) over every file.
"""

from __future__ import annotations

import argparse
import copy
import warnings


def music_tokens_per_note(codec, paths) -> float:
    from symusic import Score

    tokens = notes = 0
    for path in paths:
        score = Score(str(path))
        tokens += sum(len(bar) for bar in codec.encode_bars(score))
        notes += score.note_num()
    return tokens / notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", default="music21:bach")
    parser.add_argument("--base-model", default=None, help="Default: midillm's default base model.")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--tokenization", default="REMI")
    parser.add_argument("--limit", type=int, default=None)
    arguments = parser.parse_args()
    warnings.filterwarnings("ignore")

    from symusic import Score
    from tqdm.auto import tqdm

    # midillm (and with it the LM tokenizers) loads after the arguments are read, so that --help
    # answers at once; the base model's default is midillm's own.
    from midillm.tokenization import DEFAULT_BASE_MODEL, MusicCodec, load_lm_tokenizer
    from midillm.tokenization.dataset import split_of
    from midillm.tokenization.roundtrip import notes_kept
    from midillm.tokenization.sources import check_files, list_source

    arguments.base_model = arguments.base_model or DEFAULT_BASE_MODEL
    files, _ = list_source(arguments.source, limit=arguments.limit)
    checked, skipped = check_files(files)
    train = [piece.file.path for piece in checked if split_of(piece.content_hash, 0.05, 0.05) == "train"]
    held_out = [piece.file.path for piece in checked if split_of(piece.content_hash, 0.05, 0.05) != "train"]
    lm_tokenizer = load_lm_tokenizer(arguments.base_model)

    def codec(render="tokens"):
        # Each codec adds its own tokens, so each gets its own copy of the LM tokenizer.
        return MusicCodec.create(arguments.tokenization, lm_tokenizer=copy.deepcopy(lm_tokenizer),
                                 render=render, captions=False, base_model=arguments.base_model)

    plain, text, bpe = codec(), codec("text"), codec()
    bpe.train_bpe(train, arguments.vocab_size)
    print(f"{arguments.source}: {len(checked)} files ({len(skipped)} skipped), "
          f"BPE trained on {len(train)}, measured on {len(held_out)} held-out")
    print("| rendering | LM tokens per note (held-out) |\n|---|---|")
    for name, each in ((f"plain {arguments.tokenization}", plain), (f"{arguments.tokenization} + BPE {arguments.vocab_size}", bpe),
                       ("plain text via the LM tokenizer", text)):
        print(f"| {name} | {music_tokens_per_note(each, held_out):.3f} |")

    kept = total = 0
    for piece in tqdm(checked, desc="Round trip"):
        piece_kept, piece_total = notes_kept(bpe, Score(str(piece.file.path)))
        kept, total = kept + piece_kept, total + piece_total
    print(f"Round trip (REMI + BPE): {kept}/{total} notes kept = {100 * kept / total:.2f}%")


if __name__ == "__main__":
    main()
