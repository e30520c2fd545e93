"""CAREVL on Ray: caption-guided curation of multimodal preference data, SFT + DPO training of an
LVLM judge, a pairwise judging service, and evaluation."""

__version__ = "0.1.0"
