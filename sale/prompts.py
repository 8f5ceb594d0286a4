"""Calibration and evaluation prompts from text every machine has: the Python standard library's own
docstrings and sources. Seeded and deterministic.

- key-value retrieval: "extract the value for this key from the JSON object" over random UUID pairs;
- needle in a haystack: a sentence with a 7-digit number inserted at a chosen depth of stdlib prose;
- held-out text: a stdlib source file, for perplexity and next-token agreement.
"""
from __future__ import annotations

import importlib
import inspect
import json
import random
import uuid
import warnings

HAYSTACK_MODULES = ("collections", "functools", "itertools", "textwrap", "string", "json", "argparse", "pathlib",
                    "datetime", "statistics", "fractions", "decimal", "heapq", "bisect", "shutil", "subprocess",
                    "logging", "unittest", "typing", "dataclasses", "enum", "inspect", "csv", "email.message")
# held-out text: stdlib sources not in the haystack, difflib's first (the committed 8K records read only it),
# then enough more for 32K-token contexts
HELD_OUT_MODULES = ("difflib", "optparse", "pickletools")


def stdlib_prose() -> str:
    """Docstrings of stdlib modules and their public members, in a fixed order."""
    parts = []
    for name in HAYSTACK_MODULES:
        mod = importlib.import_module(name)
        if mod.__doc__:
            parts.append(inspect.cleandoc(mod.__doc__))
        for attr in sorted(dir(mod)):
            if attr.startswith("_"):
                continue
            with warnings.catch_warnings():   # typing.io and typing.re warn on access; their text is unchanged
                warnings.simplefilter("ignore", DeprecationWarning)
                doc = getattr(getattr(mod, attr, None), "__doc__", None)
            if isinstance(doc, str) and len(doc) > 200 and doc not in parts:
                parts.append(inspect.cleandoc(doc))
    return "\n\n".join(parts)


def held_out_text() -> str:
    """The sources of HELD_OUT_MODULES, one after the other (about 237K characters: 45-60K tokens)."""
    return "\n\n".join(inspect.getsource(importlib.import_module(m)) for m in HELD_OUT_MODULES)


def kv_retrieval(model, num_tokens: int, seed: int = 0) -> tuple[list[int], str]:
    """A chat prompt of about `num_tokens` tokens asking for one key's value in a JSON object; returns
    (token ids, expected value). The queried key sits at a seeded random position."""
    rng = random.Random(seed)
    make = lambda: str(uuid.UUID(int=rng.getrandbits(128)))
    pairs = {}
    question = lambda k: (f"Extract the value corresponding to the specified key in the JSON object below.\n\n"
                          f"{json.dumps(pairs, indent=0)}\n\nKey: \"{k}\"\nThe value associated with the specified "
                          f"key is:")
    while True:  # add pairs until the prompt is longer than asked (the draws fix the committed prompts)
        key, value = make(), make()
        pairs[key] = value
        target = rng.choice(list(pairs))
        if len(model.encode(model.chat(question(target)))) > num_tokens and len(pairs) > 1:
            break
    while len(pairs) > 1:  # then drop the last pairs until the prompt, with its chosen key, fits
        del pairs[next(reversed(pairs))]
        target = rng.choice(list(pairs))
        ids = model.encode(model.chat(question(target)))
        if len(ids) <= num_tokens:
            return ids, pairs[target]
    raise ValueError(f"num_tokens={num_tokens} is too short for a key-value retrieval prompt")


def needle(model, num_tokens: int, depth: float, seed: int = 0) -> tuple[list[int], str]:
    """A chat prompt of about `num_tokens` tokens of stdlib prose with "The special magic number is
    NNNNNNN." at `depth` (0 = start, 1 = end); returns (token ids, the number)."""
    if not 0 <= depth <= 1:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    rng = random.Random(seed)
    number = str(rng.randrange(10**6, 10**7))
    sentence = f" The special magic number is {number}. "
    question = "\n\nWhat is the special magic number mentioned in the text above? Answer with the number only."
    budget = num_tokens - len(model.encode(model.chat(sentence + question)))
    if budget < 16:
        raise ValueError(f"num_tokens={num_tokens} is too short for a needle prompt")
    hay = model.encode(stdlib_prose())
    while len(hay) < budget:
        hay = hay + hay
    while True:  # decoding and re-encoding can merge or split tokens: shrink until it fits
        part = hay[:budget]
        cut = int(depth * len(part))
        ids = model.encode(model.chat(model.decode(part[:cut]) + sentence + model.decode(part[cut:]) + question))
        if len(ids) <= num_tokens:
            return ids, number
        budget -= len(ids) - num_tokens
