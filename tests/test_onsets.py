"""The onsets layout written straight from the notes (`midillm.tokenization.onsets`) against the
general path through miditok's tokens: the same units, note for note."""

from __future__ import annotations

import random

import pytest
from symusic import Note, Score, Tempo, TimeSignature, Track

from conftest import MUSIC21_TEST_MIDI, make_band_score
from midillm import MusicCodec
from midillm.tokenization.codec import note_units, part_scores
from midillm.tokenization.onsets import onset_units, writes_directly
from midillm.tokenization.profile import measure_corpus


def general_units(codec, score, lengths_before=None):
    return [[tuple(unit) for unit in note_units(bar)] for bar in codec._onset_bars(score, lengths_before)]


def direct_units(codec, score, lengths_before=None):
    return onset_units(codec.music_tokenizer, part_scores(score), codec.note_order, codec.onset_time, lengths_before)


def awkward_score() -> Score:
    """What the chorales and the band fixture lack: compound and half-note metres, staccato notes
    (their lengths are written), a tempo change off the beat, two notes of one pitch at one onset,
    drums, and more tracks than the codec has parts (the extra ones join a part)."""
    rng = random.Random(7)
    tpq = 480
    score = Score(tpq)
    score.time_signatures.extend([TimeSignature(0, 6, 8), TimeSignature(8 * 3 * tpq, 2, 2),
                                  TimeSignature(8 * 3 * tpq + 4 * 4 * tpq, 3, 4)])
    score.tempos.extend([Tempo(0, 72.0), Tempo(5 * 3 * tpq + tpq // 2, 101.5)])
    end = 8 * 3 * tpq + 4 * 4 * tpq + 6 * 3 * tpq
    for number in range(18):
        track = Track(name=f"track {number}", program=number * 7 % 128, is_drum=number == 3)
        step = (tpq // 2, tpq, 3 * tpq // 2)[number % 3]
        for onset in range(number * tpq // 4, end, step):
            length = step if rng.random() < 0.6 else rng.choice((tpq // 4, tpq // 3, step // 2 or 1))
            track.notes.append(Note(onset, length, rng.randint(30, 90), rng.randint(20, 127)))
            if rng.random() < 0.05:  # the same pitch struck twice at once, another length
                track.notes.append(Note(onset, length * 2, track.notes[-1].pitch, 64))
        score.tracks.append(track)
    return score


@pytest.mark.parametrize("onset_time", ["shift", "position"])
def test_direct_onsets_layout_writes_the_general_paths_units(
        tiny_lm_tokenizer, bach_midi_files, band_midi_files, onset_time):
    scores = ([Score(str(path)) for path in bach_midi_files[:20] + band_midi_files + MUSIC21_TEST_MIDI]
              + [make_band_score(seed=5, bars=12), awkward_score()])
    general = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, onset_time=onset_time)  # velocities, lengths
    adapted = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, corpus=measure_corpus(scores[:20]),
                                onset_time=onset_time)
    covered = 0
    for codec in (general, adapted):
        assert writes_directly(codec.music_tokenizer)
        for score in scores:
            for lengths_before in (None, 2, 5):
                direct = direct_units(codec, score, lengths_before)
                if direct is None:
                    continue
                covered += 1
                assert direct == general_units(codec, score, lengths_before)
    # Every score is covered: the chorales, the band files and music21's test files.
    assert covered == 2 * 3 * len(scores)
    # The awkward score's lengths are written where notes stop short, and its extra tracks kept.
    units = [unit for bar in direct_units(general, awkward_score()) for unit in bar]
    assert any(token.startswith("Duration_") for unit in units for token in unit)
    assert any("TimeSig_2/2" in unit for unit in units)
    assert sum(token.startswith("Tempo_") for unit in units for token in unit) == 2


def test_a_codec_the_direct_path_does_not_cover_encodes_the_same_ids(tiny_lm_tokenizer, monkeypatch):
    """The general path (taken for other tokenizer settings) and the direct one give the same LM
    ids, compounds included, and the notes come back."""
    scores = [make_band_score(seed=seed, bars=8) for seed in range(3)] + [awkward_score()]
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, corpus=measure_corpus(scores))
    codec.train_compounds(scores[:2])
    direct = [codec.encode_bars(score) for score in scores]
    monkeypatch.setattr(codec, "_direct_layout", False)
    codec._unit_lm_ids.clear()
    assert [codec.encode_bars(score) for score in scores] == direct
    assert any(len(codec.music_token_parts[codec.music_id_of_lm_id(lm_id)]) > 1
               for bars in direct for bar in bars for lm_id in bar)  # compounds were used
    assert codec.decode(codec.encode(scores[0])).note_num() == scores[0].note_num()
