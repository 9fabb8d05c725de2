"""Kernel live patching (the kernel's kernel/livepatch) on an ftemu machine: ``m.livepatch``."""
from .core import KlpError, Livepatch
from .structs import KlpFunc, KlpObject, KlpPatch

__all__ = ["KlpError", "KlpFunc", "KlpObject", "KlpPatch", "Livepatch"]
