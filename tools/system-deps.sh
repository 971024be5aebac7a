#!/usr/bin/env bash
# Install the system programs ripieno's tests and `make run` use, when missing:
# jackd2 (JACK with the dummy driver), mosquitto and its clients. Idempotent and quiet when all is there.
set -euo pipefail
need=()
command -v jackd >/dev/null 2>&1 || need+=(jackd2)
command -v jack_lsp >/dev/null 2>&1 || need+=(jackd2)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
[ ${#need[@]} -eq 0 ] && exit 0
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
  echo "ripieno: please install these packages: ${need[*]} (needs root)" >&2; exit 1
fi
echo "ripieno: installing system packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" >&2; then
  "${sudo[@]}" apt-get update -q >&2
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi
