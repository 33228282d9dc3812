"""Real multi-track General MIDI files (issue 26): the 41 tunes of two Debian games' soundtracks
(OpenMSX, Planet Blupi), fetched by the set-up (`scripts/fetch_band_midi.sh`; GPL, so never kept
in the repository). Synthetic bands (`conftest.make_band_score`) test the rules; these test that
the rules hold on the music users bring. Without the files (no apt) the tests skip, saying how."""

from __future__ import annotations

from pathlib import Path

import pytest
from symusic import Score

from midillm.tokenization.caption import DRUMS, part_names
from midillm.tokenization.profile import measure_corpus, played_tracks
from midillm.tokenization.roles import name_says_nothing

BAND_FOLDER = Path(__file__).parent / "data" / "band-midi"


@pytest.fixture(scope="module")
def band_scores() -> dict[str, Score]:
    files = sorted(BAND_FOLDER.glob("*.mid"))
    if not files:
        pytest.skip(f"real band MIDI not fetched into {BAND_FOLDER}: run scripts/fetch_band_midi.sh "
                    "(the set-up does, where apt works)")
    return {path.name: Score(str(path)) for path in files}


@pytest.mark.parametrize("numbering", ["role", "order"])
def test_every_note_of_the_real_tunes_comes_back_with_its_program_and_drum_flag(band_scores, tiny_lm_tokenizer,
                                                                                numbering):
    from midillm.tokenization.codec import MusicCodec
    from midillm.tokenization.roundtrip import note_keys

    # A codec fitted to the corpus, as `prepare` makes it (onsets layout, the corpus's grid and durations).
    codec = MusicCodec.create("REMI", lm_tokenizer=tiny_lm_tokenizer, corpus=measure_corpus(band_scores.values()),
                              part_numbering=numbering)
    assert codec.layout == "onsets"
    for name, score in band_scores.items():
        decoded = codec.decode(codec.encode(score))
        # Every note's pitch, onset, duration, program and drum flag, after the tokenizer's own quantisation.
        written = note_keys(codec.music_tokenizer.preprocess_score(score.copy()), durations=True)
        assert note_keys(decoded, durations=True) == written and written.total() == score.note_num(), name
        # Part by part: the same instruments in the codec's part order (the file's, or by role:
        # lead first, bass and drums last), drums on a drum track.
        assert [program for program, _ in played_tracks(decoded)] == \
            [program for program, _ in played_tracks(codec.in_part_order(score))]
        if numbering == "role" and len(list(played_tracks(score))) <= 16:
            # Each part back under its own name (or its role), by its number.
            assert [track.name for track in decoded.tracks] == part_names(codec.in_part_order(score)), name


def test_the_real_tunes_parts_are_named_by_what_they_play_where_their_names_say_nothing(band_scores):
    names = {name: part_names(score) for name, score in band_scores.items()}
    # The issue's tune: its tracks' own names say something and are kept.
    assert names["be_sharp_bw_redfarn.mid"][:2] == ["Electric Guitar", "Electric Bass"]
    numbered = roles = 0
    for name, score in band_scores.items():
        tracks = [track for track in score.tracks if track.note_num()]
        for track, part in zip(tracks, names[name]):
            if name_says_nothing(track.name):
                numbered += 1
                roles += not name_says_nothing(part)
                assert (part == "Drums") == track.is_drum or part.startswith("Drums"), (name, track.name, part)
    # Most of the corpus's parts are numbered ("Track7", "Spår 1"); every one gets a role.
    assert numbered > 100 and roles == numbered
    drum_parts = sum(DRUMS in [program for program, _ in played_tracks(score)] for score in band_scores.values())
    assert drum_parts >= 40
