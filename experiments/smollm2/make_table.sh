#!/usr/bin/env bash
# results.csv (run.sh) -> results.md (a table: one row per ratio, one column per
# selection + combination) and ppl.png (perplexity against the fraction of KV
# groups replaced, log scale) beside this script.
set -euo pipefail
CSV=${1:-experiments/smollm2/work/results.csv}
HERE=$(cd "$(dirname "$0")" && pwd)
cols=$(awk -F, 'NR > 1 && $1 != 0 {print $2 ":" $3}' "$CSV" | awk '!seen[$0]++')
base=$(awk -F, '$1 == 0 {print $5}' "$CSV")
tok=$(awk -F, 'NR == 2 {print $7}' "$CSV")
{
    echo "WikiText-2 validation perplexity of SmolLM2-135M-Instruct (Q4_1 weights dequantized to fp32) on $tok tokens; unshared: $base."
    echo
    printf "| KV groups replaced |"
    for c in $cols; do printf " %s |" "$c"; done
    echo
    printf "|---|"
    for c in $cols; do printf -- "---|"; done
    echo
    for r in $(awk -F, 'NR > 1 && $1 != 0 {print $1}' "$CSV" | sort -g -u); do
        n=$(awk -F, -v r="$r" '$1 == r {print $4; exit}' "$CSV")
        printf "| %s%% (%s of 90) |" "$(awk -v r="$r" 'BEGIN {print r * 100}')" "$n"
        for c in $cols; do
            v=$(awk -F, -v r="$r" -v c="$c" '$1 == r && $2 ":" $3 == c {print $5}' "$CSV")
            printf " %s |" "${v:--}"
        done
        echo
    done
} > "$HERE/results.md"
# gnuplot: one data block per column
DAT=$(mktemp)
for c in $cols; do
    echo "\"$c\""
    awk -F, -v c="$c" 'NR > 1 && $2 ":" $3 == c {print $1 * 100, $5}' "$CSV" | sort -g
    printf "\n\n"
done > "$DAT"
n=$(echo $cols | wc -w)
gnuplot <<GP
set terminal png size 1000,650
set output "$HERE/ppl.png"
set title "SmolLM2-135M DirectShare: WikiText-2 perplexity ($tok tokens; unshared $base)"
set xlabel "KV groups replaced (%)"
set ylabel "perplexity (log scale)"
set logscale y
set key outside right
set grid
plot for [i=0:$((n - 1))] "$DAT" index i using 1:2 with linespoints title columnheader(1), $base with lines dt 2 lc rgb 'black' title 'unshared'
GP
rm -f "$DAT"
echo "wrote $HERE/results.md and $HERE/ppl.png"
