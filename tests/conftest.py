import torch

# Tests use tiny tensors: extra intra-op threads cost more than they save, and on a busy
# 2-core machine two threads were measured 5-25x slower than one.
torch.set_num_threads(1)
