"""The tiny-model kit: small models of the real architectures, built and trained on this machine so
that every stage runs on a CPU with no hub download.

`tiny` names the roles and keeps the build cache (`tiny:<role>` paths resolve to its folders),
`builders` holds each role's recipe, `vocab` the shared micro vocabulary, `alignment` the micro LLaVA's
LLaVA-style training on synthetic scenes, `expert_training` the reward-model experts' training, and
`competence` measures what the trained roles can do. The kit sits above `carevl.models` (it loads and
saves through the same code as real models) and below every pipeline stage; `carevl.models` never
imports it.
"""
