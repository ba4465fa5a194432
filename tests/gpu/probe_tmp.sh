export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 PYTHONPATH=$PWD PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
r() { echo "== $*"; timeout 100 torchrun --standalone --nproc_per_node "$@" 2>&1 | grep -v -i "warn\|OMP_NUM\|\*\*\*\*\|elastic\|site-packages/torch/distributed/run.py\|launcher" | grep -E " ok |Error|Thread|File \"|Stack|Current" | head -30; }
r 4 tests/gpu/graph_collectives.py all_to_all --group 2 --rows 65536 --hang-s 80
r 4 tests/gpu/graph_collectives.py model --group 2 --layers 48 --grid 4x8x12 --hang-s 80
echo "== bench"
TORCH_CPP_LOG_LEVEL=INFO timeout 250 torchrun --standalone --nproc_per_node 2 bench/distributed.py --sizes 384x640 --no-guided --compile --graphs --reps 3 --hang-s 220 > /tmp/b.txt 2>&1
grep -E "GPU |Waiting|capture|File \"|Thread|Current|Error" /tmp/b.txt | grep -v "site-packages/torch/distributed/elastic" | head -80
