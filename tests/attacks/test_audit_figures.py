"""An audit's figures name the configuration and view, and label each reconstruction's PSNR
and SSIM."""

from __future__ import annotations

from attacks.runner import run_audit
from privfed.config import load_config

TINY = ["data.num_clients=3", "federation.rounds=2", "model.hidden=[8]",
        "audit.num_reference=2", "audit.inversion_examples=2", "audit.aggregate_clients=3",
        "audit.multi_step=2", "audit.num_canaries=20"]


def test_the_audits_figures_say_what_they_show(tmp_path, figures):
    config = load_config(overrides=TINY)
    report = run_audit(config, tmp_path / "audit")
    label = f"{config.name} ({config.short_hash()}):"
    (roc,) = figures["roc.png"].axes
    assert roc.get_title().startswith(label) and "outsider view" in roc.get_title()
    grid = figures["reconstructions.png"]
    assert grid._suptitle.get_text().startswith(label)
    titles = [ax.get_title() for ax in grid.axes]
    for scenario, summary in report["inversion"].items():
        assert summary["view"] == "server"
        assert f"{scenario}\n(server view)" in [ax.get_ylabel() for ax in grid.axes]
        for psnr, ssim in zip(summary["per_example"]["psnr"], summary["per_example"]["ssim"],
                              strict=True):
            assert f"{psnr:.1f} dB\nSSIM {ssim:.2f}" in titles
    examples = sum(s["examples"] for s in report["inversion"].values())
    assert titles.count("original") == examples
