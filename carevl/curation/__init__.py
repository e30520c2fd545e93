"""Curation (paper 3.1, 3.2; the first loop of Algorithm 1): items in, confidence-split pairs out.

Modules in the order the data flows:
    units        the input scan: row counts, unit boundaries, duplicate ids (the run ledger, `carevl.ledger`,
                 plans, stages, publishes and resumes the units)
    read         stage 1 UDF: read a unit, apply `validate` to every row
    validate     stage 1 rules; bad rows get a quarantine `reason`
    candidates   paper 3.1: responses for items that arrive without any
    captions     one caption per unique image, shared caption store
    strong_judge the strong LVLM's verdict and explanation per pair (an endpoint or a local LVLM)
    experts      M reward models score each distinct response once
    pairs        pair formation from stored scores
    votes        the paper's vote / split / relabel rules (pure)
    outputs      high / low / quarantine part files and receipts
    summary      counters, summary.json
    pipeline     the Ray Data pipeline and the driver (`run_curation`)
Models run through `carevl.models.backends` (transformers / vllm / an OpenAI-compatible endpoint).
"""
