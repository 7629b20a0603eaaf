"""Training: the loop, optimiser groups (Muon + AdamW), LR schedules, checkpoints, torch.distributed."""
