#!/bin/bash
# Peak RSS of reward fine-tuning (the bench_reward.py recipe, first 1,600 training pairs,
# 50 steps) three ways:
#   exact-widths:     every length group exactly as wide as its longest text
#                     (trainer.pad_to_multiple_of=null), glibc's default allocator settings;
#   small-thresholds: the same with small mmap/trim thresholds (freed blocks go back to
#                     the OS at once);
#   pad32:            the reward-hh recipe's default, widths rounded up to a multiple of 32.
# Needs bench_out/reward-data from scripts/bench_reward.py. Usage: bash scripts/bench_reward_memory.sh
set -euo pipefail
W=${W:-bench_out/reward-data}
OUT=${OUT:-/tmp/contrastlib-memruns}
common=(reward-hh "output_dir=$OUT" "data.train=$W/train.jsonl" data.max_rows=1600 "eval.reward=[]"
        method.heldout_fraction=0.0 model.max_seq_length=256 trainer.enable_progress_bar=false trainer.precision=auto
        trainer.checkpoint_every_n_steps=1000000 method.frozen=false trainer.max_epochs=1 data.batch_size=32
        optim.lr=2e-5 method.head_lr=1e-3 optim.warmup_ratio=0.1 trainer.gradient_clip_val=1.0)
for v in exact-widths small-thresholds pad32; do
  start=$(date +%s)
  extra=(trainer.pad_to_multiple_of=null)
  if [ "$v" = pad32 ]; then extra=(trainer.pad_to_multiple_of=32); fi
  if [ "$v" = small-thresholds ]; then
    env MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=65536 \
      /usr/bin/time -v python -m contrastlib fit "${common[@]}" "${extra[@]}" "name=$v" > "$OUT-$v.log" 2>&1
  else
    /usr/bin/time -v python -m contrastlib fit "${common[@]}" "${extra[@]}" "name=$v" > "$OUT-$v.log" 2>&1
  fi
  echo "$v: peak RSS $(grep 'Maximum resident' "$OUT-$v.log" | awk '{print int($NF/1024)}') MB, wall $(( $(date +%s) - start )) s"
done
