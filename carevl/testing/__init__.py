"""Tooling for exercising CAREVL, shipped with it and used by both tests/ and benchmarks/.

- `cluster`: a real multi-node Ray cluster on one machine (`ray start` head and worker nodes), whose
  processes can be found and killed one by one;
- `curation_faults` and `judge_faults`: curation jobs and the judge service on such a cluster under
  faults (raylet, actor, driver and replica kills; malformed or hostile request bodies);
- `items`: small synthetic curation inputs and the fast settings the curation tests run with;
- `vllm_kit`: the models, CPU engine settings and model specs of the vLLM test tier.

None of it is imported by the rest of the package. `cluster` and the fault scenarios need psutil
(the `dev` extra).
"""
