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

# every method the comparisons run: SALE's own selection (exact, and with estimate_rows=16) beside the others
ALL_METHODS = ("sale", "sale_rows16", *METHODS)


def method_selector(method: str, config):
    """(q, k, knob) -> block mask for one of ALL_METHODS (SALE's knob: tau; a top_k given as a float that is a whole
    number counts as that int)."""
    import sale
    if method == "sale":
        return lambda q, k, knob: sale.select_blocks(q, k, knob, config)
    if method == "sale_rows16":
        return lambda q, k, knob: sale.select_blocks(q, k, knob, config.replace(estimate_rows=16))
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(ALL_METHODS)}, got {method!r}")
    fn, knob_name = METHODS[method]
    if knob_name == "top_k":
        return lambda q, k, knob: fn(q, k, int(knob) if float(knob).is_integer() else knob, config)
    return lambda q, k, knob: fn(q, k, knob, config)


__all__ = ["ALL_METHODS", "METHODS", "flexprefill_blocks", "method_selector", "pooled_blocks",
           "vertical_slash_blocks", "xattention_blocks"]
