"""Data, on its way to the model: sources, decoding, batches with their masks, loaders, the bad-row
policy, checks, shards and the demo dataset."""
