"""TEST-ONLY stand-in for SGLang's native CPU kernel package `sgl_kernel` (see ../README.md).

Plain-torch versions of the two functions SGLang's CPU engine calls on a CPU without AMX. Any other
attribute resolves to a function that raises when called.
"""

from __future__ import annotations

import ctypes

import torch

STAND_IN = True  # lets a test check it runs against this shim, not a real kernel build


def assign_req_to_token_pool_cpu(req_pool_indices, req_to_token, start_offset, end_offset, out_cache_loc, pool_len):
    """req_to_token[req_pool_indices[i], start[i]:end[i]] = the next (end[i]-start[i]) out_cache_loc entries."""
    offset = 0
    for row, start, end in zip(req_pool_indices.tolist(), start_offset.tolist(), end_offset.tolist(), strict=True):
        n = end - start
        req_to_token[row, start:end] = out_cache_loc[offset : offset + n]
        offset += n


def copy_all_layer_kv_cache_cpu(data_ptrs, strides, tgt_loc, src_loc):
    """For every layer buffer (raw address + row stride in bytes): row tgt_loc[j] = row src_loc[j]."""
    if tgt_loc.numel() == 0:
        return
    rows = int(max(tgt_loc.max().item(), src_loc.max().item())) + 1
    src, tgt = src_loc.long(), tgt_loc.long()
    for address, stride in zip(data_ptrs.tolist(), strides.tolist(), strict=True):
        raw = (ctypes.c_uint8 * (rows * stride)).from_address(address)
        buffer = torch.frombuffer(raw, dtype=torch.uint8).view(rows, stride)
        buffer[tgt] = buffer[src].clone()


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)

    def missing(*args, **kwargs):
        raise NotImplementedError(f"sgl_kernel.{name}: no CPU stand-in in the test shim (tests/real_sglang/shims)")

    return missing
