"""Judge training on Ray Train: SFT on high-confidence pairs (paper 3.3) and DPO (paper 3.6)."""
