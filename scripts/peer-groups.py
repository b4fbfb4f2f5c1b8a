"""Prints the ragged expert groups that the peer's grouped_mm_ceiling.py times torch._grouped_mm on.

It draws them the same way from the same seed (torch.manual_seed(0); per shape, in order: torch.rand(E)
on the CPU, then a multinomial of T*K rows over those probabilities; the script's other random tensors
come from the CUDA generator and leave the CPU stream alone), so moe4j can time its expert products on
exactly those groups. One line per shape: D H E K T counts(comma-separated).
"""
import torch

torch.manual_seed(0)
for D, H, E, K, T in [(2048, 7168, 8, 2, 8192), (2048, 1024, 64, 8, 8192), (2048, 768, 128, 8, 8192), (7168, 2048, 64, 8, 4096)]:
    probs = torch.rand(E)
    counts = torch.distributions.Multinomial(T * K, probs / probs.sum()).sample().long()
    print(D, H, E, K, T, ",".join(str(int(c)) for c in counts))
