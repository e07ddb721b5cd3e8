"""FDM on ImageNet 64x64, class-conditional (seed 000 §2.4): K=3, C=128, channels [1, 2, 3, 4], 3 blocks.

  python -m experiments.main --config=configs/imagenet64.py --workdir=DIR \
      --config.data.data_dir=PATH

Data: downsampled ImageNet 64x64 npz batches under PATH with labels in the standard
class order via data.synsets_file (a map_clsloc.txt; `fdm.data.imagenet64`).
Evaluation: Pixel-ImageNet masks, <= 20 images per class (data.eval_dataset=
"pixel_imagenet", `fdm.data.pixel_imagenet`). Zero-shot VOC 2012 (Table 2.7):
--mode=evaluate --config.name=imagenet64_voc --config.data.eval_dataset=voc2012
--config.data.eval_data_dir=VOCdevkit/VOC2012 (`fdm.data.voc`; per-class
seg_{acc,iou,miou}_voc{c}, read by experiments/tables.py); DAVIS-2017: --config.data.eval_dataset=davis2017
--config.data.eval_data_dir=DAVIS --config.data.davis_label=K (`fdm.data.davis`).
"""
from configs.fdm_common import fdm_config


def get_config():
    c = fdm_config(
        "imagenet64", dataset="imagenet64", data_dir="data/imagenet64", image_size=64,
        ch_mult=(1, 2, 3, 4), num_res_blocks=3, num_steps=500_000, batch_size=512,
        num_classes=1000, dropout=0.0, eval_dataset="pixel_imagenet",
        eval_data_dir="data/pixel_imagenet")
    c.data.synsets_file = "data/imagenet64/map_clsloc.txt"   # standard label order
    c.data.max_per_class = 20          # Pixel-ImageNet images per class
    c.data.sequences = ""              # DAVIS sequences, comma-separated ("" = all)
    c.data.davis_label = -1            # ImageNet class for DAVIS frames (-1: none)
    return c
