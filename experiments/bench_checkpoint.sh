#!/usr/bin/env bash
# experiments/bench_checkpoint.sh: checkpoint write and read throughput for a
# ~106M-parameter LLaMA (C 768, 8 layers, 12 heads, F 2048, V 32000, untied),
# beside the disk's raw sequential speed (dd with conv=fsync), in the same
# directory. Appends its rows to experiments/checkpoint-io.md.
#   bash experiments/bench_checkpoint.sh [DIR]   (default: checkpoints/bench-ckpt, removed after)
# Write = postshare's own report: HDF5 file (fp32 master + AdamW m and v,
# Fletcher32 on every chunk) under a temp name, fsync, rename, fsync of the
# directory. Read = resume: open, read and verify every tensor (checksums).
# Cold reads need `echo 3 > /proc/sys/vm/drop_caches` (root); when that is not
# allowed the row says "warm" (the file is in the page cache).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PS="${PS:-./build/postshare}"  # e.g. PS=build-ckpt/postshare for another build dir
[ -x "$PS" ] || bash scripts/setup.sh
DIR="${1:-checkpoints/bench-ckpt}"
rm -rf "$DIR" && mkdir -p "$DIR"
trap 'rm -rf "$DIR"' EXIT

cat trainer/*.c data/*.c > "$DIR/text.txt"
$PS prepare --tokenizer byte --out "$DIR/data" --prefix b --val-fraction 0.1 "$DIR/text.txt" >/dev/null
cat > "$DIR/bench.yaml" <<EOF
run: {name: run, out_dir: $DIR}
model: {dim: 768, n_layers: 8, n_heads: 12, ffn_dim: 2048, vocab_size: 32000, max_seq_len: 64}
data: {train: "$DIR/data/b_train_*.bin", val: "$DIR/data/b_val_*.bin", seq_len: 16, batch_size: 1, val_batches: 1}
train: {steps: 3, log_every: 100, save_final: false}
checkpoint: {every: 1, keep: 1}
EOF

drop_caches() { sync; (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null && echo cold || echo warm; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN{printf "%.0f", b/1e6/s}'; }

# raw disk first (nothing else of ours in flight): a sequential write of the
# checkpoint's size (1270 MB) with fsync, best of 2, then a read of it
mb=1212
dd_sec() { awk -F', ' '{print $3}' | awk '{print $1}'; }
dd_w_s=9999
for _ in 1 2; do
  sync; sleep 2
  t=$( { dd if=/dev/zero of="$DIR/dd.bin" bs=1M count=$mb conv=fsync 2>&1 >/dev/null; } | tail -1 | dd_sec)
  dd_w_s=$(awk -v a="$t" -v b="$dd_w_s" 'BEGIN{print (a < b ? a : b)}')
done
state=$(drop_caches)
dd_r_s=$( { dd if="$DIR/dd.bin" of=/dev/null bs=1M 2>&1 >/dev/null; } | tail -1 | dd_sec)
rm -f "$DIR/dd.bin"
sync; sleep 2

$PS train "$DIR/bench.yaml" > "$DIR/write.log"
params=$(grep -o '[0-9]* parameters' "$DIR/write.log" | head -1 | cut -d' ' -f1)
ck=$(ls "$DIR"/run/ckpt-*.h5)
bytes=$(stat -c %s "$ck")
writes=$(grep -o 'in [0-9.]* s ([0-9.]* MB/s)' "$DIR/write.log" | awk '{print $2}' | paste -sd' ')
wbest=$(echo "$writes" | tr ' ' '\n' | sort -n | head -1)

# read: resume (every tensor read and its checksum verified), first cold (if allowed), then warm
rstate=$(drop_caches)
$PS train "$DIR/bench.yaml" --set train.steps=4 > "$DIR/read1.log"
$PS train "$DIR/bench.yaml" --set train.steps=5 > "$DIR/read2.log"
r1=$(grep -o 'resume: read .* in [0-9.]* s' "$DIR/read1.log" | awk '{print $(NF-1)}')
r2=$(grep -o 'resume: read .* in [0-9.]* s' "$DIR/read2.log" | awk '{print $(NF-1)}')
t0=$(date +%s.%N); $PS inspect "$(ls "$DIR"/run/ckpt-*.h5)" > /dev/null; t1=$(date +%s.%N)
insp=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')

OUT=experiments/checkpoint-io.md
if [ ! -f $OUT ]; then
  cat > $OUT <<'HDR'
# Checkpoint I/O throughput

Recorded by `experiments/bench_checkpoint.sh`: a ~106M-parameter LLaMA (C 768, 8
layers, F 2048, V 32000, untied), whose checkpoint holds fp32 master weights and
AdamW m and v (3 × 4 bytes per parameter, Fletcher32 on every ~256 KiB chunk).
Write: temp file, fsync, rename, directory fsync (postshare's own report; the best
of 3 writes, all 3 listed). Read: a resume, which reads and verifies every tensor
(cold: the guest's page cache dropped first; warm: file cached). dd: 1212 MiB
(= 1271 MB, the checkpoint's size) written sequentially with `conv=fsync` (best of
2, measured first), and read back, in the same directory.

| date | commit | machine | params | file MB | write s (MB/s) | writes s | read s (MB/s) | read warm s (MB/s) | inspect s | dd write MB/s | dd read MB/s |
|---|---|---|---|---|---|---|---|---|---|---|---|
HDR
fi
CPU="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo none)"
row="| $(date -u +%Y-%m-%d) | $COMMIT | $CPU | $params | $(awk -v b=$bytes 'BEGIN{printf "%.0f", b/1e6}') \
| $wbest ($(mbps $bytes $wbest)) | $writes | $r1 ($(mbps $bytes $r1), $rstate) | $r2 ($(mbps $bytes $r2)) \
| $insp | $(awk -v b=$((mb*1048576)) -v s=$dd_w_s 'BEGIN{printf "%.0f", b/1e6/s}') \
| $(awk -v b=$((mb*1048576)) -v s=$dd_r_s 'BEGIN{printf "%.0f", b/1e6/s}') ($state) |"
echo "$row" | tee -a $OUT
