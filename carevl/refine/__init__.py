"""Low-confidence refinement (paper 3.4-3.5): sampled critiques, rubric scores, negative sampling."""
