"""Model weights: a local dir filled either by an init container (presetOptions.image) or, at start,
by downloading the preset's HuggingFace repo."""

from __future__ import annotations

import os


def has_weights(weights_dir: str) -> bool:
    return os.path.isfile(os.path.join(weights_dir, "config.json"))


def needs_download(model: str | None, weights_dir: str) -> bool:
    return bool(model) and not has_weights(weights_dir)


def ignore_patterns(repo_files: list[str]) -> list[str]:
    """Skip duplicate weight formats: when the repo has safetensors, the .bin/.pth copies and the
    `original/` checkpoints (Llama 3 ships both) are not needed by SGLang or transformers."""
    patterns = ["*.md", ".gitattributes"]
    if any(f.endswith(".safetensors") for f in repo_files):
        patterns += ["*.bin", "*.pth", "*.pt", "original/*", "*.gguf", "*.h5", "*.msgpack", "*.onnx"]
    return patterns


def download(model: str, weights_dir: str, token: str | None) -> None:
    """Fetch the repo into weights_dir (thin adapter around huggingface_hub; needs the network)."""
    from huggingface_hub import list_repo_files, snapshot_download

    os.makedirs(weights_dir, exist_ok=True)
    files = list_repo_files(model, token=token)
    snapshot_download(
        repo_id=model, local_dir=weights_dir, token=token, ignore_patterns=ignore_patterns(files)
    )


def ensure_weights(model: str | None, weights_dir: str, token: str | None) -> None:
    if needs_download(model, weights_dir):
        download(model, weights_dir, token)
    if not has_weights(weights_dir):
        raise FileNotFoundError(
            f"{weights_dir}/config.json not found: pass --model <HF repo> or copy the weights there "
            "(presetOptions.image with the model under /data)"
        )
