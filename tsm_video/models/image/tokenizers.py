"""Tokenizers built offline for the ``-tiny`` image backbones (a real release ships its own).

- CLIP: the byte-level BPE of OpenAI CLIP, rebuilt from the merges file open_clip ships
  (``bpe_simple_vocab_16e6.txt.gz``): vocabulary = 256 byte symbols, the same with ``</w>``,
  the first 48 894 merges, then ``<|startoftext|>``/``<|endoftext|>`` — 49 408 ids, the same
  ids as the ``tokenizer/`` folder of SD1.5/SD2/SD3.
- T5: a small unigram vocabulary (``(piece, log-prob)`` pairs) made here: the special tokens
  at T5's ids (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2), whole words of the demo/test captions,
  and single characters so that any lower-case ASCII text tokenizes without ``<unk>``.
"""

from __future__ import annotations

import gzip
import string
from functools import lru_cache

__all__ = ["clip_tokenizer", "t5_tokenizer", "CLIP_VOCAB_SIZE", "T5_WORDS"]

CLIP_VOCAB_SIZE = 49408
_NUM_MERGES = 49152 - 256 - 2  # CLIP's vocabulary budget minus bytes and the two specials

#: Words of the tiny T5 vocabulary (compositional captions: colour, shape, count, position).
T5_WORDS = (
    "a",
    "an",
    "the",
    "one",
    "two",
    "three",
    "four",
    "five",
    "of",
    "and",
    "on",
    "in",
    "to",
    "with",
    "at",
    "is",
    "are",
    "left",
    "right",
    "top",
    "bottom",
    "above",
    "below",
    "next",
    "beside",
    "near",
    "red",
    "green",
    "blue",
    "yellow",
    "orange",
    "purple",
    "white",
    "black",
    "pink",
    "brown",
    "gray",
    "cyan",
    "magenta",
    "circle",
    "circles",
    "square",
    "squares",
    "triangle",
    "triangles",
    "star",
    "stars",
    "disk",
    "disks",
    "shape",
    "shapes",
    "small",
    "large",
    "big",
    "corgi",
    "running",
    "beach",
    "sunset",
    "photo",
    "image",
    "picture",
    "background",
    "object",
    "objects",
)


@lru_cache(maxsize=1)
def _clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's BPE vocabulary and merge list (rank order) from open_clip's bundled merges file."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = lines[1 : _NUM_MERGES + 1]  # line 0 is a version header
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    if len(tokens) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"open_clip's BPE file gave {len(tokens)} tokens, expected {CLIP_VOCAB_SIZE}")
    return {tok: i for i, tok in enumerate(tokens)}, [tuple(m.split()) for m in merges]


@lru_cache(maxsize=4)
def clip_tokenizer(pad_token: str = "<|endoftext|>", max_length: int = 77):
    """A ``transformers.CLIPTokenizer`` with CLIP's vocabulary (no download; one shared instance
    per arguments: tokenizers are not mutated in use).

    ``pad_token``: ``<|endoftext|>`` as in SD1.5 and SD3's first CLIP, ``!`` (id 0) as in SD2's
    OpenCLIP-H and SD3's CLIP-G tokenizers.
    """
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab()
    return CLIPTokenizer(
        vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=max_length
    )


@lru_cache(maxsize=4)
def t5_tokenizer(max_length: int = 512):
    """A ``transformers.T5Tokenizer`` over a small unigram vocabulary (see :data:`T5_WORDS`).

    Ids: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, then words, then characters, then T5's 100
    ``<extra_id_*>`` sentinels; ``len(tokenizer)`` is the embedding size a T5 encoder needs.
    """
    from transformers import T5Tokenizer

    chars = string.ascii_lowercase + string.digits + string.punctuation
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -1.0) for w in T5_WORDS]  # whole words score best
    pieces += [("\u2581", -5.0)] + [("\u2581" + c, -6.0) for c in chars] + [(c, -7.0) for c in chars]
    return T5Tokenizer(vocab=pieces, model_max_length=max_length)
