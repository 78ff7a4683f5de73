"""Applications on the model: the command line (`cli`), the corpus tokenizer (`corpus`) and its Ray
engine (`ray_engine`). The tokenizer's defaults live here, torch-free, for the CLI's `--help`."""
DEFAULT_SHARD_SIZE = 1000  # items per shard file
DEFAULT_BATCH_SIZE = 16  # items per encode call
