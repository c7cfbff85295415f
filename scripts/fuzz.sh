#!/usr/bin/env bash
# Fuzzes the decoders of untrusted bytes (tests/fuzz/*_fuzz.cpp) with
# libFuzzer under AddressSanitizer + UBSan, for SECONDS each (default 60).
# Needs clang (Debian: sudo apt-get install clang) and the build
# dependencies (scripts/dev.sh test installs them).
#
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
command -v clang++ >/dev/null || {
  echo "clang++ not found: sudo apt-get install clang" >&2; exit 1; }
out=build/fuzz
mkdir -p "$out"
for source in tests/fuzz/*_fuzz.cpp; do
  name=$(basename "$source" .cpp)
  clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined -Iinclude "$source" -o "$out/$name" \
    -labsl_statusor -labsl_status -labsl_strerror -labsl_str_format_internal \
    -labsl_cord -labsl_cordz_info -labsl_cord_internal -labsl_cordz_functions \
    -labsl_cordz_handle -labsl_raw_logging_internal -labsl_int128 \
    -labsl_strings -labsl_strings_internal -labsl_throw_delegate -lfmt
  mkdir -p "$out/$name.corpus"
  ASAN_OPTIONS=detect_leaks=1 "$out/$name" -max_total_time="$seconds" \
    -max_len=512 "$out/$name.corpus"
done
