#!/usr/bin/env bash
# Fuzzes what heliosburn reads from outside (the settings and modules YAML, control
# channel messages, the management API's bodies and queries, the bytes of a client's
# connection as the framing scanner follows them, URIs and bodies as the redactor reads
# them) with cargo fuzz, each
# target for FUZZ_SECONDS (default 30) from its committed corpus in fuzz/corpus/.
# Installs cargo-fuzz if it is missing. The stable toolchain runs it with
# RUSTC_BOOTSTRAP=1 and no sanitizer (the code is safe Rust: what is sought is panics,
# hangs and runaway memory, which libFuzzer catches without one).
#
# A crash fails the run and leaves its input in fuzz/artifacts/TARGET/. Fix it, then
# copy the input into fuzz/corpus/TARGET/ (every run replays the corpus first) and add
# a test of the case beside the code that failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${FUZZ_SECONDS:-30}"
targets=(settings modules control api framing redact har)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
(cd fuzz && cargo fuzz build --sanitizer none -O)
for t in "${targets[@]}"; do
    # New inputs go to a scratch corpus under target/; the committed one is only read.
    scratch="target/fuzz-corpus/$t"
    mkdir -p "$scratch"
    echo "fuzzing $t for ${seconds}s"
    if ! (cd fuzz && cargo fuzz run --sanitizer none -O "$t" "../$scratch" "corpus/$t" -- \
            -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 >"../target/fuzz-$t.log" 2>&1); then
        tail -40 "target/fuzz-$t.log" >&2
        echo "fuzz target $t failed; its input is in fuzz/artifacts/$t/ (log: target/fuzz-$t.log)" >&2
        exit 1
    fi
    grep -E "^stat::number_of_executed_units" "target/fuzz-$t.log" | sed "s/^/  $t: /"
done
