"""Tokenizer: the shipped vocabulary, hand-checked ids, and agreement with transformers' CLIPTokenizer."""

import hashlib

import pytest
from transformers import CLIPTokenizer

from clip_suite.clip_impl.tokenizer import BPE_VOCAB_PATH, BPE_VOCAB_SHA256, VOCAB_SIZE, get_tokenizer, read_bpe_vocab

# Ids with BOS/EOS, as transformers' CLIPTokenizer for openai/clip-vit-large-patch14 gives them.
KNOWN = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "masterpiece, best quality": [49406, 12066, 267, 949, 3027, 49407],
    "1girl, solo, long hair": [49406, 272, 1611, 267, 5797, 267, 1538, 2225, 49407],
    "A Photo Of A CAT": [49406, 320, 1125, 539, 320, 2368, 49407],
    "don't stop": [49406, 847, 713, 1691, 49407],
    "cyberpunk cityscape at night": [49406, 36896, 40808, 536, 930, 49407],
    "portrait of an old man, oil painting": [49406, 5352, 539, 550, 896, 786, 267, 2870, 3086, 49407],
    "café crème": [49406, 15304, 1075, 12138, 614, 49407],
    "hello!!!": [49406, 3306, 995, 49407],
    "3d render, 8k": [49406, 274, 323, 13024, 267, 279, 330, 49407],
    "(cat:1.2)": [49406, 263, 2368, 281, 272, 269, 273, 264, 49407],
    "red_dress": [49406, 736, 318, 2595, 49407],
    "日本": [49406, 39121, 19277, 361, 49407],
    "  spaced   out  ": [49406, 10336, 538, 620, 49407],
}


def test_vocabulary_file_is_the_clip_bpe_and_licensed():
    assert hashlib.sha256(BPE_VOCAB_PATH.read_bytes()).hexdigest() == BPE_VOCAB_SHA256
    assert (BPE_VOCAB_PATH.parent / "LICENSE-BPE").read_text().startswith("MIT License")
    vocab, merges = read_bpe_vocab()
    assert len(vocab) == VOCAB_SIZE and len(merges) == 48894
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407 and vocab[",</w>"] == 267


@pytest.mark.parametrize("text,ids", sorted(KNOWN.items()))
def test_known_ids(text, ids):
    assert [49406] + get_tokenizer().encode(text) + [49407] == ids


@pytest.fixture(scope="module")
def hf_tokenizer():
    vocab, merges = read_bpe_vocab()
    return CLIPTokenizer(vocab=vocab, merges=list(merges))


ODD = [
    "Ünïcödé ſ ﬁ 日本語 テスト 😀😀 \t\n  x",
    "A <|endoftext|> b<|startoftext|>",
    "<|ENDOFTEXT|> stays text",
    "ＡＢＣ full width, ª¹ℌ",
    "a\x00b\x07c \u200b zero width",
    "((masterpiece)), [bad:0.5], \\(escaped\\)",
    "",
    "   ",
]


@pytest.mark.parametrize("text", ODD)
def test_matches_transformers(hf_tokenizer, text):
    assert get_tokenizer().encode(text) == hf_tokenizer(text, add_special_tokens=False)["input_ids"]


def test_decode_readable():
    tok = get_tokenizer()
    assert tok.decode(tok.encode("masterpiece, best quality")) == "masterpiece, best quality"


def test_lone_surrogates_become_replacement_characters():
    # JSON may carry "\ud800"; the tokenizer library refuses such strings outright.
    tok = get_tokenizer()
    assert tok.encode("a \ud800 b") == tok.encode("a \ufffd b")
    assert tok.encode("\U0001f600") == tok.encode("😀")  # a real astral character is untouched
