"""Image folders: decoded once into a memory-mapped uint8 cache (`cache`), labels and groups
from a table (`table`), paired augmentation (`augment`) and folds streamed from the cache
(`streaming`). Nothing is imported here: each module is imported where it is used."""
