"""rerank_sweeps: train custom rerankers, evaluate them inside LanceDB, sweep with Hydra."""

__version__ = "0.1.0"
