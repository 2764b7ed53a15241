"""The user's own config folder for rerank_sweeps: `conf/` in the working directory."""
