"""fdm.data registry: every dataset registered, paper configs wired, eval datasets, CLI errors."""
import importlib

import pytest

from fdm import data
from tests import data_fakes as fakes
from tests import helpers

PAPER_CONFIGS = {"flowers": "flowers102", "flowers:128": "flowers102", "cub": "cub",
                 "cub:128": "cub", "ffhq": "ffhq", "ffhq:128": "ffhq", "imagenet64": "imagenet64"}


def test_registry_names():
    assert set(data.DATASETS) == {"shapes", "folder", "cifar10", "digits", "flowers102", "cub",
                                  "ffhq", "celebamask_hq", "imagenet64", "pixel_imagenet",
                                  "voc2012", "davis2017", "toy_scene", "nerf_synthetic", "llff",
                                  "binarized_mnist", "rectangles", "linear_gaussian",
                                  "glyph_mosaic", "factors", "motion", "scene_tuples",
                                  "co3d", "realestate10k"} | {
        f"transfer_{n}" for n in ("aircraft", "caltech101", "cars", "cifar10", "cifar100",
                                  "dtd", "flowers102", "food101", "pets", "sun397")}


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_configs_use_real_loaders(name):
    module, _, variant = name.partition(":")
    get_config = importlib.import_module(f"configs.{module}").get_config
    c = get_config(variant) if variant else get_config()
    assert c.data.dataset == PAPER_CONFIGS[name] and c.data.data_dir.startswith("data/")
    for split in data.SPLITS:
        dataset, root = data.source(c.data, split)
        assert dataset in data.DATASETS and root.path
        for key in data.DATASETS[dataset].options:
            assert key in c.data, (name, key)              # every option is overridable


def test_imagenet64_evaluates_on_pixel_imagenet():
    c = importlib.import_module("configs.imagenet64").get_config()
    assert data.source(c.data, "eval")[0] == "pixel_imagenet"
    assert c.data.synsets_file and c.data.max_per_class == 20


def test_unknown_eval_dataset_names_the_key(tmp_path):
    fakes.check_missing(fakes.config("ffhq", tmp_path, eval_dataset="mnist"), "eval",
                        "data.eval_dataset 'mnist'")


def test_main_missing_flowers_dir_exits_2_with_one_line(tmp_path):
    workdir, missing = tmp_path / "wd", tmp_path / "no_flowers"
    proc = helpers.run_main("--config=configs/flowers.py", "--mode=train", f"--workdir={workdir}",
                            f"--config.data.data_dir={missing}", timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert str(missing) in lines[0] and "robots.ox.ac.uk" in lines[0]
    assert "--config.data.data_dir=" in lines[0]
    assert not workdir.exists()
