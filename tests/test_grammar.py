"""The tokenization grammar: real pieces pass it, and anything sampled under it decodes cleanly."""

from __future__ import annotations

import pytest
import torch

from midillm import MusicCodec
from midillm.decoding.grammar import GrammarLogitsProcessor, MusicGrammar


@pytest.fixture(scope="module", params=[("REMI", 900), ("REMI", 0), ("TSD", 700), ("Structured", 600)],
                ids=lambda param: f"{param[0]}-bpe{param[1]}")
def codec(request, tiny_lm_tokenizer_path, bach_midi_files):
    from transformers import AutoTokenizer

    tokenization, vocab_size = request.param
    codec = MusicCodec.create(tokenization, lm_tokenizer=AutoTokenizer.from_pretrained(tiny_lm_tokenizer_path),
                              layout="bars" if vocab_size else "onsets")
    codec.train_bpe(bach_midi_files[:20], vocab_size)
    codec.train_compounds(bach_midi_files[:20])  # the onsets layout's note compounds (a no-op for bars)
    return codec


def test_real_pieces_are_accepted_token_by_token(codec, bach_midi_files, band_midi_files):
    grammar = MusicGrammar(codec)
    for path in bach_midi_files[20:30] + band_midi_files:
        ids = codec.encode(path)
        start = ids.index(codec.music_start_id) + 1
        state = grammar.state_after(ids[:start])
        for lm_id in ids[start:]:
            assert grammar.row_mask(state)[grammar.row_of_lm_id[lm_id]], (state, codec.lm_tokenizer.convert_ids_to_tokens(lm_id))
            state = grammar.advance(state, lm_id)


@pytest.mark.parametrize("row_logits", [False, True])
def test_random_samples_under_the_grammar_always_decode(codec, row_logits):
    grammar = MusicGrammar(codec)
    generator = torch.Generator().manual_seed(0)
    width = len(grammar.row_lm_ids) if row_logits else len(codec.lm_tokenizer)
    for _ in range(20):
        processor = GrammarLogitsProcessor(grammar, row_logits=row_logits)
        ids = torch.tensor([[codec.music_start_id]])
        for _ in range(200):
            scores = processor(ids, torch.randn(1, width, generator=generator))
            choice = torch.multinomial(torch.softmax(scores, -1), 1, generator=generator)
            next_id = grammar.row_lm_ids[choice.item()] if row_logits else choice.item()
            ids = torch.cat([ids, torch.tensor([[next_id]])], 1)
            if next_id == codec.music_end_id:
                break
        tokens = codec.music_tokens(ids[0].tolist())
        assert tokens, "the grammar let nothing through"
        assert codec.token_errors(ids[0].tolist()) == 0
        codec.decode(ids[0].tolist())  # decodes without raising


def test_end_of_music_only_after_a_complete_note(codec):
    grammar = MusicGrammar(codec)
    assert not grammar.row_mask(grammar.start_state())[grammar.end_row]
    pitch_ids = [lm_id for lm_id, walk in grammar.walks.items()
                 if walk.last_type in ("Pitch", "NoteOn") and walk.valid_inside]
    assert pitch_ids
    after_pitch = (grammar.walks[pitch_ids[0]].last_type, 0)
    assert not grammar.row_mask(after_pitch)[grammar.end_row]


@pytest.fixture(scope="module", params=[0, 700], ids=lambda size: f"adaptive-bpe{size}")
def corpus_codec(request, tiny_lm_tokenizer_path, bach_midi_files, band_midi_files):
    """A corpus-adaptive codec whose profile comes from chorales plus band files (drums, programs)."""
    from symusic import Score
    from transformers import AutoTokenizer

    from midillm.tokenization.caption import score_caption
    from midillm.tokenization.profile import measure_corpus

    paths = bach_midi_files[:20] + band_midi_files
    scores = [Score(str(path)) for path in paths]
    profile = measure_corpus(scores, [score_caption(score) for score in scores])
    codec = MusicCodec.create("REMI", lm_tokenizer=AutoTokenizer.from_pretrained(tiny_lm_tokenizer_path),
                              corpus=profile, layout="bars" if request.param else "onsets")
    codec.train_bpe(paths, request.param)
    codec.train_compounds(paths)
    return codec


def test_random_logits_under_the_corpus_constraints_give_sane_pieces(corpus_codec):
    """Whatever the model says, the constraints keep a piece inside its corpus's range."""
    from midillm.decoding.grammar import CorpusConstraints
    from midillm.eval.sanity import sample_sanity

    grammar = MusicGrammar(corpus_codec)
    profile = corpus_codec.corpus
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        processor = GrammarLogitsProcessor(grammar, row_logits=True, constraints=CorpusConstraints(grammar, profile))
        ids = torch.tensor([[corpus_codec.music_start_id]])
        for _ in range(300):
            scores = processor(ids, 3 * torch.randn(1, len(grammar.row_lm_ids), generator=generator))
            choice = torch.multinomial(torch.softmax(scores, -1), 1, generator=generator).item()
            ids = torch.cat([ids, torch.tensor([[grammar.row_lm_ids[choice]]])], 1)
            if grammar.row_lm_ids[choice] == corpus_codec.music_end_id:
                break
        score = corpus_codec.decode(ids[0].tolist())
        check = sample_sanity(score, profile)
        assert check["notes"] > 0
        assert check["max_notes_per_onset"] <= profile.max_notes_per_onset
        assert check["duplicate_notes"] == 0
        assert not check["foreign_programs"] and check["pitches_out_of_range"] == 0, check
        assert check["longest_gap_beats"] <= profile.max_gap_beats + 1e-6, check
        assert len(check["programs"]) <= profile.max_programs_per_piece


def test_without_constraints_random_logits_break_the_corpus_range(corpus_codec):
    """The same sampling without the constraints leaves the corpus's range: the test above is not vacuous."""
    from midillm.eval.sanity import sample_sanity

    grammar = MusicGrammar(corpus_codec)
    generator = torch.Generator().manual_seed(0)
    insane = 0
    for _ in range(4):
        processor = GrammarLogitsProcessor(grammar, row_logits=True)
        ids = torch.tensor([[corpus_codec.music_start_id]])
        for _ in range(300):
            scores = processor(ids, 3 * torch.randn(1, len(grammar.row_lm_ids), generator=generator))
            choice = torch.multinomial(torch.softmax(scores, -1), 1, generator=generator).item()
            ids = torch.cat([ids, torch.tensor([[grammar.row_lm_ids[choice]]])], 1)
        insane += not sample_sanity(corpus_codec.decode(ids[0].tolist()), corpus_codec.corpus)["sane"]
    assert insane >= 3
