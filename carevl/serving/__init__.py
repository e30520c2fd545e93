"""The judge service (paper 3.7) on Ray Serve: typed HTTP API, dynamic batching, best-of-N ranking.

`carevl.serving.app:build_app` is the builder that serve_configs/*.yaml name in `import_path`.
Importing this package does not import Ray; the schemas are shared with `carevl.client`.
"""
