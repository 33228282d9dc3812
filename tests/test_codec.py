"""MusicCodec: round trips on real and multi-track files, music BPE, captions, saving."""

from __future__ import annotations

import json

import pytest
from symusic import Score

from conftest import MUSIC21_TEST_MIDI, make_band_score
from midillm import MusicCodec
from midillm.tokenization.codec import (CODEC_CONFIG_FILE, MUSIC_END, MUSIC_START,
                                        CodecVersionError)
from midillm.tokenization.roundtrip import notes_kept


def kept_share(codec, paths) -> float:
    kept = total = 0
    for path in paths:
        path_kept, path_total = notes_kept(codec, Score(str(path)))
        kept, total = kept + path_kept, total + path_total
    return kept / total


@pytest.mark.parametrize("tokenization", ["REMI", "TSD", "MIDILike", "Structured", "MMM"])
def test_round_trip_keeps_notes_of_real_and_multitrack_files(
        tokenization, tiny_lm_tokenizer, band_midi_files, bach_midi_files):
    codec = MusicCodec.create(tokenization, lm_tokenizer=tiny_lm_tokenizer)
    files = MUSIC21_TEST_MIDI + band_midi_files + bach_midi_files[:10]
    assert kept_share(codec, files) >= 0.99


def test_band_score_keeps_drums_programs_and_tempo_changes(tiny_lm_tokenizer):
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer)
    score = make_band_score(seed=7)
    decoded = codec.decode(codec.encode(score))
    assert {(track.program, track.is_drum) for track in decoded.tracks} == {
        (track.program, track.is_drum) for track in score.tracks}
    assert len(decoded.tempos) >= 2
    assert [(ts.numerator, ts.denominator) for ts in decoded.time_signatures][:2] == [(4, 4), (3, 4)]


def test_music_bpe_compresses_and_still_round_trips(tiny_lm_tokenizer, bach_midi_files):
    train, held_out = bach_midi_files[:30], bach_midi_files[30:]
    plain = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, captions=False)
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, captions=False)
    codec.train_bpe(train, vocab_size=2000)

    def tokens_per_note(codec_):
        tokens = sum(len(codec_.encode(path)) - 2 for path in held_out)
        return tokens / sum(Score(str(path)).note_num() for path in held_out)

    assert tokens_per_note(plain) > 4.0
    assert tokens_per_note(codec) < tokens_per_note(plain) / 3
    assert kept_share(codec, held_out) >= 0.99
    # Each merge is one readable LM token made of its parts' names.
    merged = [parts for parts in codec.music_token_parts if len(parts) > 1]
    assert merged
    name = "<" + "+".join(merged[0]) + ">"
    assert codec.lm_tokenizer.convert_tokens_to_ids(name) in codec.music_lm_ids


def test_bars_never_split_a_bpe_token(tiny_lm_tokenizer, bach_midi_files):
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, captions=False)
    codec.train_bpe(bach_midi_files[:20], vocab_size=1500)
    bars = codec.encode_bars(bach_midi_files[25])
    assert len(bars) > 4
    for bar in bars:
        tokens = codec.music_tokens([codec.music_start_id, *bar])
        assert tokens[0] == "Bar_None"
        assert tokens.count("Bar_None") == 1


def test_text_render_round_trips_through_the_lm_tokenizer(tiny_lm_tokenizer, bach_midi_files):
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, render="text", captions=False)
    added = len(tiny_lm_tokenizer)
    assert kept_share(codec, bach_midi_files[:3]) >= 0.99
    ids = codec.encode(bach_midi_files[0])
    tokens_codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer, captions=False)
    # The plain-text baseline costs several LM tokens per music token.
    assert len(ids) > 2 * len(tokens_codec.encode(bach_midi_files[0]))
    assert added == len(tiny_lm_tokenizer) - len(tokens_codec.music_lm_ids) + 1


def test_caption_comes_first_and_carries_metadata(tiny_lm_tokenizer, bach_midi_files):
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer)
    metadata = {"composer": "J.S. Bach", "title": "BWV 1.6", "key": "F major"}
    ids = codec.encode(bach_midi_files[0], metadata)
    start = ids.index(codec.music_start_id)
    caption = codec.lm_tokenizer.decode(ids[:start])
    assert "Composer: J.S. Bach" in caption and "Key: F major" in caption
    assert "Time signature: 4/4" in caption and "Instruments:" in caption
    assert ids[-1] == codec.music_end_id
    # Decoding ignores the caption.
    assert codec.decode(ids).note_num() == codec.decode(ids[start:]).note_num() > 0


def test_new_tokens_have_readable_names_and_descriptions(tiny_lm_tokenizer):
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer)
    lm_id = codec.lm_tokenizer.convert_tokens_to_ids("<Pitch_60>")
    descriptions = codec.new_token_descriptions()
    assert descriptions[lm_id] == "note C4"
    assert descriptions[codec.lm_tokenizer.convert_tokens_to_ids("<Program_-1>")] == "drums"
    assert set(descriptions) == set(codec.music_lm_ids) | {codec.music_start_id}
    assert codec.lm_tokenizer.convert_tokens_to_ids(MUSIC_START) == codec.music_start_id
    assert codec.lm_tokenizer.convert_tokens_to_ids(MUSIC_END) == codec.music_end_id


def test_save_and_load_give_the_same_ids(tmp_path, tiny_lm_tokenizer, bach_midi_files):
    codec = MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer)
    codec.train_bpe(bach_midi_files[:20], vocab_size=1200)
    codec.save_pretrained(tmp_path / "codec")
    loaded = MusicCodec.from_pretrained(tmp_path / "codec")
    path = bach_midi_files[30]
    assert loaded.encode(path) == codec.encode(path)
    assert loaded.music_lm_ids == codec.music_lm_ids
    config = json.loads((tmp_path / "codec" / CODEC_CONFIG_FILE).read_text())
    assert config["miditok_version"] and config["midillm_version"]


@pytest.mark.parametrize("change, message", [
    ({"format_version": 99}, "upgrade midillm"),
    ({"miditok_version": "1.2.0"}, "install miditok==1.2.0"),
])
def test_incompatible_codec_fails_with_a_clear_message(tmp_path, tiny_lm_tokenizer, change, message):
    MusicCodec.create(lm_tokenizer=tiny_lm_tokenizer).save_pretrained(tmp_path)
    config_file = tmp_path / CODEC_CONFIG_FILE
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **change}))
    with pytest.raises(CodecVersionError, match=message):
        MusicCodec.from_pretrained(tmp_path)


def test_missing_codec_folder_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="no midillm codec"):
        MusicCodec.from_pretrained(tmp_path)
