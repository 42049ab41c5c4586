"""Fine-tuning for visual question answering: answer vocabulary, soft targets and the VQA v2 accuracy metric."""
