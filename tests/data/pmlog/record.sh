#!/bin/sh
# Records the logs of this folder again: sh record.sh (needs gcc, libpmem2-dev and valgrind
# with pmemcheck: PMEMSIM_VALGRIND=/path/to/bin/valgrind). The files the programs register
# live under /tmp/pmemsim-pmlog-test and are removed afterwards, so a check of these logs
# starts from zeros.
set -e
VG=${PMEMSIM_VALGRIND:-valgrind}
HERE=$(cd "$(dirname "$0")" && pwd)
INC=$(dirname "$(dirname "$(command -v "$VG")")")/include
B=$(mktemp -d)
P=/tmp/pmemsim-pmlog-test
trap 'rm -rf "$B" "$P"' EXIT
cd "$HERE"
for prog in append twofiles noisy; do gcc -g -O0 -I"$INC" -o "$B/$prog" "$prog.c"; done
gcc -g -O2 -I"$INC" -o "$B/inline" inline.c
gcc -g -O0 -o "$B/libpmem2_page" libpmem2_page.c -lpmem2
pc() { "$VG" --tool=pmemcheck --log-stores=yes "$@"; }
fresh() { rm -rf "$P"; mkdir -p "$P"; }
fresh; pc --log-stores-stacktraces=yes "$B/append" $P/pool 2> append-bug-stderr.log
fresh; pc -q "$B/append" $P/pool 2> append-bug-q.log
fresh; pc -q --print-summary=no --flush-align=yes --expect-fence-after-clflush=yes "$B/append" $P/pool 2> append-bug-aligned.log
fresh; pc --log-stores-stacktraces=yes --log-stores-stacktraces-depth=4 --time-stamp=yes --log-file=append-fixed-logfile.log "$B/append" $P/pool fixed
fresh; pc -q --log-stores-stacktraces=yes --log-stores-stacktraces-depth=3 --log-file=twofiles-bug.log "$B/twofiles" $P/data $P/flag
fresh; pc -q --log-stores-stacktraces=yes --log-stores-stacktraces-depth=3 --log-file=twofiles-fixed.log "$B/twofiles" $P/data $P/flag fixed
fresh; pc --log-file=noisy-logfile.log "$B/noisy" $P/pool > /dev/null 2>&1
fresh; pc "$B/noisy" $P/pool > noisy-mixed.log 2>&1
fresh; pc -q --read-inline-info=yes --log-stores-stacktraces=yes --log-stores-stacktraces-depth=3 --log-file=inline.log "$B/inline" $P/pool
fresh; PMREORDER_EMIT_LOG=1 pc -q --log-stores-stacktraces=yes --log-stores-stacktraces-depth=6 --log-file=libpmem2-page.log "$B/libpmem2_page" $P/pool 1
