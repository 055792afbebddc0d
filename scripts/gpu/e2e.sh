#!/usr/bin/env bash
# End-to-end LoRA fine-tune for the GPU check, benchmark (d): synthetic 224x224 data,
# cached as .npy crops, `goclip finetune` of a random ViT-B/16 HF model with the bench's
# settings (r=64, alpha=128, q/k/v, batch 256, bf16). Its metrics.jsonl images_per_s is
# compared with `goclip bench` LoRA in the report: the GPU should not wait on data. A
# shorter second run with --device-input=false gives the host input path's rate, a third
# with --sync-every-step the rate with a host wait in every step.
#
#   scripts/gpu/e2e.sh WORK [STEPS]     (run from the repository root)
set -euo pipefail

work=$1
steps=${2:-40}
g=bin/goclip
py=${PYTHON:-python3}
data=$work/synth224
model=$work/models/vit-b-16
run=$work/e2e-run
workers=$(( $(nproc) > 4 ? $(nproc) - 2 : 2 ))

if [ ! -f "$model/config.json" ] || [ ! -f "$model/vocab.json" ]; then
  echo "e2e: making the ViT-B/16 model folder"
  "$py" scripts/gpu/interop.py --work "$work" --goclip "$g" --models vit-b-16 --models-only \
    --out "$work/e2e-models.json"
fi
t0=$(date +%s)
"$g" synth --out "$data" --images 1024 --size 224 --seed 2 --force
t1=$(date +%s)
"$g" cache --data "$data" --size 224 --workers "$workers"
t2=$(date +%s)
rm -rf "$run"
"$g" finetune --model "$model" --data "$data" --out "$run" \
  --lora-r 64 --lora-alpha 128 --lora-targets q_proj,k_proj,v_proj \
  --batch-size 256 --max-steps "$steps" --log-every 5 --precision bf16 --device cuda \
  --workers "$workers" --seed 1
t3=$(date +%s)
# The same fine-tune, shorter, on the host input path (float32 batches normalised by the
# loader, copied from pageable memory in the step): the report sets its images/s beside
# the default device input path's (uint8 copied ahead on a side stream). E2E_HOST_STEPS=0
# leaves it out.
host_steps=${E2E_HOST_STEPS:-20}
if [ "$host_steps" -gt 0 ]; then
  rm -rf "$run-host-input"
  "$g" finetune --model "$model" --data "$data" --out "$run-host-input" \
    --lora-r 64 --lora-alpha 128 --lora-targets q_proj,k_proj,v_proj \
    --batch-size 256 --max-steps "$host_steps" --log-every 5 --precision bf16 --device cuda \
    --workers "$workers" --seed 1 --device-input=false
fi
t4=$(date +%s)
# The same fine-tune, shorter, reading each step's loss on the host (--sync-every-step):
# the report sets its images/s beside the default's, which reads once per --log-every
# window; its first rows' losses equal the default run's. E2E_SYNC_STEPS=0 leaves it out.
sync_steps=${E2E_SYNC_STEPS:-15}
if [ "$sync_steps" -gt 0 ]; then
  rm -rf "$run-sync-every-step"
  "$g" finetune --model "$model" --data "$data" --out "$run-sync-every-step" \
    --lora-r 64 --lora-alpha 128 --lora-targets q_proj,k_proj,v_proj \
    --batch-size 256 --max-steps "$sync_steps" --log-every 5 --precision bf16 --device cuda \
    --workers "$workers" --seed 1 --sync-every-step
fi
t5=$(date +%s)
printf '{"synth_s": %d, "cache_s": %d, "finetune_s": %d, "steps": %d, "workers": %d, "host_input_finetune_s": %d, "host_input_steps": %d, "sync_every_step_finetune_s": %d, "sync_every_step_steps": %d}\n' \
  $((t1 - t0)) $((t2 - t1)) $((t3 - t2)) "$steps" "$workers" $((t4 - t3)) "$host_steps" $((t5 - t4)) "$sync_steps" >"$work/e2e-times.json"
echo "e2e: synth $((t1 - t0)) s, cache $((t2 - t1)) s, finetune $((t3 - t2)) s, host-input finetune $((t4 - t3)) s, sync-every-step finetune $((t5 - t4)) s"
