"""experiments/tables.py on fake results.json files."""
import json

import pytest

from experiments import tables


def write_run(root, name, results, family=None):
    """root/name/results.json (+ config.json with model.family)."""
    d = root / name
    d.mkdir()
    (d / "results.json").write_text(json.dumps(results))
    if family:
        (d / "config.json").write_text(json.dumps({"model": {"family": family}}))
    return str(d)


def row(text, label):
    """The cells of the markdown row that starts with `label` in the first table holding it."""
    line = next(l for l in text.splitlines() if l.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.fixture
def text(tmp_path):
    write_run(tmp_path, "fdm_flowers_old", {"config": "flowers", "step": 10, "seg_acc": 1.0,
                                            "seg_iou": 1.0, "seg_dice": 1.0}, "fdm")
    write_run(tmp_path, "fdm_flowers", {"config": "flowers", "step": 50, "seg_acc": 91.23,
                                        "seg_iou": 80.04, "seg_dice": 88.0, "fid": 12.345},
              "fdm")
    write_run(tmp_path, "grabcut_flowers", {"config": "flowers", "baseline": "grabcut", "step": 0,
                                            "seg_acc": 81.0, "seg_iou": 68.0, "seg_dice": 78.0})
    write_run(tmp_path, "ddpm_flowers", {"config": "ddpm_flowers", "step": 5, "fid": 16.5},
              "ddpm")
    write_run(tmp_path, "kmeans_flowers", {"config": "flowers", "baseline": "kmeans", "step": 5,
                                           "gen_seg_acc": 77.77})
    write_run(tmp_path, "celeba", {"config": "celebamask", "step": 5, "seg_acc_matched": 85.0,
                                   "seg_miou": 75.5}, "fdm")
    write_run(tmp_path, "lego", {"config": "lego", "step": 5, "psnr": 20.5, "ssim": 0.8,
                                 "pose_rot_err_deg": 3.25}, "lifting")
    write_run(tmp_path, "horse_fdm", {"config": "weizmann_horse", "step": 6000, "seg_acc": 80.0,
                                      "seg_iou": 50.0, "seg_dice": 66.0,
                                      "baseline_all_fg_iou": 30.0}, "fdm")
    write_run(tmp_path, "horse_sup", {"config": "weizmann_horse", "baseline": "supervised",
                                      "step": 600, "seg_acc": 90.0, "seg_iou": 70.0,
                                      "seg_dice": 82.0, "all_seg_acc": 92.0, "all_seg_iou": 75.0,
                                      "all_seg_dice": 85.0, "baseline_all_fg_iou": 31.0})
    out = tmp_path / "tables.md"
    assert tables.main([str(tmp_path / "*"), "--out", str(out)]) == 0
    return out.read_text()


def test_fg_bg_tables_put_runs_next_to_the_paper(text):
    assert row(text, "Ours (FDM)")[:7] == ["Ours (FDM)", "90.1", "91.2", "79.7", "80.0", "87.2",
                                           "88.0"]                      # newest step wins
    assert row(text, "GrabCut")[:3] == ["GrabCut", "82.0", "81.0"]
    assert row(text, "ReDO") == ["ReDO", "87.9", "—", "76.4", "—", "—", "—"]
    cub = text.split("Table 2.2")[1].split("###")[0]
    assert row(cub, "Ours (FDM)") == ["Ours (FDM)", "89.6", "—", "56.1", "—", "69.4", "—"]


def test_multiclass_generation_and_nerf_tables(text):
    celeba = text.split("Table 2.3")[1].split("###")[0]
    assert row(celeba, "Ours (FDM)") == ["Ours (FDM)", "87.9", "85.0", "80.3", "75.5"]
    assert row(celeba, "Supervised UNet")[2] == "—"
    assert row(text, "FID DDPM")[1:3] == ["15.81 / 16.50", "14.62 / —"]    # ddpm_ prefix dropped
    assert row(text, "FID Ours (FDM)")[1] == "13.33 / 12.35"
    assert row(text, "Acc. DDPM")[1] == "80.5 / 77.8"        # DDPM samples + k-means masks
    lego = row(text, "Lego")
    assert lego[1:5] == ["25.44", "×", "21.38", "20.50"] and lego[-3:] == ["3.25", "—", "—"]


def test_datasets_without_paper_table_get_their_own(text):
    horse = text.split("Dataset `weizmann_horse`")[1]
    assert row(horse, "fdm") == ["fdm", "—", "—", "—", "80.0", "50.0", "66.0"]
    assert row(horse, "supervised") == ["supervised", "90.0", "70.0", "82.0", "92.0", "75.0",
                                        "85.0"]
    assert row(horse, "trivial: all_fg")[2] == "31.0"    # test split, from the baseline run


def test_missing_run_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no results.json"):
        tables.main([str(tmp_path / "nothing")])


def test_voc_table_per_class_next_to_the_paper(tmp_path):
    results = {"config": "imagenet64_voc", "step": 5, "seg_acc_voc8": 81.25,
               "seg_miou_voc8": 60.5, "seg_acc_voc_mean": 70.0, "seg_miou_voc_mean": 50.0}
    run = write_run(tmp_path, "voc", results, "fdm")
    text = tables.all_tables(tables.load_runs(tables.results_files([run])))
    assert row(text, "8:cat") == ["8:cat", "281:tabby", "206", "82", "81.2", "66", "60.5"]
    assert row(text, "1:aeroplane")[4] == tables.MISSING
    assert row(text, "Average")[3:] == ["78", "70.0", "54", "50.0"]
