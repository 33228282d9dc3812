"""The common key: pieces moved to C major / C minor by `prepare --common-key`, and a model
trained so writing the asked key by moving its music back (exact by construction)."""

from __future__ import annotations

import json

import pytest
import torch
from symusic import Score

from midillm.tokenization.caption import caption_field, key_name, key_tonic, part_names
from midillm.tokenization.tonality import (COMMON_KEYS, drawn_key, estimate_key, in_common_key, named_key,
                                           register_shift, shift_to, transposed)


def pitched(score: Score) -> list[tuple[int, int, int, int]]:
    """(track, onset, pitch, duration) of every pitched note."""
    return sorted((index, note.time, note.pitch, note.duration) for index, track in enumerate(score.tracks)
                  if not track.is_drum for note in track.notes)


def drums(score: Score) -> list[tuple[int, int]]:
    return sorted((note.time, note.pitch) for track in score.tracks if track.is_drum for note in track.notes)


# ----------------------------------------------------------------------------- keys


def four_voices(medians: list[int], drum_track: bool = False) -> Score:
    """Four parts, each a line of four notes around its median pitch; a drum track after them."""
    from symusic import Note, Track

    score = Score(480)
    for median in medians:
        track = Track(name="part", program=0)
        for index, pitch in enumerate((median - 2, median, median, median + 2)):
            track.notes.append(Note(index * 480, 480, pitch, 80))
        score.tracks.append(track)
    if drum_track:
        drums_track = Track(name="Drums", program=0, is_drum=True)
        drums_track.notes.append(Note(0, 120, 36, 100))
        score.tracks.append(drums_track)
    return score


def test_a_new_piece_moves_to_its_key_the_way_that_keeps_its_parts_in_register():
    ranges = [(52, 86), (48, 79), (44, 74), (31, 69)]  # the chorales' SATB ranges in the common key
    # Written where the corpus's voices sit: the nearer way, up 5 or down 5.
    assert register_shift(four_voices([70, 64, 58, 50]), 5, ranges) == 5
    assert register_shift(four_voices([70, 64, 58, 50]), -5, ranges) == -5
    # Written high (a soprano at 80 in A minor): up 5 would put it at 85, so down 7.
    assert register_shift(four_voices([80, 73, 68, 60]), 5, ranges) == -7
    # Written low and asked a key 5 below: up 7 instead.
    assert register_shift(four_voices([62, 55, 50, 40]), -5, ranges) == 7
    # A little high, but down 7 would take the bass under its lowest (38 - 2 - 7 = 29 < 31): up 5.
    assert register_shift(four_voices([74, 67, 62, 38]), 5, ranges) == 5
    # No move, nothing known of the parts, or drums alone: the move as asked.
    assert register_shift(four_voices([80, 73, 68, 60]), 0, ranges) == 0
    assert register_shift(four_voices([80, 73, 68, 60]), 5, [None] * 4) == 5
    assert register_shift(four_voices([], drum_track=True), 5, [(20, 30)]) == 5


def test_a_transposed_copy_lands_in_the_same_common_key(bach_midi_files):
    for path in bach_midi_files[:6]:
        score = Score(str(path))
        tonic, minor = estimate_key(score)
        common, metadata, shift = in_common_key(score)
        assert metadata["key"] == COMMON_KEYS[minor] and -6 <= shift <= 5
        # C major, or its relative minor: both modes written with the same notes.
        assert estimate_key(common) == ((9 if minor else 0), minor)
        for interval in (-5, -1, 2, 6):
            copy = transposed(score, interval)
            assert estimate_key(copy) == ((tonic + interval) % 12, minor)
            moved, _, _ = in_common_key(copy)
            # The same notes, at most an octave apart where the copy crossed the tritone.
            differences = {b[2] - a[2] for a, b in zip(pitched(common), pitched(moved))}
            assert len(differences) == 1 and differences.pop() in (-12, 0, 12)


def test_metadata_key_decides_the_move_and_drums_stay(band_midi_files):
    score = Score(str(band_midi_files[0]))
    moved, metadata, shift = in_common_key(score, {"key": "A major", "composer": "X"})
    assert shift == shift_to(9, 0) == 3 and metadata == {"key": "C major", "composer": "X"}
    assert [pitch + 3 for *_, pitch, _ in pitched(score)] == [pitch for *_, pitch, _ in pitched(moved)]
    assert drums(moved) == drums(score)


