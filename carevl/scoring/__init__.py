"""Offline scoring with a trained judge (`ray_jobs.score`): pairs and groups of candidates on Ray Data."""
