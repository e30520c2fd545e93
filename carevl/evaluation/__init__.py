"""Evaluation of a judge on VL-RewardBench, generic pairwise data (MLLM-as-a-Judge settings) and
held-out synthetic pairs, with a bias report (paper 4.1, 4.4, A.2, Tables 1 and 2).

Pure pieces: `metrics` (accuracies), `bias` (position, length, ties). I/O: `loaders` (benchmarks),
`report` (predictions.jsonl, report.json, report.md), `charts` (PNGs). Orchestration: `runner`.
"""