def test_key_names_and_draws():
    assert [named_key(tonic, False) for tonic in (0, 3, 7, 10)] == ["C major", "Eb major", "G major", "Bb major"]
    assert [named_key(tonic, True) for tonic in (2, 9, 6)] == ["D minor", "A minor", "F# minor"]
    assert {key_tonic(named_key(tonic, minor)) for tonic in range(12) for minor in (False, True)} == \
        {(tonic, minor) for tonic in range(12) for minor in (False, True)}
    keys = {"G major": 3, "D minor": 1}
    assert drawn_key(keys, True, seed=5) == (2, True)
    assert {drawn_key(keys, None, seed) for seed in range(40)} == {(7, False), (2, True)}
    assert drawn_key({}, True, seed=0) == (0, True)


# ----------------------------------------------------------------------------- prepare


def test_prepare_common_key_captions_and_keys(bach_midi_files, tiny_models, tmp_path):
    from midillm.tokenization import MusicCodec
    from midillm.tokenization.dataset import PrepareConfig, prepare

    folder = tmp_path / "midi"
    folder.mkdir()
    for path in bach_midi_files[:10]:
        (folder / path.name).write_bytes(path.read_bytes())
    report = prepare(PrepareConfig(source=str(folder), out=str(tmp_path / "data"), base_model=str(tiny_models["tied"]),
                                   seq_len=256, num_workers=1, common_key=True), log=lambda *_: None)
    corpus = report["corpus"]
    assert sum(corpus["keys"].values()) == report["splits"]["train"]["pieces"]
    own = {named_key(*estimate_key(Score(str(path)))) for path in folder.iterdir()}
    assert set(corpus["keys"]) <= own and len(own) > 2  # the pieces' own keys, several of them
    assert {caption_field(caption, "Key") for caption in corpus["captions"]} <= set(COMMON_KEYS.values())
    assert MusicCodec.from_pretrained(tmp_path / "data" / "codec").common_key
    config_file = tmp_path / "data" / "codec" / "midillm_codec.json"
    saved = json.loads(config_file.read_text())
    assert saved["common_key"] is True and saved["common_minor_key"] == "A minor"
    assert "A minor" in {caption_field(caption, "Key") for caption in corpus["captions"]}  # the chorales have both modes
    # A codec prepared before the relative minor moved minor pieces to C minor, and is read so.
    del saved["common_minor_key"]
    config_file.write_text(json.dumps(saved))
    assert MusicCodec.from_pretrained(tmp_path / "data" / "codec").common_keys == {False: "C major", True: "C minor"}


def test_the_common_key_is_the_default_and_transposition_turns_it_off():
    from midillm.tokenization.dataset import PrepareConfig

    assert PrepareConfig(source="x", out="y").common_key
    assert not PrepareConfig(source="x", out="y", transpose=2).common_key


# ----------------------------------------------------------------------------- generation


@pytest.fixture
def common_key_lm(tiny_bundle):
    """The tiny bundle read as if trained in the common key (the request path is what is tested)."""
    from midillm.decoding.generate import MidiLM

    lm = MidiLM.from_pretrained(tiny_bundle, dtype=torch.float32)
    lm.codec.common_key = True
    lm.codec.corpus.keys = {"G major": 2, "E minor": 1}
    return lm


def test_the_asked_key_is_the_common_keys_music_moved(common_key_lm):
    lm = common_key_lm
    [in_c] = lm.generate(key="C major", seed=3, max_new_tokens=96)
    [in_a] = lm.generate(key="A major", seed=3, max_new_tokens=96)

    def one_move(moved, written, ways):  # the whole piece by one of `ways` (semitones), note for note
        return any(pitched(written) and [(t, o, p + way, d) for t, o, p, d in pitched(moved)] == pitched(written)
                   for way in ways)

    # A major is C major moved down a minor third (the nearer way), or up a major sixth where that
    # keeps its parts in their registers (`tonality.register_shift`): the same notes either way.
    assert one_move(in_a, in_c, (3, -9))
    assert drums(in_a) == drums(in_c)
    assert (in_a.key_signatures[0].key, in_a.key_signatures[0].tonality) == (3, 0)
    # Minor keys are written in A minor (C major's notes) and moved: E minor is five below (or seven above).
    [in_a_minor] = lm.generate(key="A minor", seed=3, max_new_tokens=96)
    [in_e_minor] = lm.generate(key="E minor", seed=3, max_new_tokens=96)
    assert one_move(in_e_minor, in_a_minor, (5, -7))
    assert (in_e_minor.key_signatures[0].key, in_e_minor.key_signatures[0].tonality) == (1, 1)


