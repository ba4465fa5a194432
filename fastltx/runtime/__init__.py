"""Runtime policy: compilation, the memory plan and weights in host memory (memory.py, offload.py),
several processes (distributed.py)."""
