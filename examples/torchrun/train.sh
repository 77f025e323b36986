#!/bin/bash
# SSDLite on COCO with torchrun, one command per node (2 nodes x 4 GPUs here):
#   node 0: NODE_RANK=0 MASTER_ADDR=<node 0 address> JOB_ID=ssdlite-1 COCO_ROOT=/data/coco bash examples/torchrun/train.sh
#   node 1: NODE_RANK=1 MASTER_ADDR=<node 0 address> JOB_ID=ssdlite-1 COCO_ROOT=/data/coco bash examples/torchrun/train.sh
# - --rdzv-id names the job: every rank writes outputs/detection/torchrun-<JOB_ID> (mnv2_tasks/launch.py);
# - relaunched with the same JOB_ID after a failure, ckpt_path=last continues from that folder's last checkpoint;
# - --max-restarts: torchrun restarts the workers itself after a crash, into the same folder.
# MNV2_DRY_RUN=1 prints the command instead of running it (tests/test_recipes.py).
set -euo pipefail

: "${COCO_ROOT:?set COCO_ROOT to the COCO folder (annotations/, train2017/, val2017/)}"
: "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"
: "${JOB_ID:?set JOB_ID, the same on every node (it names the run folder)}"
NNODES="${NNODES:-2}"
NPROC="${NPROC:-4}"

CMD=(
  torchrun "--nnodes=${NNODES}" "--nproc-per-node=${NPROC}" "--node-rank=${NODE_RANK:-0}"
  --rdzv-backend=c10d "--rdzv-endpoint=${MASTER_ADDR}:${MASTER_PORT:-29500}" "--rdzv-id=${JOB_ID}" --max-restarts=3
  train.py
  task=detection det_head=paper data=coco "data.root=${COCO_ROOT}" data.batch_size=32
  trainer=ddp trainer.accelerator=gpu "trainer.devices=${NPROC}" "trainer.num_nodes=${NNODES}" trainer.sync_batchnorm=true
  lr_scaling.rule=linear lr_scaling.base_batch_size=256
  ckpt_path=last
)

if [[ "${MNV2_DRY_RUN:-0}" == 1 ]]; then
  echo "${CMD[@]}"
else
  exec "${CMD[@]}"
fi
