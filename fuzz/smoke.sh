#!/usr/bin/env bash
# Fuzz smoke test: runs every cargo-fuzz target for FUZZ_SECONDS (default 60) seconds on the
# nightly toolchain, prints each target's last libFuzzer stats line (with its exec/s), and
# exits non-zero if any target fails. Installs cargo-fuzz first if it is missing.
# Works from any directory. Corpora grow in fuzz/corpus/<target> (seeded by
# fuzz/examples/seeds.rs), crashes land in fuzz/artifacts/<target>, and each run's full
# output is kept in fuzz/artifacts/smoke/.
set -uo pipefail

fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$fuzz_dir/.."
seconds=${FUZZ_SECONDS:-60}
targets=(frame_decode log_entry_decode text_parse)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing; installing it from crates.io" >&2
    cargo install cargo-fuzz --locked || exit 1
fi
cargo +nightly run --quiet --manifest-path "$fuzz_dir/Cargo.toml" --example seeds || exit 1
cargo +nightly fuzz build --fuzz-dir "$fuzz_dir" || exit 1

logs=$fuzz_dir/artifacts/smoke
mkdir -p "$logs"
failed=()
for target in "${targets[@]}"; do
    args=(-max_total_time="$seconds")
    dict=$fuzz_dir/dicts/$target.dict
    [[ -f $dict ]] && args+=(-dict="$dict")
    log=$logs/$target.log
    echo "== $target (${seconds}s)"
    if cargo +nightly fuzz run --fuzz-dir "$fuzz_dir" "$target" -- "${args[@]}" >"$log" 2>&1; then
        grep 'exec/s:' "$log" | tail -n 1
    else
        failed+=("$target")
        tail -n 40 "$log"
        echo "!! $target FAILED (full output: $log)"
    fi
done

if ((${#failed[@]})); then
    echo "fuzz smoke: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz smoke: all ${#targets[@]} targets ran ${seconds}s without a failure"
