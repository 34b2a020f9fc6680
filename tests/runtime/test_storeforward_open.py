"""A store-and-forward file that cannot be opened stops the node with one clear line."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.storeforward import StoreForwardConfig
from meshcomm.runtime.app import StartupError, open_store_forward
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier


def _node() -> MeshNode:
    return MeshNode(Identity(b"s" * 32), NodeSettings(), verifier=SignatureVerifier(),
                    rng=random.Random(1), now=0.0)


def test_path_that_is_a_directory_is_a_startup_error(tmp_path: Path) -> None:
    path = tmp_path / "storeforward.sqlite"
    path.mkdir()
    with pytest.raises(StartupError, match="store-and-forward"):
        open_store_forward(path, _node(), StoreForwardConfig(), 0.0)


def test_file_that_is_not_a_database_is_a_startup_error(tmp_path: Path) -> None:
    path = tmp_path / "storeforward.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StartupError, match="store-and-forward"):
        open_store_forward(path, _node(), StoreForwardConfig(), 0.0)
