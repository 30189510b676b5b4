#!/usr/bin/env bash
# `minfer info` on bad input: every malformed fixture, a missing file, a non-GGUF file and no argument
# must exit 1 with exactly one line on stderr (and no sanitizer report); a real vocab file must list its keys.
# Usage (from the repo root): bash tests/cli/malformed.sh path/to/minfer
set -u
minfer="${1:?usage: malformed.sh path/to/minfer}"
fixtures=tests/fixtures/malformed
failures=0
err=$(mktemp)
trap 'rm -f "$err"' EXIT

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# Runs `minfer info ARGS...`; requires exit code 1 and one stderr line containing FRAGMENT.
expect_error() {
    local fragment="$1"
    shift
    "$minfer" info "$@" >/dev/null 2>"$err"
    local rc=$?
    local lines
    lines=$(wc -l <"$err")
    if [[ $rc -ne 1 ]]; then
        fail "info $* exited $rc (want 1): $(head -c 300 "$err")"
    elif [[ $lines -ne 1 ]]; then
        fail "info $* wrote $lines lines on stderr (want 1): $(head -c 300 "$err")"
    elif ! grep -qF -- "$fragment" "$err"; then
        fail "info $*: '$(cat "$err")' lacks '$fragment'"
    elif grep -qE 'runtime error|AddressSanitizer|LeakSanitizer' "$err"; then
        fail "info $*: sanitizer report: $(cat "$err")"
    fi
}

n=0
while IFS=$'\t' read -r name fragment; do
    [[ -z "$name" ]] && continue
    expect_error "$fragment" "$fixtures/$name"
    n=$((n + 1))
done <"$fixtures/EXPECTED.txt"
[[ $n -ge 14 ]] || fail "only $n malformed fixtures listed in $fixtures/EXPECTED.txt"

expect_error "cannot open: No such file or directory" /work/../nonexistent
expect_error "not a GGUF file" README.md
expect_error "missing FILE.gguf" 
expect_error "not a regular file" tests
expect_error "unknown option '--bogus'" --bogus x.gguf

"$minfer" info --help >/dev/null 2>"$err" || fail "info --help exited $?"

vocab=../shared/vocab/ggml-vocab-llama-spm.gguf
if [[ -d ../shared ]]; then
    out=$("$minfer" info "$vocab" 2>"$err")
    rc=$?
    if [[ $rc -ne 0 ]]; then
        fail "info $vocab exited $rc: $(cat "$err")"
    else
        grep -q 'tokenizer.ggml.model .*str .*"llama"' <<<"$out" || fail "info $vocab does not list tokenizer.ggml.model"
        grep -qF 'arr[str,32000]  ["<unk>", "<s>", "</s>", ...]' <<<"$out" || fail "info $vocab does not summarize the tokens"
    fi
else
    echo "skipping the shared vocab check: ../shared is absent"
fi

if [[ $failures -ne 0 ]]; then
    echo "$failures failure(s)"
    exit 1
fi
echo "ok: $n malformed fixtures and the usage errors each gave one error line"
