#!/usr/bin/env bash
# Fuzzing of tailsample-core with cargo-fuzz (libFuzzer): the crate in fuzz/, seed corpora in fuzz/corpus/<target>.
#
#   scripts/fuzz.sh ci                   every target ~30 s over its committed corpus; exit 1 on any crash
#   scripts/fuzz.sh run SECONDS [JOBS]   every target SECONDS (JOBS > 1: libFuzzer fork mode), one after the other;
#                                        logs in fuzz/logs/, new inputs merged (cmin) into fuzz/corpus/<target>,
#                                        one line per target appended to fuzz/CAMPAIGNS.md
#   scripts/fuzz.sh cmin [TARGET...]     minimize the committed corpora in place (libFuzzer -set_cover_merge)
#   scripts/fuzz.sh build                build the targets
#
# Environment: FUZZ_TARGETS (default: otlp_decode ottl_parse config_load), FUZZ_CI_SECONDS (30),
# FUZZ_SANITIZER (none: the core is safe Rust, and AddressSanitizer costs 6x in executions; "address" to use it),
# FUZZ_TOOLCHAIN (nightly when rustup has it; otherwise the pinned stable toolchain with RUSTC_BOOTSTRAP=1).
# Crash inputs land in fuzz/artifacts/<target>/; replay one with
#   fuzz/target/x86_64-unknown-linux-gnu/release/<target> fuzz/artifacts/<target>/crash-...
#   (or, from fuzz/: cargo +nightly fuzz run -s none <target> artifacts/<target>/crash-...)
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$self")/../fuzz"

TARGETS=(${FUZZ_TARGETS:-otlp_decode ottl_parse config_load})
SANITIZER=${FUZZ_SANITIZER:-none}
LOGS=logs

usage() {
    sed -n '2,/^set /{/^#/p}' "$self" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# cargo with a toolchain that takes -Z flags.
toolchain=${FUZZ_TOOLCHAIN:-}
if [[ -z $toolchain ]] && command -v rustup >/dev/null && rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=nightly
fi
if [[ -n $toolchain && $toolchain != stable ]]; then
    CARGO=(cargo "+$toolchain")
else
    # The pinned stable toolchain (../rust-toolchain.toml), told to accept nightly flags.
    export RUSTC_BOOTSTRAP=1
    CARGO=(cargo)
fi

ensure_cargo_fuzz() {
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "fuzz.sh: installing cargo-fuzz" >&2
        (cd / && cargo install cargo-fuzz --locked)
    fi
}

dict_of() {
    case $1 in
        otlp_decode) echo dicts/otlp.dict ;;
        ottl_parse) echo dicts/ottl.dict ;;
        config_load) echo dicts/config.dict ;;
    esac
}

max_len_of() {
    case $1 in
        otlp_decode) echo 65536 ;;
        ottl_parse) echo 4096 ;;
        *) echo 16384 ;;
    esac
}

# The targets are built once per command, then their binaries run directly: a long run keeps fuzzing the code
# it started with, whatever is edited or rebuilt meanwhile.
build() {
    "${CARGO[@]}" fuzz build -s "$SANITIZER"
    BIN_DIR=target/$(rustc -vV | sed -n 's/^host: //p')/release
}

fuzz() {  # fuzz TARGET [libFuzzer arguments and corpus directories...]
    local target=$1
    shift
    mkdir -p "artifacts/$target"
    "$BIN_DIR/$target" -artifact_prefix="artifacts/$target/" "$@"
}

