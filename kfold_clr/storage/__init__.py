"""Storage: the results directory (`store`, `layout`, `lock`, `ownership`), checkpoints, where
results came from (`provenance`, `codeprint`) and experiment tracking (`tracking`)."""
