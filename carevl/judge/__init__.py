"""The CAREVL judge at inference time (paper 3.7): pure decision rules and the `JudgeModel` wrapper."""
