#!/usr/bin/env bash
# Real multi-track General MIDI files: the soundtracks that two Debian packages ship, 41 tunes
# with drums, bass and 69 programs between them (docs/bands.md). Their licences are the GPL's
# (OpenMSX: GPL-2.0; Planet Blupi: GPL-3+), so they are fetched here, never kept in the repository.
# The set-up (Makefile) runs this for the band tests; without apt the tests skip, saying so.
#
#     scripts/fetch_band_midi.sh [FOLDER]     # default: tests/data/band-midi
set -euo pipefail
out=${1:-tests/data/band-midi}
[ -d "$out" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download openttd-openmsx planetblupi-music-midi >/dev/null 2>&1) || {
    echo "could not fetch the Debian packages openttd-openmsx and planetblupi-music-midi" >&2; exit 1; }
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/pkg"; done
mkdir -p "$out.partial"
cp "$work"/pkg/usr/share/games/openttd/baseset/openmsx/*.mid "$out.partial"/
for file in "$work"/pkg/usr/share/planetblupi/music/*.mid; do cp "$file" "$out.partial/blupi_$(basename "$file")"; done
mv "$out.partial" "$out"
echo "$(ls "$out" | wc -l) band MIDI files in $out"
