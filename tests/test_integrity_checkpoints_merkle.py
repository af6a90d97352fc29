"""RFC 6962 Merkle hashing: the reference vectors Certificate Transparency's
implementations test against, and properties over random trees (every honest
proof verifies, every altered one fails)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentaudit._merkle import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

# The leaves and roots of the RFC 6962 reference tree (certificate-transparency's
# merkle tree tests, also transparency-dev/merkle's).
CT_LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]
CT_ROOTS = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
# (leaf, 1-based as in the reference; tree size; audit path)
CT_INCLUSION = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (2, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CT_CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
HASHES = [leaf_hash(data) for data in CT_LEAVES]


def test_the_empty_tree_and_the_prefixes():
    assert tree_root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_the_reference(size):
    assert tree_root(HASHES[:size]) == CT_ROOTS[size - 1]


@pytest.mark.parametrize(("leaf", "size", "path"), CT_INCLUSION)
def test_inclusion_proofs_match_the_reference(leaf, size, path):
    expected = [bytes.fromhex(h) for h in path]
    assert inclusion_proof(HASHES[:size], leaf - 1) == expected
    assert verify_inclusion(HASHES[leaf - 1], leaf - 1, size, expected, CT_ROOTS[size - 1])


@pytest.mark.parametrize(("old", "new", "path"), CT_CONSISTENCY)
def test_consistency_proofs_match_the_reference(old, new, path):
    expected = [bytes.fromhex(h) for h in path]
    assert consistency_proof(HASHES[:new], old) == expected
    assert verify_consistency(old, new, CT_ROOTS[old - 1], CT_ROOTS[new - 1], expected)


def test_the_reference_edge_cases_of_consistency():
    some, other = b"\x11" * 32, b"\x22" * 32
    assert verify_consistency(0, 0, some, some, [])
    assert verify_consistency(0, 1, some, other, [])
    assert not verify_consistency(0, 0, some, other, [])
    assert not verify_consistency(1, 1, some, other, [])
    assert not verify_consistency(1, 0, some, other, [])  # back in time
    assert not verify_consistency(2, 1, some, other, [])
    assert not verify_consistency(1, 2, some, other, [])  # a proof is needed
    assert not verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    assert not verify_consistency(0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    assert not verify_consistency(1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])


def test_inclusion_refuses_empty_and_out_of_range_trees():
    some = b"\x33" * 32
    for index, size in ((0, 0), (1, 0), (2, 1)):
        assert not verify_inclusion(some, index, size, [], EMPTY_ROOT)
    assert verify_inclusion(some, 0, 1, [], some)  # one leaf: the leaf is the root
    assert not verify_inclusion(some, 0, 1, [], b"")
    with pytest.raises(ValueError):
        inclusion_proof(HASHES, 8)
    with pytest.raises(ValueError):
        consistency_proof(HASHES, 9)
    with pytest.raises(ValueError):
        tree_root([b"short"])


def test_malformed_proofs_answer_false_and_never_raise():
    root = CT_ROOTS[7]
    proof = inclusion_proof(HASHES, 5)
    for bad in (None, "proof", [b"x"], [1, 2, 3], [*proof[:2], "not bytes"]):
        assert verify_inclusion(HASHES[5], 5, 8, bad, root) is False  # type: ignore[arg-type]
        assert verify_consistency(6, 8, CT_ROOTS[5], root, bad) is False  # type: ignore[arg-type]
    assert not verify_inclusion(HASHES[5], -1, 8, proof, root)
    assert not verify_inclusion(HASHES[5], True, 8, proof, root)  # type: ignore[arg-type]
    assert not verify_inclusion(HASHES[5], 5, 8, proof, None)  # type: ignore[arg-type]


# -- properties over random trees -------------------------------------------------------

leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=70).map(
    lambda items: [leaf_hash(bytes([i % 256]) + item) for i, item in enumerate(items)]
)


def _naive_root(leaves: list[bytes]) -> bytes:
    # RFC 6962 2.1 as written: the recursive definition.
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(_naive_root(leaves[:k]), _naive_root(leaves[k:]))


def _alterations(proof: list[bytes]) -> list[list[bytes]]:
    out = []
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([proof[i][0] ^ 0x08]) + proof[i][1:]
        out.append(flipped)
    if proof:
        out.append(proof[:-1])
        out.append([b"\x00" * 32, *proof])
    out.append([*proof, b"\xab" * 32])
    if len(proof) > 1 and proof[0] != proof[1]:
        out.append([proof[1], proof[0], *proof[2:]])
    return out


@settings(max_examples=150, deadline=None)
@given(leaves=leaf_lists, data=st.data())
def test_every_inclusion_proof_verifies_and_every_alteration_fails(leaves, data):
    root = tree_root(leaves)
    assert root == _naive_root(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = inclusion_proof(leaves, index)
    assert verify_inclusion(leaves[index], index, len(leaves), proof, root)
    for altered in _alterations(proof):
        assert not verify_inclusion(leaves[index], index, len(leaves), altered, root)
    others = {i for i in range(len(leaves)) if leaves[i] != leaves[index]}
    for wrong in {index - 1, index + 1, index ^ 2} & others:
        assert not verify_inclusion(leaves[index], wrong, len(leaves), proof, root)
    assert not verify_inclusion(b"\xee" * 32, index, len(leaves), proof, root)
    if len(leaves) > 1:
        assert not verify_inclusion(leaves[index], index, len(leaves) * 2, proof, root)


@settings(max_examples=150, deadline=None)
@given(leaves=leaf_lists, data=st.data())
def test_every_consistency_proof_verifies_and_every_alteration_fails(leaves, data):
    old = data.draw(st.integers(0, len(leaves)))
    old_root, new_root = tree_root(leaves[:old]), tree_root(leaves)
    proof = consistency_proof(leaves, old)
    assert verify_consistency(old, len(leaves), old_root, new_root, proof)
    if proof:  # only non-trivial proofs can be altered into a lie
        for altered in _alterations(proof):
            assert not verify_consistency(old, len(leaves), old_root, new_root, altered)
        assert not verify_consistency(old, len(leaves), new_root, old_root, proof)
        assert not verify_consistency(old, len(leaves), b"\xee" * 32, new_root, proof)
        assert not verify_consistency(old, len(leaves), old_root, b"\xee" * 32, proof)
        assert not verify_consistency(old + 1, len(leaves), old_root, new_root, proof)


@settings(max_examples=80, deadline=None)
@given(leaves=leaf_lists, data=st.data())
def test_a_rewritten_history_has_no_consistency_proof(leaves, data):
    # The checkpoint chain's guarantee: change any old leaf, and the old root cannot
    # be proven a prefix of the new tree.
    old = data.draw(st.integers(1, len(leaves)))
    victim = data.draw(st.integers(0, old - 1))
    forged = list(leaves)
    forged[victim] = hashlib.sha256(b"forged" + leaves[victim]).digest()
    proof = consistency_proof(forged, old)
    assert not verify_consistency(old, len(leaves), tree_root(leaves[:old]), tree_root(forged), proof)


@settings(max_examples=60, deadline=None)
@given(leaves=leaf_lists, data=st.data())
def test_a_compact_range_grows_to_the_same_root(leaves, data):
    from agentaudit._merkle import CompactRange

    cut = data.draw(st.integers(0, len(leaves)))
    first = CompactRange()
    for leaf in leaves[:cut]:
        first.append(leaf)
    assert first.root() == tree_root(leaves[:cut])
    resumed = CompactRange(first.size, first.nodes)  # as stored with a checkpoint, and read back
    for leaf in leaves[cut:]:
        resumed.append(leaf)
    assert resumed.size == len(leaves) and resumed.root() == tree_root(leaves)
    with pytest.raises(ValueError):
        CompactRange(first.size, [*first.nodes, b"\x00" * 32])
