"""Embeddings, the index, similar pieces, recommendations and generating for a taste, on a tiny
bundle trained on Bach chorales (a few seconds)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from symusic import Note, Score

from conftest import train_tiny_bundle
from midillm.cli import main
from midillm.decoding.embedding import canonical_transposition, embedding_windows
from midillm.decoding.generate import MidiLM
from midillm.retrieval import Index, RetrievalError, build_index, similar, taste_prompt
from midillm.retrieval.index import INDEX_FILE, VECTORS_FILE
from midillm.tokenization.caption import names_in_caption, part_names
from midillm.tokenization.tonality import in_common_key


@pytest.fixture(scope="module")
def chorales(tmp_path_factory, bach_midi_files):
    """Distinct chorales (the corpus holds some twice, as .mxl and .krn: same music, other bytes)."""
    folder = tmp_path_factory.mktemp("chorales")
    seen = set()
    for path in bach_midi_files:
        score = Score(str(path))
        key = tuple(sorted((note.time, note.pitch) for track in score.tracks for note in track.notes)[:64])
        if key in seen:
            continue
        seen.add(key)
        shutil.copy(path, folder / path.name)
    return folder


# Not conftest's shared tiny_bundle: retrieval is tested on real pieces (distinct chorales, their
# near-duplicates and transpositions), so the model is trained on the chorales themselves.
@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_models, chorales):
    from midillm.tokenization.dataset import PrepareConfig, prepare

    data = tmp_path_factory.mktemp("chorale-data")
    prepare(PrepareConfig(source=str(chorales), out=str(data), base_model=str(tiny_models["tied"]),
                          seq_len=128, num_workers=1), log=lambda *_: None)
    return train_tiny_bundle(tiny_models["tied"], data, tmp_path_factory.mktemp("chorale-bundle"))


@pytest.fixture(scope="module")
def lm(bundle):
    return MidiLM.from_pretrained(bundle, dtype=torch.float32)


@pytest.fixture(scope="module")
def index_path(tmp_path_factory, bundle, chorales):
    out = tmp_path_factory.mktemp("index") / "chorales"
    build_index(bundle, str(chorales), out, num_workers=1, progress=False, log=lambda *_: None)
    return out


def transposed(path, semitones: int) -> Score:
    score = Score(str(path))
    for track in score.tracks:
        track.shift_pitch(semitones, inplace=True)
    return score


def test_embeddings_are_deterministic_and_read_every_music_token_once(lm, bundle, chorales):
    paths = sorted(chorales.glob("*.mid"))[:3]
    first = lm.embed(paths)
    assert first.shape == (3, lm.model.config.hidden_size) and first.dtype == np.float32
    np.testing.assert_array_equal(first, lm.embed(paths))
    np.testing.assert_array_equal(first, MidiLM.from_pretrained(bundle, dtype=torch.float32).embed(paths))
    assert not np.allclose(first[0], first[1])
    # A piece longer than the context is read in windows, each starting with the caption and <music>.
    windows = embedding_windows(lm, Score(str(paths[0])))
    music = [lm_id for bar in lm.codec.encode_bars(transposed(paths[0], canonical_transposition(
        Score(str(paths[0]))))) for lm_id in bar]
    assert len(windows) > 1 and all(len(ids) <= lm.context_length for ids, _ in windows)
    assert [lm_id for ids, head in windows for lm_id in ids[head:]] == music


def test_an_index_records_its_float_precision_and_its_queries_use_it(index_path, chorales):
    from midillm.decoding.precision import default_precision
    from midillm.retrieval.build import QueryEmbedder

    index = Index.load(index_path)
    # Not int8 even on a CPU (int8 weights move the vectors): the float precision an index always had.
    assert index.model["precision"] == default_precision("embed") and index.model["precision"] != "int8"
    embedder = QueryEmbedder(index)
    piece = index.pieces[2]
    vector = embedder.vector(Score(piece["path"]))  # a Score is always embedded, never looked up
    assert embedder._lm.precision == index.model["precision"]
    np.testing.assert_array_equal(vector, index.vectors[2])
    # An index that records another precision gets its queries in that one.
    header = json.loads((index_path / INDEX_FILE).read_text())
    header["model"]["precision"] = "fp32"
    other = index_path.parent / "fp32-index"
    other.mkdir(exist_ok=True)
    shutil.copy(index_path / VECTORS_FILE, other / VECTORS_FILE)
    (other / INDEX_FILE).write_text(json.dumps(header))
    embedder = QueryEmbedder(Index.load(other))
    embedder.vector(Score(piece["path"]))
    assert embedder._lm.precision == "fp32"


def test_each_piece_is_its_own_nearest_neighbour(index_path, chorales):
    index = Index.load(index_path)
    assert len(index) == len(list(chorales.glob("*.mid")))
    for row in range(len(index)):
        assert index.similar(index.vectors[row], k=1)[0]["name"] == index.pieces[row]["name"]
    # Through a query file too: the index's stored vector of that content.
    top = similar(index, index.pieces[4]["path"], k=3)
    assert top[0]["name"] == index.pieces[4]["name"] and top[0]["score"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("semitones", [-5, 2, 7])
def test_a_transposed_copy_finds_its_original_among_the_three_nearest(index_path, lm, chorales, semitones):
    index = Index.load(index_path)
    for row in range(0, len(index), 4):
        copy = transposed(index.pieces[row]["path"], semitones)
        names = [result["name"] for result in index.similar(lm.embed([copy])[0], k=3)]
        assert index.pieces[row]["name"] in names


def test_recommend_honours_dislikes(index_path):
    stored = Index.load(index_path)
    # A second recording of the disliked piece (its vector, under another name and hash).
    index = Index(np.vstack([stored.vectors, stored.vectors[1]]),
                  stored.pieces + [{**stored.pieces[1], "name": "disliked-again", "content_hash": "other"}],
                  stored.model)
    liked, disliked = index.vectors[0], index.vectors[1]
    without = [result["name"] for result in index.recommend([liked], k=len(index))]
    assert "disliked-again" in without and index.pieces[0]["name"] not in without
    results = index.recommend([liked], [disliked], k=len(index))
    names = [result["name"] for result in results]
    assert index.pieces[1]["name"] not in names and "disliked-again" not in names
    # What is left is at least as close to the liked piece as to the disliked one, ranked by
    # similarity to the liked piece less half the similarity to the disliked one.
    rows = {piece["name"]: row for row, piece in enumerate(index.pieces)}
    for result in results:
        unit = index.unit[rows[result["name"]]]
        assert unit @ index.unit[0] >= unit @ index.unit[1] - 1e-6
        assert result["score"] == pytest.approx(unit @ index.unit[0] - 0.5 * unit @ index.unit[1], abs=1e-5)
    assert [result["score"] for result in results] == sorted((result["score"] for result in results), reverse=True)


def test_diversity_keeps_one_piece_of_each_near_duplicate_group(bundle, chorales, tmp_path, lm):
    folder = tmp_path / "with-copies"
    shutil.copytree(chorales, folder)
    query = sorted(chorales.glob("*.mid"))[0]
    for semitones in (2, 3):
        transposed(query, semitones).dump_midi(folder / f"copy-{semitones}.mid")
    out = tmp_path / "index"
    build_index(bundle, str(folder), out, num_workers=1, progress=False, log=lambda *_: None)
    index = Index.load(out)
    plain = [result["name"] for result in similar(index, query, k=3)]
    assert {query.name, "copy-2.mid", "copy-3.mid"} == set(plain)
    diverse = [result["name"] for result in similar(index, query, k=3, diverse=True)]
    assert len(diverse) == 3 and len({"copy-2.mid", "copy-3.mid", query.name} & set(diverse)) == 1


def test_rerunning_embed_adds_only_new_or_changed_pieces(bundle, chorales, tmp_path, monkeypatch):
    folder = tmp_path / "source"
    shutil.copytree(chorales, folder)
    (folder / "broken.mid").write_bytes(b"MThd not really")
    out = tmp_path / "index"
    first = build_index(bundle, str(folder), out, num_workers=1, progress=False, log=lambda *_: None)
    count = len(list(chorales.glob("*.mid")))
    assert first["embedded"] == count and first["pieces"] == count
    assert [item["name"] for item in first["skipped"]] == ["broken.mid"]

    import midillm.retrieval.build as build

    def no_model(_):
        raise AssertionError("an unchanged source must not load the model")

    monkeypatch.setattr(build, "load_model", no_model)
    again = build_index(bundle, str(folder), out, num_workers=1, progress=False, log=lambda *_: None)
    assert (again["embedded"], again["kept"], again["pieces"]) == (0, count, count)
    monkeypatch.undo()

    paths = sorted(path for path in folder.glob("*.mid") if path.name != "broken.mid")
    transposed(paths[0], 1).dump_midi(paths[0])  # changed
    shutil.copy(paths[1], folder / "same-music-new-name.mid")  # known content
    transposed(paths[2], 12).dump_midi(folder / "new.mid")  # new
    before = Index.load(out)
    third = build_index(bundle, str(folder), out, num_workers=1, progress=False, log=lambda *_: None)
    assert (third["embedded"], third["reused"], third["kept"]) == (2, 1, count - 1)
    after = Index.load(out)
    assert len(after) == count + 2
    row = next(row for row, piece in enumerate(after.pieces) if piece["name"] == paths[0].name)
    assert after.pieces[row]["content_hash"] != before.pieces[row]["content_hash"]


def run_cli(capsys, *argv):
    code = main([str(value) for value in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_embed_similar_recommend_and_json(bundle, chorales, tmp_path, capsys):
    out = tmp_path / "index"
    code, printed, _ = run_cli(capsys, "embed", bundle, chorales, "--out", out, "--num-workers", 1)
    assert code == 0 and "embedded: " in printed and (out / VECTORS_FILE).is_file()
    query = sorted(chorales.glob("*.mid"))[2]
    code, printed, _ = run_cli(capsys, "similar", out, query, "-k", 3, "--json")
    results = json.loads(printed)
    assert code == 0 and len(results) == 3 and results[0]["name"] == query.name
    assert {"rank", "score", "name", "path", "metadata", "content_hash"} <= set(results[0])
    others = sorted(chorales.glob("*.mid"))
    code, printed, _ = run_cli(capsys, "recommend", out, "--likes", others[0], others[1],
                               "--dislikes", others[2], "-k", 4)
    assert code == 0 and len(printed.strip().splitlines()) == 4
    assert others[2].name not in printed and others[0].name not in printed


def test_cli_failures_are_one_line_and_exit_1(bundle, chorales, index_path, tmp_path, capsys, tiny_models):
    query = sorted(chorales.glob("*.mid"))[0]
    only_bad = tmp_path / "only-bad"
    only_bad.mkdir()
    (only_bad / "empty.mid").write_bytes(b"")
    report = build_index(bundle, str(only_bad), tmp_path / "empty", num_workers=1, progress=False,
                         log=lambda *_: None)
    assert report["pieces"] == 0 and report["skipped"] == [{"name": "empty.mid", "reason": "empty file"}]
    foreign_file = tmp_path / "foreign.npz"
    np.savez(foreign_file, vectors=np.zeros((2, 3)))
    foreign_folder = tmp_path / "foreign"
    foreign_folder.mkdir()
    (foreign_folder / INDEX_FILE).write_text(json.dumps({"format": "faiss", "pieces": []}))
    bad_query = tmp_path / "bad.mid"
    bad_query.write_bytes(b"this is not MIDI at all")

    # Another model: the index's recorded fingerprint no longer matches the bundle's files.
    other_model = tmp_path / "other-model"
    shutil.copytree(bundle, other_model)
    moved = Index.load(index_path)
    moved.model["path"] = str(other_model)
    moved.save(tmp_path / "other-model-index")
    weights = next(other_model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    transposed(query, 1).dump_midi(tmp_path / "unindexed.mid")

    cases = [
        (["similar", tmp_path / "empty", query], "holds no pieces"),
        (["similar", foreign_file, query], "is not a midillm index"),
        (["recommend", foreign_folder, "--likes", query], "is not a midillm index"),
        (["similar", tmp_path / "missing-index", query], "index not found"),
        (["similar", index_path, bad_query], "not a valid MIDI file"),
        (["similar", index_path, tmp_path / "no-such.mid"], "not found"),
        (["similar", tmp_path / "other-model-index", tmp_path / "unindexed.mid"], "another model"),
        (["embed", tiny_models["tied"], chorales, "--out", tmp_path / "x"], "not a midillm bundle"),
        (["generate", bundle, "--out", tmp_path / "g", "--like", bad_query], "not a valid MIDI file"),
        (["generate", bundle, "--out", tmp_path / "g", "--rank-by", "features"], "--rank-by goes with --like"),
        (["generate", bundle, "--out", tmp_path / "g", "--like", query, "--adapt-steps", "-1"], "must be 0 or more"),
    ]
    capsys.readouterr()
    for argv, expected in cases:
        code, printed, error = run_cli(capsys, *argv)
        assert code == 1, (argv, printed, error)
        assert len(error.strip().splitlines()) == 1 and expected in error, (argv, error)
    with pytest.raises(RetrievalError, match="another model"):
        build_index(other_model, str(chorales), index_path, num_workers=1, progress=False)


def test_generate_for_a_taste(bundle, chorales, lm, tmp_path, capsys):
    liked = sorted(chorales.glob("*.mid"))[:3]
    prompt, caption, pieces, _, _ = taste_prompt(lm, liked)
    scores = [Score(str(path)) for path in liked]
    vectors = lm.embed(scores)
    nearest = int(np.argmax(vectors @ vectors.mean(axis=0)))
    # The prompt is the opening of one liked piece, moved to the key the model writes in (C major
    # or C minor: the default `prepare --common-key`): its first notes, only two bars of them.
    assert lm.codec.common_key
    scores = [in_common_key(score)[0] for score in scores]
    opening = sorted((note.time, note.pitch) for track in scores[nearest].tracks for note in track.notes)
    prompt_notes = sorted((note.time, note.pitch) for track in prompt.tracks for note in track.notes)
    assert 0 < len(prompt_notes) < len(opening) and prompt_notes == opening[:len(prompt_notes)]
    # The caption is that piece's own, without a title, so that it names the parts the prompt
    # plays; what a MIDI file cannot say (the composer) comes from the corpus's typical caption.
    own = [line for line in lm.codec.caption(scores[nearest]).splitlines() if not line.startswith("Title:")]
    metadata = [line for line in caption.splitlines() if line.startswith(("Composer:", "Genre:"))]
    assert caption.splitlines() == metadata + own
    assert set(metadata) <= set(lm.typical_text().splitlines())
    assert names_in_caption(caption) == part_names(prompt) and len(part_names(prompt)) >= 2
    code, printed, error = run_cli(capsys, "generate", bundle, "--out", tmp_path / "taste", "--like", *liked,
                                   "-n", 2, "--max-new-tokens", 40)
    assert code == 0, error
    assert "Prompt: the opening of the liked piece" in printed
    assert len(list((tmp_path / "taste").glob("sample-*.mid"))) == 2


def test_generating_for_a_taste_keeps_the_candidates_nearest_it(chorales, lm):
    from midillm.retrieval import generate_for_taste, rank_by_taste

    pieces = sorted(chorales.glob("*.mid"))
    liked = pieces[0]
    # Among other chorales, a transposed copy of the liked piece is the nearest to its taste, in
    # the model's representation, in features and by both.
    taste = taste_prompt(lm, [liked])
    candidates = [Score(str(path)) for path in pieces[1:6]] + [transposed(liked, 3)]
    for ranking in ("model", "features", "both"):
        assert rank_by_taste(lm, candidates, taste, by=ranking)[0] == len(candidates) - 1, ranking
    # In features, a candidate with twice the liked piece's notes a beat ranks after its own
    # texture; a candidate with nothing to embed or measure is ranked last, not an error.
    own = Score(str(liked))
    doubled = own.copy()
    for track in doubled.tracks:  # each note played as two of half its length
        halves = [Note(note.time + start, length, note.pitch, note.velocity) for note in track.notes
                  for start, length in ((0, note.duration // 2), (note.duration // 2, note.duration - note.duration // 2))]
        track.notes.clear()
        track.notes.extend(halves)
    assert rank_by_taste(lm, [doubled, transposed(liked, -2)], taste, by="features") == [1, 0]
    empty = Score(lm.codec.music_tokenizer.time_division)
    for ranking in ("model", "features", "both"):
        assert rank_by_taste(lm, [empty] + candidates, taste, by=ranking)[-1] == 0, ranking
    with pytest.raises(ValueError, match="choose one of"):
        rank_by_taste(lm, candidates, taste, by="popularity")

    taste = taste_prompt(lm, pieces[:2])
    drawn = lm.generate_ids(6, taste.prompt, taste.text, lm.sampling.updated(max_new_tokens=40), seed=0)
    kept = generate_for_taste(lm, pieces[:2], 2, settings=lm.sampling.updated(max_new_tokens=40), seed=0,
                              candidates_per_sample=3, taste=taste, adapt_steps=0)
    assert len(kept) == 2 and all(ids in drawn for ids in kept) and kept[0] != kept[1]
    assert len(lm.last_generation) == 2
    with pytest.raises(ValueError, match="at least 1"):
        generate_for_taste(lm, pieces[:2], 1, candidates_per_sample=0)


def test_adapting_to_a_taste_moves_the_model_only_inside_the_block(chorales, lm):
    from midillm.retrieval import adapted_to_taste
    from midillm.retrieval.adapt import taste_rows
    from midillm.tokenization.rows import IGNORE_INDEX

    pieces = [Score(str(path)) for path in sorted(chorales.glob("*.mid"))[:2]]
    taste = taste_prompt(lm, pieces)
    rows = taste_rows(lm, taste.pieces, taste.text)
    row_of_lm_id = {lm_id: row for row, lm_id in enumerate(lm.rows.tolist())}

    def loss_on_liked_pieces() -> float:
        """Mean NLL of the adaptation rows' music under the sampler's head (music rows only)."""
        total, count = 0.0, 0
        with torch.no_grad():
            for ids, labels in rows:
                positions = [position for position, label in enumerate(labels[1:]) if label != IGNORE_INDEX]
                hidden = lm.model.get_decoder()(input_ids=torch.tensor([ids])).last_hidden_state[0, :-1][positions]
                logits = hidden @ lm.model.get_output_embeddings().weight[lm.rows].T
                targets = torch.tensor([row_of_lm_id[labels[position + 1]] for position in positions])
                total += float(torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum"))
                count += len(positions)
        return total / count

    weights = {name: tensor.clone() for name, tensor in lm.model.state_dict().items()}
    before = loss_on_liked_pieces()
    with adapted_to_taste(lm, taste.pieces, taste.text, steps=12, learning_rate=3e-3) as losses:
        during = loss_on_liked_pieces()
        adapted = lm.generate_ids(2, taste.prompt, taste.text, lm.sampling.updated(max_new_tokens=30), seed=0)
    # The liked pieces became likelier while adapted (measured on all their rows: a step's loss is
    # on the rows it drew, which differ in how hard they are); afterwards the model is the one loaded.
    assert len(losses) == 12 and during < before - 0.05, (losses, before, during)
    assert loss_on_liked_pieces() == pytest.approx(before, abs=1e-6)
    after = lm.model.state_dict()
    assert after.keys() == weights.keys() and all(torch.equal(after[name], weights[name]) for name in weights)
    # Sampling while adapted still writes music that decodes, after the prompt.
    prompt_length = len(lm.prompt_ids(taste.prompt, taste.text))
    assert all(len(row) > prompt_length and lm.codec.decode(row).note_num() > 0 for row in adapted)
    # Adapting twice in a row works (the first adapter left nothing behind).
    with adapted_to_taste(lm, taste.pieces, taste.text, steps=1) as losses:
        assert len(losses) == 1


def test_an_int8_model_adapts_to_a_taste_in_float_and_is_int8_again_afterwards(bundle, chorales):
    from torch import nn

    from midillm.decoding.precision import Int8Linear
    from midillm.retrieval import adapted_to_taste

    lm = MidiLM.from_pretrained(bundle, dtype="int8")
    pieces = [Score(str(path)) for path in sorted(chorales.glob("*.mid"))[:2]]
    taste = taste_prompt(lm, pieces)
    weights = {name: tensor.clone() for name, tensor in lm.model.state_dict().items()}
    before = lm.generate_ids(2, taste.prompt, taste.text, lm.sampling.updated(max_new_tokens=30), seed=0)
    with adapted_to_taste(lm, taste.pieces, taste.text, steps=4, learning_rate=3e-3) as losses:
        # Inside: float Linear layers (LoRA-wrapped), trainable through; sampling still works.
        assert not any(isinstance(module, Int8Linear) for module in lm.model.modules())
        adapted = lm.generate_ids(2, taste.prompt, taste.text, lm.sampling.updated(max_new_tokens=30), seed=0)
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert all(lm.codec.decode(row).note_num() > 0 for row in adapted)
    # Afterwards: the very int8 layers again, the same weights, the same samples.
    layers = lm.model.get_decoder().layers
    assert not any(isinstance(module, nn.Linear) for module in layers.modules())
    after = lm.model.state_dict()
    assert after.keys() == weights.keys() and all(torch.equal(after[name], weights[name]) for name in weights)
    assert lm.precision == "int8"
    assert lm.generate_ids(2, taste.prompt, taste.text, lm.sampling.updated(max_new_tokens=30), seed=0) == before
