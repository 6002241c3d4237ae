"""Fine-tuning side of the operator: trainer, dataset loading, adapter image push, safe downloader.

The hook server imports nothing from here: the rules both sides apply (the default training_config
templates, the URL policy) live in workload_contract.
"""
