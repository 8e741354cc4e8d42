"""The main job (`make demo`) runs end to end on the real retina data."""

from __future__ import annotations

import json

import scdataloader.datasets as datasets


def test_demo_runs_the_whole_chain(
    retina_path, omnipath_path, tfs_human_path, tmp_path, monkeypatch, capsys
):
    from bengrn import GeneNetwork
    from scprint.cli import main

    files = {"retina": retina_path, "omnipath": omnipath_path, "tfs_human": tfs_human_path}
    monkeypatch.setattr(datasets, "fetch", lambda name, **_: files[name])
    monkeypatch.setattr(datasets, "cache_dir", lambda: tmp_path / "cache")
    out = tmp_path / "out"
    fast = ["--epochs", "1", "--genie3-trees", "10", "--no-progress"]
    main(["demo", "--out", str(out), *fast])
    report = json.loads((out / "report.json").read_text())
    assert report["cells"] == 1000 and report["network_genes"] == 500
    assert 0 <= report["classification_accuracy_on_training_cells"] <= 1
    assert 1.9 < report["denoised_over_raw_on_predicted_genes"] < 2.1  # asked for 2x depth
    net = GeneNetwork.read(out / "rod_network.h5ad")
    assert net.params["cell_type"] == "CL:0000604"
    assert (tmp_path / "cache" / "demo").is_dir()  # the checkpoint is cached for next time
    den = report["denoising"]
    assert den["cells"] > 900 and den["kept_fraction_of_counts"] == 0.3
    assert -1 <= den["spearman_noisy"] <= 1 and -1 <= den["spearman_denoised"] <= 1
    gn = report["network_benchmark"]
    for name in ("scPRINT", "GENIE3-TF"):  # the same genes, the same truth
        assert gn[name]["epr"] >= 0 and 0 <= gn[name]["auprc"] <= 1
    assert gn["scPRINT"]["n_genes"] == gn["GENIE3-TF"]["n_genes"] > 0
    text = (out / "report.md").read_text()
    for png in ("umap", "confusion", "denoising", "pr_curves", "top_hub_subgraph"):
        assert (out / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({png}.png)" in text
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))  # no half-written files
    text = capsys.readouterr().out
    assert "pretrained 40 steps" in text and "strongest edges" in text
    assert "OmniPath EPR" in text and "done in" in text
    # a second run reuses the cached checkpoint

    def retrain(*args):
        raise AssertionError("the cached checkpoint was not reused")

    monkeypatch.setattr("scprint.demo._pretrain", retrain)
    main(["demo", "--out", str(out), *fast])
    assert "reusing" in capsys.readouterr().out


def test_demo_refuses_a_folder_of_other_files(tmp_path, capsys):
    import pytest

    from scprint.cli import main
    from scprint.demo import output_problem

    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--out", str(other)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err and "Traceback" not in err
    assert [p.name for p in other.iterdir()] == ["mine.txt"]
    assert (other / "mine.txt").read_text() == "keep me"
    # a file is refused; a missing or empty folder, or an earlier report, is fine
    (tmp_path / "f").write_text("x")
    assert "is a file" in output_problem(tmp_path / "f")
    assert output_problem(tmp_path / "new") is None
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "report.json").write_text("{}")
    (earlier / "umap.png").write_bytes(b"")
    assert output_problem(earlier) is None
