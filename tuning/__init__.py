"""Fine-tuning side of the operator: trainer, dataset loading, adapter image push, safe downloader.

The hook server imports `tuning.url_policy` and `tuning.config` only; both stay stdlib + pyyaml so that
importing them never pulls in torch or transformers.
"""