def test_without_a_key_one_of_the_corpus_keys_is_drawn(common_key_lm):
    for seed in range(3):
        [score] = common_key_lm.generate(seed=seed, max_new_tokens=64)
        signature = score.key_signatures[0]
        assert (signature.key, signature.tonality) in {(1, 0), (1, 1)}  # G major or E minor


def test_given_music_comes_back_exactly_in_its_own_key(common_key_lm, band_midi_files):
    score = Score(str(band_midi_files[1]))
    kept = [track.name for track in score.tracks[:2]]
    [written] = common_key_lm.accompany(score, tracks=kept, seed=0, max_new_tokens=64)

    def notes(track, ticks_per_beat):  # in beats: the written score has the codec's resolution
        return sorted((note.time / ticks_per_beat, note.pitch, note.duration / ticks_per_beat) for note in track.notes)

    # The given parts come back under their names (or their roles, where a name says nothing),
    # placed where the codec numbers them.
    given_tracks = score.copy()
    given_tracks.tracks = [track.copy() for track in score.tracks[:2]]
    for name, given in zip(part_names(given_tracks), given_tracks.tracks):
        [track] = [track for track in written.tracks if track.name == name]
        assert notes(track, written.ticks_per_quarter) == notes(given, score.ticks_per_quarter)
    signature = written.key_signatures[0]
    assert key_name(signature.key, bool(signature.tonality)) == named_key(*estimate_key(score))


def test_key_bias_without_a_key_biases_toward_the_drawn_one(common_key_lm, tiny_bundle):
    from midillm.decoding.generate import MidiLM
    from midillm.decoding.request import MusicRequest, TaskError

    [sample] = common_key_lm.run(MusicRequest(key_bias=True, seed=0, sampling={"max_new_tokens": 48}))
    signature = sample.score.key_signatures[0]
    assert key_name(signature.key, bool(signature.tonality)) in ("G major", "E minor")
    # A model trained in its pieces' own keys has nothing to draw a key from: one line.
    own_keys = MidiLM.from_pretrained(tiny_bundle, dtype=torch.float32)
    own_keys.codec.common_key = False
    with pytest.raises(TaskError, match="the key-aware bias needs a key"):
        own_keys.run(MusicRequest(key_bias=True, text="Parts: Lead\n", sampling={"max_new_tokens": 8}))


def test_tasks_on_given_music_keep_its_tempo_changes_exactly(common_key_lm, band_midi_files):
    score = Score(str(band_midi_files[0]))  # 96 BPM, then 132 from bar 5: neither is a tempo token's value
    [written] = common_key_lm.accompany(score, tracks=[score.tracks[0].name], seed=0, max_new_tokens=48)
    beats = lambda tempos, tpq: [(tempo.time / tpq, round(tempo.qpm, 3)) for tempo in tempos]  # noqa: E731
    assert beats(written.tempos, written.ticks_per_quarter) == beats(score.tempos, score.ticks_per_quarter)


def test_a_note_moved_off_the_midi_range_turns_back_an_octave():
    """A sample's extreme note, moved back to the asked key, stays a MIDI note of its pitch class
    (symusic refuses to shift past 127)."""
    from symusic import Note, Score, Track

    from midillm.tokenization.tonality import transposed

    score = Score(480)
    score.tracks.append(Track(notes=[Note(0, 480, 127, 80), Note(480, 480, 60, 80), Note(960, 480, 1, 80)]))
    assert [note.pitch for note in transposed(score, 3).tracks[0].notes] == [118, 63, 4]
    assert [note.pitch for note in transposed(score, -5).tracks[0].notes] == [122, 55, 8]
