"""fdm.data.ffhq on fake official folders; the ffhq configs evaluate on CelebAMask-HQ."""
import os

import numpy as np

from configs import ffhq as ffhq_config
from fdm import data
from tests import data_fakes as fakes


def write_ffhq(root, sub="images1024x1024", n=5, side=24):
    for i, box in enumerate(fakes.boxes(n, side, side)):
        group = root / sub / f"{(i // 3) * 1000:05d}"
        os.makedirs(group, exist_ok=True)
        fakes.save(fakes.scene(side, side, box)[0], group / f"{i:05d}.png")
    return root


def test_official_layout_sorted_all_images(tmp_path):
    root = write_ffhq(tmp_path / "ffhq")
    write_ffhq(root, "thumbnails128x128", n=2)                 # images1024x1024 wins
    cfg = fakes.config("ffhq", root, image_size=8)
    train = fakes.check_deterministic(cfg, "train")
    fakes.check_arrays(train, 5, 8)
    assert "mask" not in train and "label" not in train
    np.testing.assert_array_equal(fakes.load(cfg, "eval")["image"], train["image"])
    fakes.check_train_batch(cfg)
    fakes.check_eval_sharding(fakes.config("ffhq", root, image_size=8, batch_size=2))


def test_thumbnails_then_plain_folder(tmp_path):
    assert len(fakes.load(fakes.config("ffhq", write_ffhq(tmp_path / "a", "thumbnails128x128",
                                                          n=3)), "train")["image"]) == 3
    plain = tmp_path / "b"
    os.makedirs(plain)
    fakes.save(fakes.scene(10, 10, (2, 2, 5, 5))[0], plain / "x.png")
    assert len(fakes.load(fakes.config("ffhq", plain), "train")["image"]) == 1


def test_missing_dir(tmp_path):
    fakes.check_missing(fakes.config("ffhq", tmp_path / "nope"), "train",
                        str(tmp_path / "nope"), also="NVlabs/ffhq-dataset")


def test_ffhq_configs_evaluate_on_celebamask_hq():
    c = ffhq_config.get_config()
    assert (c.data.dataset, c.data.eval_dataset) == ("ffhq", "celebamask_hq")
    assert data.source(c.data, "train")[0] == "ffhq"
    name, root = data.source(c.data, "eval")
    assert name == "celebamask_hq" and root.path == c.data.eval_data_dir
    assert root.key == "data.eval_data_dir"