# Minimizes corpus/TARGET in place: the smallest set of its inputs that covers the same features.
cmin() {
    local target=$1 tmp
    tmp=$(mktemp -d "corpus/.cmin-$target.XXXXXX")
    if "$BIN_DIR/$target" -merge=1 -set_cover_merge=1 -timeout=10 "$tmp" "corpus/$target"; then
        find "corpus/$target" -maxdepth 1 -type f -delete
        mv "$tmp"/* "corpus/$target/" 2>/dev/null || true
        rmdir "$tmp"
    else
        rm -rf "$tmp"
        return 1
    fi
}

# Executions and exec/s of a finished libFuzzer run, from its log (-print_final_stats=1; fork mode prints lines).
execs_of() {
    local n
    n=$(grep -ao 'stat::number_of_executed_units: [0-9]*' "$1" | awk '{s += $2} END {if (NR) print s}')
    if [[ -z $n ]]; then
        n=$(grep -aoE '^#[0-9]+' "$1" | tail -1 | tr -d '#')
    fi
    echo "${n:-0}"
}

# Crash, timeout and OOM inputs written to fuzz/artifacts/<target>/ since the marker file.
new_artifacts() {
    local dir=artifacts/$1
    [[ -d $dir ]] || return 0
    find "$dir" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \
        -o -name 'slow-unit-*' \) -newer "$2" -printf '%f\n' | sort
}

cmd=${1:-}
[[ -n $cmd ]] || usage
shift
ensure_cargo_fuzz
mkdir -p "$LOGS"

case $cmd in
build)
    build
    ;;

ci)
    seconds=${FUZZ_CI_SECONDS:-30}
    build
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    marker=$work/.start
    touch "$marker"
    failed=()
    summary=()
    for t in "${TARGETS[@]}"; do
        mkdir -p "$work/$t" "corpus/$t" "artifacts/$t"
        log=$LOGS/ci-$t.log
        echo "== $t: ${seconds}s over corpus/$t ($(ls "corpus/$t" | wc -l) files)"
        # New inputs go to the scratch directory (first), the committed corpus is only read.
        rc=0
        fuzz "$t" -max_total_time="$seconds" -dict="$(dict_of "$t")" -max_len="$(max_len_of "$t")" \
            -timeout=10 -print_final_stats=1 "$work/$t" "corpus/$t" >"$log" 2>&1 || rc=$?
        execs=$(execs_of "$log")
        crashes=$(new_artifacts "$t" "$marker" | tr '\n' ' ')
        if [[ $rc -ne 0 || -n $crashes ]]; then
            failed+=("$t")
            grep -aE 'panicked|ERROR: libFuzzer|SUMMARY|deadly signal|Test unit written' "$log" | head -20 >&2 || true
            summary+=("$t: FAILED (exit $rc) after $execs execs; artifacts: ${crashes:-none}; log: fuzz/$log")
        else
            summary+=("$t: ok, $execs execs in ${seconds}s ($((execs / seconds)) exec/s), 0 crashes")
        fi
    done
    printf '%s\n' "${summary[@]}"
    if ((${#failed[@]})); then
        echo "fuzz ci: crashes in ${failed[*]}" >&2
        exit 1
    fi
    ;;

run)
    seconds=${1:-}
    jobs=${2:-1}
    [[ $seconds =~ ^[0-9]+$ && $jobs =~ ^[0-9]+$ && $jobs -ge 1 ]] || usage
    build
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    marker=$LOGS/.run-$stamp
    touch "$marker"
    [[ -f CAMPAIGNS.md ]] || cat >CAMPAIGNS.md <<'EOF'
# Fuzzing campaigns

One line per target per `scripts/fuzz.sh run` (sanitizer none, debug assertions and overflow checks on). Crash
inputs are in fuzz/artifacts/<target>/ on the machine that ran them.

| date (UTC) | target | seconds | jobs | execs | exec/s | corpus files | crashes |
|---|---|---:|---:|---:|---:|---:|---|
EOF
    status=0
    for t in "${TARGETS[@]}"; do
        new=corpus-new/$t
        mkdir -p "$new" "corpus/$t" "artifacts/$t"
        log=$LOGS/campaign-$stamp-$t.log
        echo "$(date -u +%FT%TZ) $t: ${seconds}s, $jobs job(s), log fuzz/$log"
        args=(-max_total_time="$seconds" -dict="$(dict_of "$t")" -max_len="$(max_len_of "$t")" -timeout=10
            -print_final_stats=1)
        if ((jobs > 1)); then
            args+=(-fork="$jobs" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
        fi
        start=$(date +%s)
        rc=0
        fuzz "$t" "${args[@]}" "$new" "corpus/$t" >"$log" 2>&1 || rc=$?
        elapsed=$(($(date +%s) - start))
        execs=$(execs_of "$log")
        crashes=$(new_artifacts "$t" "$marker" | tr '\n' ' ' | sed 's/ $//')
        # Merge what was found into the committed corpus, minimized.
        cp -n "$new"/* "corpus/$t/" 2>/dev/null || true
        cmin "$t" >>"$log" 2>&1 || echo "$t: cmin failed, see fuzz/$log" >&2
        rm -rf "$new"
        files=$(ls "corpus/$t" | wc -l)
        ((elapsed > 0)) || elapsed=1
        if [[ -n $crashes || $rc -ne 0 ]]; then
            status=1
            [[ -n $crashes ]] || crashes="exit $rc, see fuzz/$log"
        fi
        echo "| $(date -u '+%F %H:%M') | $t | $elapsed | $jobs | $execs | $((execs / elapsed)) | $files | ${crashes:-0} |" \
            >>CAMPAIGNS.md
        echo "$(date -u +%FT%TZ) $t: $execs execs in ${elapsed}s, corpus $files files, crashes: ${crashes:-0}"
    done
    rm -f "$marker"
    exit $status
    ;;

cmin)
    ((${#@})) && TARGETS=("$@")
    build
    for t in "${TARGETS[@]}"; do
        cmin "$t"
        echo "$t: $(ls "corpus/$t" | wc -l) files"
    done
    ;;

*)
    usage
    ;;
esac
