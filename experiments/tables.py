"""Gathers results.json files into seed 000's tables (markdown), next to the paper's numbers.

  python -m experiments.tables WORKDIR_OR_RESULTS_JSON_OR_GLOB ... [--out=tables.md]

A run is a `results.json` (written by `--mode=evaluate` or experiments/baselines.py),
named by a workdir, the file itself or a glob. It fills the cells of its
  dataset = the config name ("config") without a leading "ddpm_" (DDPM baselines of
            Table 2.5 are configs named ddpm_<FDM config name>, e.g. ddpm_flowers);
  method  = "baseline" (grabcut | supervised | kmeans) for experiments/baselines.py,
            else model.family of the workdir's config.json ("fdm" when absent).
Of several runs with the same (dataset, method) the one with the highest "step" wins.
Every table has a column "paper" (typed in from seed 000, the table named in the
title) and "here" per metric; "—" marks a missing run or a number the paper lacks.

Dataset names: Tables 2.1/2.2 `flowers`, `cub` (64x64; the 128x128 configs fill
Table 2.5 only); Table 2.3 `celebamask` (an FFHQ-trained FDM evaluated on CelebAMask-HQ
under that config name); Table 2.4 `imagenet64`; Table 2.7 `imagenet64_voc` (the
ImageNet FDM evaluated with --config.name=imagenet64_voc
--config.data.eval_dataset=voc2012, keys seg_{acc,miou}_voc{c}); Table 3.1 the NeRF configs
`llff_<scene>`, `shapenet_car`, `lego`, `drums`. Keys read: seg_acc, seg_iou,
seg_dice (fg/bg); seg_acc_matched, seg_miou (multi-class); fid; gen_seg_acc
(generated masks vs the supervised segmenter; the DDPM row of Table 2.5 from the
k-means baseline run with eval.segmenter_workdir: DDPM samples masked by k-means); psnr, ssim, lpips,
pose_rot_err_deg, pose_trans_err, cam_cls_acc.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Optional, Sequence

MISSING = "—"
FAILED = "×"  # the paper's mark for NeRF-- failing on 360° scenes
Runs = dict  # (dataset, method) -> results dict

# --- paper numbers (seed 000) ----------------------------------------------------------------
# Tables 2.1 / 2.2: method -> (Acc., IoU, DICE); None = not reported.
FG_BG_PAPER = {
    "flowers": ("Table 2.1: Comparisons on Flower", [
        ("GrabCut", "grabcut", (82.0, 69.2, 79.1)),
        ("ReDO", None, (87.9, 76.4, None)),
        ("IEM", None, (88.3, 76.8, 84.6)),
        ("IEM+SegNet", None, (89.6, 78.9, 86.0)),
        ("Ours (FDM)", "fdm", (90.1, 79.7, 87.2))]),
    "cub": ("Table 2.2: Comparisons on CUB", [
        ("GrabCut", "grabcut", (72.3, 36.0, 48.7)),
        ("PerturbGAN", None, (None, 38.0, None)),
        ("ReDO", None, (84.5, 42.6, None)),
        ("IEM", None, (88.6, 52.2, 66.0)),
        ("IEM+SegNet", None, (89.3, 55.1, 68.7)),
        ("Ours (FDM)", "fdm", (89.6, 56.1, 69.4))]),
}
FG_BG_METRICS = (("Acc.", "seg_acc"), ("IoU", "seg_iou"), ("DICE", "seg_dice"))
# Tables 2.3 / 2.4: method -> (Acc., mIoU).
MULTICLASS_PAPER = {
    "celebamask": ("Table 2.3: Segmentation comparisons on CelebA", [
        ("Supervised UNet", "supervised", (95.7, 90.2)),
        ("DatasetDDPM-unsup.", "kmeans", (78.5, 69.3)),
        ("Ours (FDM)", "fdm", (87.9, 80.3))]),
    "imagenet64": ("Table 2.4: Segmentation comparisons on ImageNet", [
        ("Supervised UNet", "supervised", (85.7, 74.1)),
        ("DatasetDDPM-unsup.", "kmeans", (74.1, 60.4)),
        ("Ours (FDM)", "fdm", (80.7, 67.7))]),
}
MULTICLASS_METRICS = (("Acc.", "seg_acc_matched"), ("mIoU", "seg_miou"))
# Table 2.5: columns (label, dataset) and rows (label, method, metric key, paper values).
GENERATION_COLUMNS = (("Flower-64", "flowers"), ("Flower-128", "flowers128"), ("CUB-64", "cub"),
                      ("CUB-128", "cub128"), ("FFHQ-64", "ffhq"), ("FFHQ-128", "ffhq128"),
                      ("ImageNet-64", "imagenet64"))
GENERATION_ROWS = (
    ("FID DDPM", "ddpm", "fid", (15.81, 14.62, 14.45, 14.01, 13.72, 13.35, 7.02)),
    ("FID Ours (FDM)", "fdm", "fid", (13.33, 11.50, 10.91, 10.28, 12.02, 10.79, 6.54)),
    ("Acc. DDPM", "kmeans", "gen_seg_acc", (80.5, 82.9, 84.2, 83.7, 84.2, 84.2, 71.2)),
    ("Acc. Ours (FDM)", "fdm", "gen_seg_acc", (92.3, 92.7, 91.4, 91.2, 90.3, 90.7, 84.1)))
# Table 3.1: scene -> (dataset, PSNR, SSIM, LPIPS), each (Supervised, NeRF--, Ours).
# Table 2.7: VOC class -> (ImageNet class, VOC-val images, Acc., mIoU) of the paper
# (fractions there, percent here); zero-shot from the ImageNet FDM.
VOC_PAPER = (
    ("aeroplane", "895:warplane", 136, 82, 57), ("bicycle", "671:mountain-bike", 108, 79, 47),
    ("bird", "94:hummingbird", 168, 83, 58), ("boat", "814:speedboat", 115, 81, 51),
    ("bottle", "907:wine-bottle", 133, 76, 47), ("bus", "779:school-bus", 114, 73, 54),
    ("car", "817:sports-car", 191, 74, 48), ("cat", "281:tabby", 206, 82, 66),
    ("chair", "765:rocking-chair", 175, 75, 64), ("cow", "346:water-buffalo", 102, 82, 45),
    ("diningtable", "532:dining-table", 89, 69, 62), ("dog", "153:maltese-dog", 204, 82, 67),
    ("horse", "603:horsecart", 104, 84, 53), ("motorbike", "670:motorscooter", 117, 76, 52),
    ("person", "981:ballplayer", 584, 77, 46), ("potted plant", "883:vase", 116, 74, 46),
    ("sheep", "348:ram", 89, 84, 64), ("sofa", "831:studio-couch", 109, 73, 51),
    ("train", "466:bullet-train", 126, 76, 56), ("tv/monitor", "664:monitor", 106, 73, 47))
VOC_PAPER_MEAN = (78, 54)
VOC_DATASET = "imagenet64_voc"

NERF_PAPER = (
    ("Fern", "llff_fern", (22.22, 21.67, 17.02), (0.64, 0.61, 0.42), (0.47, 0.50, 0.55)),
    ("Flower", "llff_flower", (25.25, 25.34, 22.42), (0.71, 0.71, 0.58), (0.36, 0.37, 0.43)),
    ("Fortress", "llff_fortress", (27.60, 26.20, 22.02), (0.73, 0.63, 0.50), (0.38, 0.49, 0.51)),
    ("Horns", "llff_horns", (24.25, 22.53, 17.48), (0.68, 0.61, 0.43), (0.44, 0.50, 0.55)),
    ("Leaves", "llff_leaves", (18.81, 18.88, 14.44), (0.52, 0.53, 0.42), (0.47, 0.47, 0.60)),
    ("Orchids", "llff_orchids", (19.09, 16.73, 14.34), (0.51, 0.39, 0.40), (0.46, 0.55, 0.58)),
    ("Room", "llff_room", (27.77, 25.84, 22.36), (0.87, 0.84, 0.48), (0.40, 0.44, 0.49)),
    ("Trex", "llff_trex", (23.19, 22.67, 19.96), (0.74, 0.72, 0.62), (0.41, 0.44, 0.51)),
    ("Car", "shapenet_car", (28.98, FAILED, 26.43), (0.95, FAILED, 0.92), (0.08, FAILED, 0.08)),
    ("Lego", "lego", (25.44, FAILED, 21.38), (0.92, FAILED, 0.86), (0.09, FAILED, 0.12)),
    ("Drums", "drums", (22.12, FAILED, 18.65), (0.89, FAILED, 0.82), (0.08, FAILED, 0.16)))
CAMERA_METRICS = (("rot. err. (deg)", "pose_rot_err_deg"), ("trans. err.", "pose_trans_err"),
                  ("camera acc.", "cam_cls_acc"))


# --- reading runs ---------------------------------------------------------------------------

def results_files(patterns: Sequence[str]) -> list[str]:
    """results.json paths named by workdirs, files or globs (sorted, unique)."""
    paths = set()
    for pattern in patterns:
        for match in glob.glob(pattern) or [pattern]:
            path = os.path.join(match, "results.json") if os.path.isdir(match) else match
            if not os.path.isfile(path):
                raise SystemExit(f"error: no results.json at {path}; pass workdirs that were "
                                 "evaluated (--mode=evaluate) or results.json files")
            paths.add(path)
    return sorted(paths)


def run_key(path: str, results: dict) -> tuple[str, str]:
    """(dataset, method) of one results.json (module doc)."""
    dataset = str(results.get("config", "")).removeprefix("ddpm_")
    method = results.get("baseline")
    if method is None:
        config_path = os.path.join(os.path.dirname(path), "config.json")
        family = "fdm"
        if os.path.isfile(config_path):
            with open(config_path) as f:
                family = json.load(f).get("model", {}).get("family", "fdm")
        method = family
    return dataset, method


def load_runs(paths: Sequence[str]) -> Runs:
    """{(dataset, method): results} keeping the highest step of duplicates."""
    runs: Runs = {}
    for path in paths:
        with open(path) as f:
            results = json.load(f)
        key = run_key(path, results)
        if key not in runs or results.get("step", 0) >= runs[key].get("step", 0):
            runs[key] = results
    return runs


# --- formatting -----------------------------------------------------------------------------

def fmt(value, digits: int = 1) -> str:
    """A number with `digits` decimals, "—" for None; text (the paper's "×") as is."""
    if value is None or isinstance(value, str):
        return value or MISSING
    return f"{value:.{digits}f}"


def here(runs: Runs, dataset: str, method: Optional[str], key: str,
         digits: int = 1) -> str:
    """The run's metric formatted, "—" when the run or the key is missing."""
    if method is None:
        return MISSING
    return fmt(runs.get((dataset, method), {}).get(key), digits)


def markdown(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A titled markdown table."""
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def paper_vs_here(metrics) -> list[str]:
    """Header cells: per metric a paper column and a here column."""
    return [f"{label} {side}" for label, _ in metrics for side in ("paper", "here")]


# --- the tables -----------------------------------------------------------------------------

def method_table(runs: Runs, dataset: str, title: str, rows, metrics) -> str:
    """Tables 2.1-2.4: one row per method, paper and here columns per metric."""
    body = []
    for label, method, paper in rows:
        cells = [c for (_, key), p in zip(metrics, paper)
                 for c in (fmt(p), here(runs, dataset, method, key))]
        body.append([label] + cells)
    return markdown(f"{title} (dataset `{dataset}`)", ["Method"] + paper_vs_here(metrics), body)


def generation_table(runs: Runs) -> str:
    """Table 2.5: rows FID / Acc. of DDPM and FDM, columns datasets, cells 'paper / here'."""
    body = []
    for label, method, key, paper in GENERATION_ROWS:
        digits = 2 if key == "fid" else 1
        body.append([label] + [f"{fmt(p, digits)} / {here(runs, d, method, key, digits)}"
                               for (_, d), p in zip(GENERATION_COLUMNS, paper)])
    title = "Table 2.5: Image and mask generation (FID lower, Acc. higher); paper / here"
    return markdown(title, ["Row"] + [c for c, _ in GENERATION_COLUMNS], body)


def nerf_table(runs: Runs) -> str:
    """Table 3.1: per scene PSNR / SSIM / LPIPS (paper Supervised, NeRF--, Ours; here)
    and the camera metrics measured here (the paper has no numbers for them)."""
    header = ["Scene"]
    for name in ("PSNR", "SSIM", "LPIPS"):
        header += [f"{name} sup. (paper)", f"{name} NeRF-- (paper)", f"{name} ours (paper)",
                   f"{name} here"]
    header += [label + " here" for label, _ in CAMERA_METRICS]
    body = []
    for scene, dataset, *paper in NERF_PAPER:
        row = [scene]
        for key, values in zip(("psnr", "ssim", "lpips"), paper):
            row += [fmt(v, 2) for v in values]
            row.append(here(runs, dataset, _any_method(runs, dataset), key, 2))
        row += [here(runs, dataset, _any_method(runs, dataset), key, 2)
                for _, key in CAMERA_METRICS]
        body.append(row)
    return markdown("Table 3.1: Multiview reconstruction quality and cameras", header, body)


def voc_table(runs: Runs) -> str:
    """Table 2.7: per VOC class Acc. and mIoU (fg/bg) of the zero-shot ImageNet FDM,
    read from seg_{acc,miou}_voc{c} of the run named `imagenet64_voc`."""
    method = _any_method(runs, VOC_DATASET)
    body = []
    for c, (name, imagenet, count, acc, miou) in enumerate(VOC_PAPER, start=1):
        body.append([f"{c}:{name}", imagenet, str(count), fmt(acc, 0),
                     here(runs, VOC_DATASET, method, f"seg_acc_voc{c}"), fmt(miou, 0),
                     here(runs, VOC_DATASET, method, f"seg_miou_voc{c}")])
    body.append(["Average", MISSING, MISSING, fmt(VOC_PAPER_MEAN[0], 0),
                 here(runs, VOC_DATASET, method, "seg_acc_voc_mean"), fmt(VOC_PAPER_MEAN[1], 0),
                 here(runs, VOC_DATASET, method, "seg_miou_voc_mean")])
    header = ["VOC class", "ImageNet class", "VOC-val images", "Acc. paper", "Acc. here",
              "mIoU paper", "mIoU here"]
    return markdown(f"Table 2.7: Zero-shot VOC segmentation per class (dataset "
                    f"`{VOC_DATASET}`, percent)", header, body)


def _any_method(runs: Runs, dataset: str) -> Optional[str]:
    """The method of the (first) run of `dataset`: NeRF tables match by dataset only."""
    return next((m for d, m in sorted(runs) if d == dataset), None)


def other_segmentation_table(runs: Runs, dataset: str) -> str:
    """fg/bg scores of every run of a dataset the paper has no table for (e.g. the
    Weizmann horse development set): baselines on their test split (seg_*) and on the
    whole eval split (all_seg_*), `--mode=evaluate` (which scores the whole eval split)
    in the latter columns; the trivial baselines as computed with the runs."""
    header = ["Method"] + [f"{label} {part}" for part in ("test", "eval split")
                           for label, _ in FG_BG_METRICS]
    body, trivial = [], {}
    for (d, method), results in sorted(runs.items()):
        if d != dataset:
            continue
        is_baseline = "baseline" in results
        test = [fmt(results.get(k)) if is_baseline else MISSING for _, k in FG_BG_METRICS]
        whole = [fmt(results.get("all_" + k, None if is_baseline else results.get(k)))
                 for _, k in FG_BG_METRICS]
        body.append([method] + test + whole)
        for name in ("all_fg", "centre"):
            for prefix, part in (("", "test" if is_baseline else "eval"), ("all_", "eval")):
                for metric in ("acc", "iou", "dice"):
                    key = f"{prefix}baseline_{name}_{metric}"
                    if key in results:
                        trivial.setdefault(name, {})[(part, metric)] = results[key]
    for name, values in sorted(trivial.items()):
        body.append([f"trivial: {name}"] + [fmt(values.get((part, m))) for part in ("test", "eval")
                                            for m in ("acc", "iou", "dice")])
    return markdown(f"Dataset `{dataset}` (no paper table): fg/bg segmentation", header, body)


def all_tables(runs: Runs) -> str:
    """Every table, in the paper's order, then datasets without a paper table."""
    parts = [method_table(runs, d, title, rows, FG_BG_METRICS)
             for d, (title, rows) in FG_BG_PAPER.items()]
    parts += [method_table(runs, d, title, rows, MULTICLASS_METRICS)
              for d, (title, rows) in MULTICLASS_PAPER.items()]
    parts += [generation_table(runs), voc_table(runs), nerf_table(runs)]
    known = (set(FG_BG_PAPER) | set(MULTICLASS_PAPER) | {d for _, d in GENERATION_COLUMNS}
             | {d for _, d, *_ in NERF_PAPER} | {VOC_DATASET})
    others = sorted({d for (d, _), r in runs.items() if d not in known and "seg_iou" in r})
    parts += [other_segmentation_table(runs, d) for d in others]
    return "\n".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="workdirs, results.json files or globs")
    parser.add_argument("--out", help="also write the markdown to this file")
    args = parser.parse_args(argv)
    text = all_tables(load_runs(results_files(args.runs)))
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
