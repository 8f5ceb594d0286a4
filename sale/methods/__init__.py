"""Other ways to choose the computed blocks, as peers of ``sale.select_blocks``: each returns the project's bool
block mask [B, Hq, ceil(N / block_q), ceil(N / block_k)] (sink and local blocks always kept, nothing above the
diagonal), so the same computation pass runs every one of them. ``METHODS`` maps a name to (function, the name
of its knob); the knob is what calibration and sweeps move."""
from .flexprefill import flexprefill_blocks
from .pooled import pooled_blocks
from .vertical_slash import vertical_slash_blocks
from .xattention import xattention_blocks

METHODS = {
    "pooled": (pooled_blocks, "mass"),
    "vertical_slash": (vertical_slash_blocks, "top_k"),
    "xattention": (xattention_blocks, "mass"),
    "flexprefill": (flexprefill_blocks, "gamma"),
}

__all__ = ["METHODS", "flexprefill_blocks", "pooled_blocks", "vertical_slash_blocks", "xattention_blocks"]
