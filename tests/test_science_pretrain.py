"""benchmarks/science/pretrain.py: a phase started with --init-from keeps its lineage."""

import hashlib
import json

from _science import load_science

pretrain = load_science("_science_pretrain", "pretrain.py")


def test_lineage_without_init_counts_this_run_only():
    assert pretrain._lineage(None, 120) == {"init": None, "total_steps": 120}


def test_lineage_nests_the_parents_provenance_and_adds_steps(tmp_path):
    grand = {"command": "pretrain.py", "steps": 2400}
    parent_dir = tmp_path / "phase1"
    parent_dir.mkdir()
    ckpt = parent_dir / "model.ckpt"
    ckpt.write_bytes(b"weights")
    parent = {"command": "pretrain.py --init-from x", "steps": 576, "total_steps": 2976,
              "init": {"provenance": grand}}  # fmt: skip
    (parent_dir / "provenance.json").write_text(json.dumps(parent))

    out = pretrain._lineage(str(ckpt), 1000)
    assert out["total_steps"] == 3976
    assert out["init"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert out["init"]["provenance"]["init"]["provenance"] == grand

    # a parent written before total_steps existed: its own steps count
    (parent_dir / "provenance.json").write_text(json.dumps(grand))
    assert pretrain._lineage(str(ckpt), 10)["total_steps"] == 2410


def test_lineage_of_a_checkpoint_without_provenance_leaves_the_total_unknown(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"w")
    out = pretrain._lineage(str(ckpt), 10)
    assert out["init"]["provenance"] is None and out["total_steps"] is None


def test_lineage_follows_older_parents_named_only_by_path(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    (first / "model.ckpt").write_bytes(b"a")
    (second / "model.ckpt").write_bytes(b"b")
    (first / "provenance.json").write_text(json.dumps({"steps": 2400, "hyperparameters": {}}))
    older = {"steps": 576, "hyperparameters": {"init_from": str(first / "model.ckpt")}}
    (second / "provenance.json").write_text(json.dumps(older))
    assert pretrain._lineage(str(second / "model.ckpt"), 100)["total_steps"] == 3076

    (first / "provenance.json").unlink()  # a phase without provenance: unknown total
    assert pretrain._lineage(str(second / "model.ckpt"), 100)["total_steps"] is None
