"""The tokenization grammar: real pieces pass it, and anything sampled under it decodes cleanly."""

from __future__ import annotations

import pytest
import torch

from midillm import MusicCodec
from midillm.decoding.grammar import GrammarLogitsProcessor, MusicGrammar


@pytest.fixture(scope="module", params=[("REMI", 900), ("REMI", 0), ("REMI", "positions"), ("TSD", 700),
                                        ("Structured", 600)],
                ids=lambda param: f"{param[0]}-bpe{param[1]}" if param[1] != "positions" else "REMI-onset-positions")
def codec(request, tiny_lm_tokenizer_path, bach_midi_files):
    from transformers import AutoTokenizer

    tokenization, vocab_size = request.param
    onset_time = "position" if vocab_size == "positions" else "shift"
    vocab_size = 0 if vocab_size == "positions" else vocab_size
    codec = MusicCodec.create(tokenization, lm_tokenizer=AutoTokenizer.from_pretrained(tiny_lm_tokenizer_path),
                              layout="bars" if vocab_size else "onsets", onset_time=onset_time)
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


@pytest.fixture(scope="module", params=[0, 700, "positions"],
                ids=lambda size: f"adaptive-bpe{size}" if size != "positions" else "adaptive-onset-positions")
def corpus_codec(request, tiny_lm_tokenizer_path, bach_midi_files, band_midi_files):
    """A corpus-adaptive codec whose profile comes from chorales plus band files (drums, programs)."""
    from symusic import Score
    from transformers import AutoTokenizer

    from midillm.tokenization.caption import score_caption
    from midillm.tokenization.profile import measure_corpus

    paths = bach_midi_files[:20] + band_midi_files
    scores = [Score(str(path)) for path in paths]
    profile = measure_corpus(scores, [score_caption(score) for score in scores])
    bpe = request.param if request.param != "positions" else 0
    codec = MusicCodec.create("REMI", lm_tokenizer=AutoTokenizer.from_pretrained(tiny_lm_tokenizer_path),
                              corpus=profile, layout="bars" if bpe else "onsets",
                              onset_time="position" if request.param == "positions" else "shift")
    codec.train_bpe(paths, bpe)
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


def test_time_never_stands_still_longer_than_the_corpus_lets_it(corpus_codec):
    """A model that would rather move time as far as it can (the longest shift, the next bar line)
    still strikes a new onset within the corpus's longest gap, in shifts or in positions."""
    import dataclasses

    from midillm.decoding.grammar import CorpusConstraints
    from midillm.eval.sanity import sample_sanity

    grammar = MusicGrammar(corpus_codec)
    profile = dataclasses.replace(corpus_codec.corpus, max_gap_beats=1.5)
    constraints = CorpusConstraints(grammar, profile)
    time_rows = [row for row, tokens in enumerate(constraints.row_tokens)
                 if tokens and tokens[0].split("_")[0] in ("Bar", "Shift", "Position")]
    steps = [int(tokens[0].split("_")[1]) if tokens[0].split("_")[1].isdigit() else 99
             for tokens in (constraints.row_tokens[row] for row in time_rows)]
    eager = torch.zeros(len(grammar.row_lm_ids))
    eager[time_rows] = 5.0 + torch.tensor(steps, dtype=torch.float) / 10  # the farther, the likelier
    generator = torch.Generator().manual_seed(0)
    processor = GrammarLogitsProcessor(grammar, row_logits=True, constraints=constraints)
    ids = torch.tensor([[corpus_codec.music_start_id]])
    for _ in range(200):
        scores = processor(ids, eager + torch.randn(len(grammar.row_lm_ids), generator=generator))
        choice = int(scores.argmax())
        ids = torch.cat([ids, torch.tensor([[grammar.row_lm_ids[choice]]])], 1)
        if grammar.row_lm_ids[choice] == corpus_codec.music_end_id:
            break
    check = sample_sanity(corpus_codec.decode(ids[0].tolist()), profile)
    assert check["onsets"] >= 8, check
    assert check["longest_gap_beats"] <= 1.5 + 1e-6, check


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


def _random_piece(codec, constraints, seed: int, steps: int = 300):
    grammar = constraints.grammar
    generator = torch.Generator().manual_seed(seed)
    processor = GrammarLogitsProcessor(grammar, row_logits=True, constraints=constraints)
    ids = torch.tensor([[codec.music_start_id]])
    for _ in range(steps):
        scores = processor(ids, 3 * torch.randn(1, len(grammar.row_lm_ids), generator=generator))
        choice = torch.multinomial(torch.softmax(scores, -1), 1, generator=generator).item()
        ids = torch.cat([ids, torch.tensor([[grammar.row_lm_ids[choice]]])], 1)
        if grammar.row_lm_ids[choice] == codec.music_end_id:
            break
    return codec.decode(ids[0].tolist())


