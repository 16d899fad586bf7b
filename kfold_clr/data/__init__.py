"""Data: load the data set a config names (`datasets`; image folders in `images`), memory estimates
that refuse what cannot fit (`memory`), the notebook's array cache (`array_cache`) and the
cross-validation splits (`splits`)."""
