#!/usr/bin/env bash
# usage: run.sh <workload> [N]  -> instructions per element, warm:
#   (I(N, 3 rounds) - I(N, 1 round)) / (2 N)   (rounds repeat the workload in one process,
#   as criterion's iterations do), and cold: (I(2N, 1) - I(N, 1)) / N.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q
bin=${BIN:-$CARGO_TARGET_DIR/release/icount}
w=$1; n=${2:-100000}
ir() { valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file=/tmp/cg.$w.$1.$2 $bin $w $1 $2 2>&1 | grep -o 'Collected : [0-9]*' | grep -o '[0-9]*'; }
a=$(ir $n 1); b=$(ir $n 3); c=$(ir $((2*n)) 1)
python3 -c "print('$w', 'warm %.1f' % (($b-$a)/(2*$n)), 'cold %.1f' % (($c-$a)/$n))"
