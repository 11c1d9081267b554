"""Byte-level BPE, written out in full (notebooks 01 and 02).

Text -> UTF-8 bytes -> pieces (words, numbers, punctuation, spaces) -> each piece merged by the
learned merge list, lowest rank first. Every byte is a token, so any Unicode string encodes and
decodes back exactly.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

# Split before merging so a token never spans a word boundary (the GPT-2 idea, with plain `re`).
# Every character falls in exactly one class: letters, digits, punctuation (underscore included), spaces.
SPLIT_PATTERN = re.compile(r"""'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d{1,3}| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")


def _pieces(text: str) -> list[bytes]:
    return [m.encode("utf-8") for m in SPLIT_PATTERN.findall(text)]


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer:
    """``tok.encode(text) -> list[int]``, ``tok.decode(ids) -> str``; train with ``BPETokenizer.train``."""

    def __init__(self, merges: list[tuple[int, int]] | None = None):
        self.merges = [tuple(m) for m in (merges or [])]
        self.ranks = {pair: 256 + i for i, pair in enumerate(self.merges)}
        self.vocab = [bytes([i]) for i in range(256)]
        for a, b in self.merges:
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self._cache: dict[bytes, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @classmethod
    def train(cls, text: str, vocab_size: int, progress: bool = False) -> "BPETokenizer":
        """Learn ``vocab_size - 256`` merges from ``text``: repeatedly merge the most frequent adjacent pair."""
        if not isinstance(text, str) or not text:
            raise ValueError("text must be a non-empty str")
        if not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(f"vocab_size must be an int >= 256 (the 256 byte tokens), got {vocab_size!r}")
        words = Counter(_pieces(text))
        seqs = [list(w) for w in words]
        counts = list(words.values())
        merges = []
        from ..progress import progress as progress_bar
        steps = progress_bar(range(vocab_size - 256), desc="BPE merges", unit="merge", enabled=progress)
        for step in steps:
            pairs = Counter()
            for seq, n in zip(seqs, counts):
                for pair in zip(seq, seq[1:]):
                    pairs[pair] += n
            if not pairs:
                break
            # most frequent pair; ties go to the smallest pair so training is deterministic
            best = min(pairs, key=lambda p: (-pairs[p], p))
            new_id = 256 + step
            merges.append(best)
            seqs = [_merge(s, best, new_id) if len(s) > 1 else s for s in seqs]
        return cls(merges)

    def _encode_piece(self, piece: bytes) -> list[int]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        ids = list(piece)
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, 1 << 30))
            if pair not in self.ranks:
                break
            ids = _merge(ids, pair, self.ranks[pair])
        if len(self._cache) < 100_000:
            self._cache[piece] = ids
        return ids

    def merge_steps(self, word: str) -> list[list[int]]:
        """The ids of one ``word`` after each merge ``encode`` applies (notebook 02a): its UTF-8 bytes first,
        its tokens last. ``word`` must be one piece of the split (a word with its leading space, a number,
        a run of punctuation or of spaces), since merges never cross pieces."""
        if not isinstance(word, str):
            raise TypeError(f"word must be a str, got {type(word).__name__}")
        pieces = _pieces(word)
        if len(pieces) != 1:
            raise ValueError(f"word must be one piece of the split (e.g. ' function'), got {word!r}, "
                             f"which splits into {len(pieces)} pieces")
        ids = list(pieces[0])
        steps = [ids]
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, 1 << 30))
            if pair not in self.ranks:
                break
            ids = _merge(ids, pair, self.ranks[pair])
            steps.append(ids)
        return steps

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids: list[int] = []
        for piece in _pieces(text):
            ids.extend(self._encode_piece(piece))
        return ids

    def decode_bytes(self, ids) -> bytes:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got {bad[:5]}")
        return b"".join(self.vocab[i] for i in ids)

    def decode(self, ids) -> str:
        """Text of ``ids``; a byte sequence cut mid-character shows as U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_strings(self, ids) -> list[str]:
        """Each token on its own (for display; partial UTF-8 shows as U+FFFD)."""
        return [self.vocab[int(i)].decode("utf-8", errors="replace") for i in ids]

    def save(self, path) -> None:
        Path(path).write_text(json.dumps({"type": "byte-bpe", "merges": self.merges}))

    @classmethod
    def load(cls, path) -> "BPETokenizer":
        data = json.loads(Path(path).read_text())
        if data.get("type") != "byte-bpe":
            raise ValueError(f"{path} is not a byte-level BPE tokenizer file")
        return cls([tuple(m) for m in data["merges"]])


def pair_counts(text: str) -> Counter:
    """How often each adjacent pair of bytes occurs inside the split's pieces of ``text``: BPE training
    merges the most frequent one first (notebook 02a)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    counts = Counter()
    for piece in _pieces(text):
        counts.update(zip(piece, piece[1:]))
    return counts


def show_tokens(tok: BPETokenizer, text: str) -> str:
    """``text`` with token boundaries marked: ``'Hello| world|!'`` (notebook 02's text box)."""
    return "|".join(tok.token_strings(tok.encode(text)))


def token_table(tok: BPETokenizer, text: str) -> list[tuple[int, str]]:
    """(id, text) for each token of ``text``."""
    ids = tok.encode(text)
    return list(zip(ids, tok.token_strings(ids)))
