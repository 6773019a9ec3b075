#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# checkpatch.sh: upstream's scripts/checkpatch.pl on the patch series and
# on the project's new files (as one synthetic patch adding them to the
# pristine tree: checkpatch on upstream files reports their old sins).
# Exit status 1 if it reports an error.

set -eu
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
. "$srcdir/scripts/fork/common.sh"
tree="$srcdir/build/qemu"
[ -x "$tree/scripts/checkpatch.pl" ] || die "no assembled tree; run ./configure"
status=0

for p in $(series_list); do
    out=$(cd "$tree" && scripts/checkpatch.pl "$srcdir/patches/$p" 2>&1) ||
        status=1
    echo "$p: $(echo "$out" | grep '^total:')"
    echo "$out" | grep -E '^(ERROR|WARNING)' -A 3 || :
done

synthetic=$(mktemp)
trap 'rm -f "$synthetic"' EXIT
cd "$srcdir"
for f in $(git ls-files -- hw include qapi stubs tests/qtest tests/unit \
               docs | grep -E '\.(c|h|json|rst)$'); do
    n=$(wc -l < "$f")
    printf 'diff --git a/%s b/%s\nnew file mode 100644\n--- /dev/null\n+++ b/%s\n@@ -0,0 +1,%d @@\n' \
        "$f" "$f" "$f" "$n"
    sed 's/^/+/' "$f"
done > "$synthetic.files"
# the series lists the new files in MAINTAINERS: checked together, first,
# with the diffstat line by which checkpatch sees that it is updated
echo ' MAINTAINERS | 1 +' > "$synthetic"
sed -n '/^diff --git a\/MAINTAINERS/,$p' "$srcdir"/patches/*MAINTAINERS*.patch \
    >> "$synthetic"
cat "$synthetic.files" >> "$synthetic"
rm -f "$synthetic.files"
out=$(cd "$tree" && scripts/checkpatch.pl --no-signoff "$synthetic" 2>&1) || status=1
echo "new files: $(echo "$out" | grep '^total:')"
echo "$out" | grep -E '^(ERROR|WARNING)' -A 4 || :
exit $status
