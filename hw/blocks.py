"""The block registry: every generated hardware block by kind, rebuildable from its ``config()``.

A block class registers itself with :func:`register_block` (its ``block_kind`` is set); a
``(kind, config)`` pair — what a cocotb job, a ``generate`` output's JSON or a golden trace's metadata
holds — is turned back into the block by :func:`block_from_config`, so the simulator entry and the tools
dispatch on the kind instead of keeping one hand-written path per block. Every block has
``config() -> dict`` (JSON-ready), ``from_config(config)`` and ``verilog_name``.
"""

from __future__ import annotations

import importlib

__all__ = ["register_block", "block_from_config", "block_kinds"]

_BLOCKS: dict[str, type] = {}
# the modules that define blocks (imported on first lookup, so registering needs no import order)
_MODULES = ("neuron_core", "neuron_tile", "matmul_tile", "unit_tile", "trace_matmul", "woss_softmax",
            "attention_output", "spiked_head", "accelerator")


def register_block(kind: str):
    """Class decorator: register a block class under ``kind`` (sets ``cls.block_kind``)."""
    def deco(cls):
        if kind in _BLOCKS and _BLOCKS[kind] is not cls:
            raise ValueError(f"block kind {kind!r} is already registered by {_BLOCKS[kind].__name__}")
        cls.block_kind = kind
        _BLOCKS[kind] = cls
        return cls
    return deco


def _load():
    for name in _MODULES:
        importlib.import_module(f"{__package__}.{name}")


def block_kinds() -> list[str]:
    """Every registered block kind."""
    _load()
    return sorted(_BLOCKS)


def block_from_config(kind: str, config: dict):
    """The block of ``kind`` rebuilt from its ``config()`` (validated by its constructor)."""
    _load()
    if kind not in _BLOCKS:
        raise ValueError(f"unknown block kind {kind!r}; known kinds: {sorted(_BLOCKS)}")
    return _BLOCKS[kind].from_config(config)