def _as_voices(score):
    """Each part as the voice the rules read: every note lasts until its part's next onset at
    most (random logits hold notes across a part's next notes, which a chorale voice never does)."""
    from symusic import Note

    score = score.copy()
    for track in score.tracks:
        notes = sorted(track.notes, key=lambda note: (note.time, -note.pitch))
        onsets = sorted({note.time for note in notes})
        following = {time: later for time, later in zip(onsets, onsets[1:])}
        track.notes = [Note(note.time, min(note.duration, following.get(note.time, note.end) - note.time),
                            note.pitch, note.velocity) for note in notes]
    return score


def _crossings(score) -> int:
    """Onsets at which a part sounds above the part listed before it."""
    from midillm.tokenization.voice_leading import _top_voice

    parts = [track for track in score.tracks if track.note_num() and not track.is_drum]
    times = sorted({note.time for part in parts for note in part.notes})
    voices = [_top_voice(part, times) for part in parts]
    return sum(1 for upper, lower in zip(voices, voices[1:]) for a, b in zip(upper, lower)
               if a is not None and b is not None and b > a)


def test_strict_voice_leading_leaves_no_parallels_and_no_crossing(corpus_codec):
    """Random logits under strict voice leading: four chorale parts with no parallel fifths or
    octaves and no crossing, where the same logits without it have both."""
    from midillm.decoding.grammar import CorpusConstraints
    from midillm.tokenization.voice_leading import parallel_motion

    if corpus_codec.layout != "onsets":
        pytest.skip("strict voice leading is built for the onsets layout")
    grammar = MusicGrammar(corpus_codec)
    names = ["Soprano", "Alto", "Tenor", "Bass"]
    strict = crossed = strict_crossed = moves = 0
    for seed in range(4):
        loose = _random_piece(corpus_codec, CorpusConstraints(grammar, corpus_codec.corpus, programs=[0],
                                                              max_parts=4, part_names=names), seed)
        tight = _random_piece(corpus_codec, CorpusConstraints(grammar, corpus_codec.corpus, programs=[0],
                                                              max_parts=4, part_names=names,
                                                              strict_voice_leading=True), seed)
        loose, tight = _as_voices(loose), _as_voices(tight)
        crossed += _crossings(loose)
        motion = parallel_motion(tight)
        strict += motion["parallels"]
        moves += motion["moves"]
        strict_crossed += _crossings(tight)
        # One voice a part: one note an onset.
        assert all(len({note.time for note in track.notes}) == track.note_num() for track in tight.tracks)
    # Without the rules the same logits cross the voices all the time (the parallel rule's
    # refusals are checked one by one in test_forbidden_pitches_follow_the_rules).
    assert crossed > 20
    assert moves > 20 and strict == 0 and strict_crossed == 0


def test_forbidden_pitches_follow_the_rules():
    from midillm.decoding.voice_leading import Voices, forbidden_pitches

    # Soprano and bass an octave apart (72 / 60); the soprano moves to 74 at this onset.
    voices = Voices(before={0: 72, 3: 60}, now={0: 74})
    bass = forbidden_pitches(voices, 3, lowest_part=3, new_onset=False)
    assert bass[62] and bass[50]        # octave to octave (and a compound one): parallel
    assert not bass[60] and not bass[59] and not bass[65]  # holding on, or a third / sixth below
    assert bass[75]                     # above the soprano: crossing
    # A fifth (67 / 60) moving to a fifth is refused; to an octave it is not.
    voices = Voices(before={0: 67, 3: 60}, now={0: 69})
    bass = forbidden_pitches(voices, 3, lowest_part=3, new_onset=False)
    assert bass[62] and not bass[57]
    # Upper voices stay within an octave of their neighbour; the bass may lie further below.
    voices = Voices(before={0: 76, 1: 67, 2: 60})
    alto = forbidden_pitches(voices, 1, lowest_part=3, new_onset=True)
    assert alto[63] and not alto[64] and alto[77] and alto[59]
    bass = forbidden_pitches(voices, 3, lowest_part=3, new_onset=True)
    assert not bass[40] and bass[61]
    # The first note of a new onset has nothing to move in parallel with.
    voices = Voices(before={0: 72, 3: 60}, now={0: 74})
    assert not forbidden_pitches(voices, 3, lowest_part=3, new_onset=True)[62]
