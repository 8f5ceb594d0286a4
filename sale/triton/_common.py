"""Helpers shared by the kernel launchers."""
import os

import triton


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def pow2(x: int) -> int:
    return triton.next_power_of_2(max(1, x))
