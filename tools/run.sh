#!/usr/bin/env bash
# `make run`: start the daemon in the foreground with the repo's config.toml.
# On a machine with no MIDI system at all (no ALSA sequencer, no JACK server) it first starts a
# JACK server with the dummy driver, says so, and stops it again when the daemon exits.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ripieno="$here/.venv/bin/ripieno"
config="${CONFIG:-$here/config.toml}"
export JACK_NO_START_SERVER=1
jack_pid=""
extra=()
if [ ! -e /dev/snd/seq ] && ! jack_lsp >/dev/null 2>&1; then
  if ! command -v jackd >/dev/null 2>&1; then
    echo "ripieno: no ALSA sequencer and no JACK server, and jackd is not installed (make install installs it)" >&2
    exit 1
  fi
  echo "ripieno: no MIDI system found (no /dev/snd/seq, no JACK server): starting jackd with the dummy driver" >&2
  jackd --no-realtime -d dummy -r 48000 -p 128 >"${TMPDIR:-/tmp}/ripieno-jackd.log" 2>&1 &
  jack_pid=$!
  for _ in $(seq 50); do jack_lsp >/dev/null 2>&1 && break; sleep 0.1; done
  if ! jack_lsp >/dev/null 2>&1; then
    echo "ripieno: jackd did not come up; its log: ${TMPDIR:-/tmp}/ripieno-jackd.log" >&2
    kill "$jack_pid" 2>/dev/null; exit 1
  fi
  echo "ripieno: JACK (dummy driver) is running; connect with jack_connect, e.g. jack_connect <keyboard>:out ripieno:in" >&2
  extra=(--api jack)
fi
"$ripieno" run --config "$config" "${extra[@]}" "$@" &
child=$!
forward() { kill -s "$1" "$child" 2>/dev/null; }
trap 'forward TERM' TERM
trap 'forward INT' INT
status=0
while :; do
  wait "$child"; status=$?
  kill -0 "$child" 2>/dev/null || break   # wait returns early when a trapped signal arrives
done
if [ -n "$jack_pid" ]; then kill "$jack_pid" 2>/dev/null; wait "$jack_pid" 2>/dev/null; fi
exit "$status"
