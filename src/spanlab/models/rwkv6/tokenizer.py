"""The RWKV "world" tokenizer (rwkv_vocab_v20230424.txt) without remote code.

The vocabulary file has one token per line: `<id> <python literal> <byte length>`, the literal a
str (UTF-8 encoded to bytes) or a bytes object. Encoding is greedy: at each position the longest
vocabulary entry that matches the next bytes is taken (a byte trie), so any text encodes (every
single byte is in the vocabulary) and decoding concatenates bytes. Id 0 is the end-of-text token
the checkpoints use for bos/eos/pad; it has no line in the file.

Tokens are exposed to transformers as strings by reading their bytes as Latin-1 (a bijection), so
`convert_tokens_to_string` can restore the exact bytes before decoding them as UTF-8.
"""

from __future__ import annotations

import ast
import os
from typing import Any

from transformers import PreTrainedTokenizer

VOCAB_FILE = "rwkv_vocab_v20230424.txt"
_END = -1  # trie node key holding the id of the token that ends there


def read_vocab(path: str) -> dict[bytes, int]:
    vocab: dict[bytes, int] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            first, rest = line.split(" ", 1)
            literal, length = rest.rsplit(" ", 1)
            value = ast.literal_eval(literal)
            tok = value.encode("utf-8") if isinstance(value, str) else value
            if not isinstance(tok, bytes) or len(tok) != int(length):
                raise ValueError(f"{path}:{n}: token {literal} does not have the stated length {length}")
            vocab[tok] = int(first)
    return vocab


class Rwkv6Tokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": VOCAB_FILE}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str, bos_token: str = "<|endoftext|>", eos_token: str = "<|endoftext|>",
                 unk_token: str = "<|endoftext|>", pad_token: str = "<|endoftext|>", **kwargs: Any) -> None:
        self.vocab_file = vocab_file
        by_bytes = read_vocab(vocab_file)
        self.encoder: dict[str, int] = {"<|endoftext|>": 0}
        self.encoder.update({b.decode("latin-1"): i for b, i in by_bytes.items()})
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.trie: dict[int, Any] = {}
        for b, i in by_bytes.items():
            node = self.trie
            for byte in b:
                node = node.setdefault(byte, {})
            node[_END] = i
        super().__init__(bos_token=bos_token, eos_token=eos_token, unk_token=unk_token, pad_token=pad_token, **kwargs)

    @property
    def vocab_size(self) -> int:
        return max(self.decoder) + 1

    def get_vocab(self) -> dict[str, int]:
        return {**self.encoder, **self.added_tokens_encoder}

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        data = text.encode("utf-8")
        out, pos, n = [], 0, len(data)
        while pos < n:
            node, end, best = self.trie, pos, None
            while end < n and data[end] in node:
                node = node[data[end]]
                end += 1
                if _END in node:
                    best = end
            if best is None:  # a byte with no token of its own cannot occur in the world vocab
                raise ValueError(f"byte {data[pos]:#x} has no token in {self.vocab_file}")
            out.append(data[pos:best].decode("latin-1"))
            pos = best
        return out

    def _convert_token_to_id(self, token: str) -> int:
        return self.encoder.get(token, 0)

    def _convert_id_to_token(self, index: int) -> str:
        return self.decoder.get(index, "<|endoftext|>")

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return b"".join(t.encode("latin-1") if t != "<|endoftext|>" else b"" for t in tokens).decode("utf-8", errors="replace")

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        path = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILE)
        if os.path.abspath(path) != os.path.abspath(self.vocab_file):
            with open(self.vocab_file, encoding="utf-8") as src, open(path, "w", encoding="utf-8") as dst:
                dst.write(src.read())
        return (path,)


__all__ = ["Rwkv6Tokenizer", "VOCAB_FILE", "read_vocab"]
