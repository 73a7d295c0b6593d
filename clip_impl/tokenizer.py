"""CLIP byte-level BPE tokenizer built from the vocabulary file the pack ships.

The vocabulary is OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (MIT licence, see ``data/LICENSE-BPE``):
a header line, then merge rules. The token table is derived from it the way CLIP defines it
(256 byte symbols, the same with ``</w>``, one entry per merge, then the two special tokens), which gives
the 49408-entry table every CLIP text tower (CLIP-L, OpenCLIP H and bigG) uses.

Tokenization follows transformers' ``CLIPTokenizer`` (what ComfyUI uses): NFC, whitespace runs to one
space, lowercase, CLIP's pre-tokenizer regex, byte-level BPE. It is not OpenAI's ftfy/HTML-unescaping
variant. ``tests/clip_impl/test_tokenizer.py`` checks this against transformers on the same table.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import re
import threading
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE

BOS_ID = 49406
EOS_ID = 49407
COMMA_ID = 267  # ",</w>"
VOCAB_SIZE = 49408
BPE_VOCAB_PATH = Path(__file__).parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
BPE_VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"

# Merge rules used by CLIP: lines 1 .. 48894 of the file (49152 - 256 - 2 of them).
_MERGE_COUNT = 49152 - 256 - 2
_PRETOKENIZE_PATTERN = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes, in CLIP's table order.

    Printable Latin-1 bytes stand for themselves and come first; the other bytes follow, mapped to
    code points from U+0100 on. This order is the order of the first 256 vocabulary entries.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def read_bpe_vocab(path: Path = BPE_VOCAB_PATH) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Read the shipped merge file; return (token -> id table of 49408 entries, merge rules)."""
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != BPE_VOCAB_SHA256:
        raise ValueError(
            f"{path} is not the CLIP BPE vocabulary (sha256 mismatch); reinstall CLIP Suite to restore it"
        )
    lines = gzip.decompress(raw).decode("utf-8").split("\n")[1 : _MERGE_COUNT + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    if len(tokens) != VOCAB_SIZE:
        raise ValueError(f"{path} gives {len(tokens)} tokens; CLIP needs {VOCAB_SIZE}")
    return {tok: i for i, tok in enumerate(tokens)}, merges


class ClipTokenizer:
    """Text -> CLIP token ids, without BOS/EOS. Thread-safe; build once with :func:`get_tokenizer`."""

    def __init__(self, vocab_path: Path = BPE_VOCAB_PATH):
        vocab, merges = read_bpe_vocab(vocab_path)
        model = BPE(
            vocab=vocab,
            merges=merges,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
            unk_token="<|endoftext|>",
        )
        tok = Tokenizer(model)
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
        )
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_PRETOKENIZE_PATTERN), behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        # The special tokens typed literally in a prompt map to their ids, as in transformers.
        tok.add_special_tokens(
            [AddedToken("<|startoftext|>", normalized=False), AddedToken("<|endoftext|>", normalized=False)]
        )
        self._tok = tok
        self._id_to_token = {i: t for t, i in vocab.items()}
        self._lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with no BOS/EOS added; '' gives []."""
        if not text:
            return []
        return self._tok.encode(valid_unicode(text), add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """:meth:`encode` for many texts at once (tokenizers runs them in one call)."""
        if not texts:
            return []
        return [e.ids for e in self._tok.encode_batch([valid_unicode(t) for t in texts], add_special_tokens=False)]

    def token_text(self, token_id: int) -> str:
        """The vocabulary entry of one id, as a readable word piece ('cat</w>' -> 'cat')."""
        entry = self._id_to_token.get(int(token_id), "")
        if entry in ("<|startoftext|>", "<|endoftext|>"):
            return entry
        return self._tok.decoder.decode([entry]).replace("</w>", " ")

    def decode(self, ids: list[int]) -> str:
        """Readable text for ids (word ends become spaces, specials are dropped)."""
        entries = [self._id_to_token.get(int(i), "") for i in ids if int(i) not in (BOS_ID, EOS_ID)]
        text = self._tok.decoder.decode(entries) if entries else ""
        text = " ".join(text.replace("</w>", " ").split())
        return re.sub(r" ([,.;:!?)\]])", r"\1", text)


def valid_unicode(text: str) -> str:
    """``text`` with lone UTF-16 surrogates (legal in JSON and Python strings, refused by the tokenizer
    library) replaced by U+FFFD; other text is returned as is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> ClipTokenizer:
    """The process-wide tokenizer (building it reads the 1.4 MB vocabulary once)."""
    return ClipTokenizer()
