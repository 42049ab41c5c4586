"""Using a trained model: embeddings, retrieval metrics, zero-shot classification, the faiss index
and search."""
