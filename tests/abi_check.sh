#!/bin/sh
# tests/abi_check.sh LIB LIST HEADER... - the ABI check (CTest: abi_symbols).
# The symbols LIB exports (nm -D --defined-only) must be exactly the names in
# LIST (abi/libzexec.symbols: one a line, '#' comments), and LIST exactly the
# functions the public HEADERs declare with ZX_EXPORT: a symbol exported by
# mistake, a public function missing its ZX_EXPORT, or an API change not
# recorded in LIST fails it. Changing the ABI means editing LIST on purpose.
set -eu
lib=$1 list=$2
shift 2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
nm -D --defined-only "$lib" | awk '{print $NF}' | sort -u >"$tmp/exported"
grep -v '^[[:space:]]*\(#\|$\)' "$list" | sort -u >"$tmp/listed"
# a declaration's name: the identifier before the first '(' on a ZX_EXPORT line
grep -h '^ZX_EXPORT ' "$@" | sed 's/(.*//; s/.*[^A-Za-z0-9_]//' | sort -u >"$tmp/declared"
[ -s "$tmp/exported" ] || { echo "abi_check: nm found no exported symbols in $lib" >&2; exit 1; }
status=0
if ! diff -u "$tmp/listed" "$tmp/exported" >"$tmp/d1"; then
    echo "abi_check: $lib exports (+) or lacks (-) symbols against $list:"; cat "$tmp/d1"; status=1
fi
if ! diff -u "$tmp/listed" "$tmp/declared" >"$tmp/d2"; then
    echo "abi_check: the ZX_EXPORT declarations of the public headers (+) differ from $list (-):"
    cat "$tmp/d2"; status=1
fi
[ $status = 0 ] && echo "abi_check: $(wc -l <"$tmp/exported") symbols, as listed"
exit $status
