"""Packaging: one import name, ``raftmq``, with every folder of the library in it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import raftmq

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_installed_under_raftmq() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {"raftmq"} | {
        "raftmq." + ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("dledger", "broker", "client", "chaos")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert folders == listed, f"pyproject.toml packages differ from the folders: {sorted(folders ^ listed)}"


def test_the_client_api_is_importable_from_raftmq() -> None:
    from raftmq import Admin, Producer, PullConsumer, PushConsumer
    from raftmq.client import Admin as A, Producer as P, PullConsumer as Pc, PushConsumer as Ps

    assert (Admin, Producer, PullConsumer, PushConsumer) == (A, P, Pc, Ps)
    assert (ROOT / "py.typed").exists()


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        raftmq.NoSuchThing  # noqa: B018
