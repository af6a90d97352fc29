"""RFC 6962 / RFC 9162 Merkle tree hashing, with inclusion and consistency proofs.

Why this and not a home-made scheme: a checkpoint commits to many run seals with
one root, and an auditor must be able to check, with tools that are not ours,
that one run is in it (an inclusion proof) and that a later checkpoint only
appended to an earlier one (a consistency proof). RFC 6962's hashing is what
Certificate Transparency, Go's checksum database and Sigstore use: leaves are
hashed as SHA-256(0x00 || data) and interior nodes as SHA-256(0x01 || left ||
right), so a leaf can never pass for a node. The tree over n leaves splits at
the largest power of two below n. Generation follows RFC 6962 section 2.1;
verification follows the algorithms of RFC 9162 section 2.1.3.2 and 2.1.4.2.

Everything here takes and returns leaf *hashes* (32 bytes each), not leaf data:
callers hash their entries with `leaf_hash` once. Verification never raises on a
malformed proof (wrong lengths, wrong types, sizes out of range): it answers
False. Generation raises `ValueError` for an index or size outside the tree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
# The root of the tree with no leaves: SHA-256 of the empty string (RFC 6962 2.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """The hash of one leaf: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_leaves(leaves: Sequence[bytes]) -> None:
    for leaf in leaves:
        if not isinstance(leaf, (bytes, bytearray)) or len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, got {leaf!r:.80}")


def tree_root(leaves: Sequence[bytes]) -> bytes:
    """The root (Merkle Tree Hash) over ``leaves``, a sequence of leaf hashes."""
    _check_leaves(leaves)
    return _root(leaves, 0, len(leaves))


def _root(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    # Iterative, left to right: a stack of complete subtrees, merged as they pair up,
    # then folded right to left (the RFC's split puts the ragged part on the right).
    n = end - start
    if n == 0:
        return EMPTY_ROOT
    stack: list[tuple[int, bytes]] = []  # (size, hash), sizes strictly decreasing
    for index in range(start, end):
        size, digest = 1, bytes(leaves[index])
        while stack and stack[-1][0] == size:
            left_size, left = stack.pop()
            size, digest = left_size + size, node_hash(left, digest)
        stack.append((size, digest))
    _, digest = stack.pop()
    while stack:
        _, left = stack.pop()
        digest = node_hash(left, digest)
    return digest


class CompactRange:
    """The right edge of a growing tree: the roots of its complete subtrees, at
    most log2(n) of them. Appending a leaf and taking the root cost O(log n), so
    a checkpoint over a log of millions of entries never re-reads them."""

    __slots__ = ("_stack", "size")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        sizes = [1 << bit for bit in reversed(range(size.bit_length())) if size >> bit & 1]
        if len(sizes) != len(nodes) or not all(_is_hash(n) for n in nodes):
            raise ValueError(f"a compact range of {size} leaves has {len(sizes)} nodes, got {len(nodes)}")
        self.size = size
        self._stack = [(s, bytes(n)) for s, n in zip(sizes, nodes, strict=True)]

    @property
    def nodes(self) -> list[bytes]:
        return [digest for _, digest in self._stack]

    def append(self, leaf: bytes) -> None:
        _check_leaves([leaf])
        size, digest = 1, bytes(leaf)
        while self._stack and self._stack[-1][0] == size:
            left_size, left = self._stack.pop()
            size, digest = left_size + size, node_hash(left, digest)
        self._stack.append((size, digest))
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        digest = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            digest = node_hash(left, digest)
        return digest


def inclusion_proof(
    leaves: Sequence[bytes], index: int, *, cache: dict[tuple[int, int], bytes] | None = None
) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree over ``leaves`` (RFC 6962 2.1.1).
    ``cache``: subtree roots kept between calls over the same leaves (proofs of
    many leaves then cost O(n) in all, not each)."""
    if cache is None:
        _check_leaves(leaves)
    memo = {} if cache is None else cache

    def root(start: int, end: int) -> bytes:
        found = memo.get((start, end))
        if found is None:
            found = memo[(start, end)] = _root(leaves, start, end)
        return found

    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(leaves):
        raise ValueError(f"leaf index {index!r} is outside a tree of {len(leaves)} leaves")
    path: list[bytes] = []
    start, end = 0, len(leaves)
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(root(start + k, end))
            end = start + k
        else:
            path.append(root(start, start + k))
            start += k
    path.reverse()  # the RFC lists the path from the leaf up
    return path


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """The proof that the tree over ``leaves[:old_size]`` is a prefix of the tree
    over ``leaves`` (RFC 6962 2.1.2). Empty when ``old_size`` is 0 or the whole tree."""
    _check_leaves(leaves)
    n = len(leaves)
    if isinstance(old_size, bool) or not isinstance(old_size, int) or not 0 <= old_size <= n:
        raise ValueError(f"old size {old_size!r} is outside a tree of {n} leaves")
    if old_size in (0, n):
        return []
    return _subproof(leaves, old_size, 0, n, True)


def _subproof(leaves: Sequence[bytes], m: int, start: int, end: int, whole: bool) -> list[bytes]:
    n = end - start
    if m == n:
        return [] if whole else [_root(leaves, start, end)]
    k = _split(n)
    if m <= k:
        return [*_subproof(leaves, m, start, start + k, whole), _root(leaves, start + k, end)]
    return [*_subproof(leaves, m - k, start + k, end, False), _root(leaves, start, start + k)]


def _is_hash(value: object) -> bool:
    return isinstance(value, (bytes, bytearray)) and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def root_from_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes | None:
    """The root that ``proof`` leads to from ``leaf`` at ``index`` in a tree of
    ``size`` leaves (RFC 9162 2.1.3.2); None when the proof cannot be one."""
    if not (_is_hash(leaf) and _is_size(index) and _is_size(size) and index < size):
        return None
    if not isinstance(proof, (list, tuple)) or not all(_is_hash(p) for p in proof):
        return None
    fn, sn = index, size - 1
    digest = bytes(leaf)
    for sibling in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            digest = node_hash(bytes(sibling), digest)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            digest = node_hash(digest, bytes(sibling))
        fn >>= 1
        sn >>= 1
    return digest if sn == 0 else None


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree of
    ``size`` leaves whose root is ``root``."""
    found = root_from_inclusion(leaf, index, size, proof)
    return found is not None and _is_hash(root) and found == bytes(root)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree of ``old_size`` leaves with ``old_root`` is
    a prefix of the tree of ``new_size`` leaves with ``new_root`` (RFC 9162 2.1.4.2)."""
    if not (_is_size(old_size) and _is_size(new_size) and _is_hash(old_root) and _is_hash(new_root)):
        return False
    if not isinstance(proof, (list, tuple)) or not all(_is_hash(p) for p in proof):
        return False
    if old_size > new_size:
        return False
    if old_size == new_size:
        return not proof and bytes(old_root) == bytes(new_root)
    if old_size == 0:
        return not proof  # the empty tree is a prefix of every tree
    if not proof:
        return False
    path = [bytes(p) for p in proof]
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, bytes(old_root))
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first = second = path[0]
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            first = node_hash(node, first)
            second = node_hash(node, second)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            second = node_hash(second, node)
        fn >>= 1
        sn >>= 1
    return first == bytes(old_root) and second == bytes(new_root) and sn == 0
