#!/bin/bash
# Pretrain on several machines under SLURM: one torchrun agent per node, every GPU of a node one
# process, c10d rendezvous on the first node. Submit with:
#
#     sbatch --nodes 4 scripts/slurm_pretrain.sh --config vit_b16_gpu --out /shared/runs/vit_b16
#
# Everything after the script's name goes to `multijepa pretrain` (a config, --out, key=value
# overrides). The run folder (--out) must be on storage every node sees; rank 0 alone writes to it.
# A killed job continues with the same command plus --resume, on any number of nodes:
#
#     sbatch --nodes 2 scripts/slurm_pretrain.sh --config vit_b16_gpu --out /shared/runs/vit_b16 --resume
#
# The torchrun line each node runs, by hand without SLURM (HOST = the first node's address):
#
#     torchrun --nnodes N --nproc-per-node GPUS --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
#         --rdzv-id RUN -m multijepa pretrain --config vit_b16_gpu --out /shared/runs/vit_b16
#
#SBATCH --job-name=multijepa
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
port=${MULTIJEPA_RDZV_PORT:-29500}
gpus=${SLURM_GPUS_ON_NODE:-$(nvidia-smi -L | wc -l)}

# NCCL picks the network itself; set NCCL_SOCKET_IFNAME (and NCCL_IB_HCA) here if it picks wrongly.
srun --kill-on-bad-exit=1 torchrun \
    --nnodes "$SLURM_JOB_NUM_NODES" \
    --nproc-per-node "$gpus" \
    --rdzv-backend c10d \
    --rdzv-endpoint "$head_node:$port" \
    --rdzv-id "$SLURM_JOB_ID" \
    --rdzv-conf join_timeout=600 \
    -m multijepa pretrain "$@"
