"""The loader of the paper datasets that come with their own split lists (CUB-200-2011,
Oxford Flowers-102, CelebAMask-HQ): one skeleton, each dataset fills in its parts.

`SplitDataset.load(root, image_size, split, eval_split)`, the registry's loader:
  1. the dataset's own split: "train", or `data.eval_split` (one of `eval_splits`,
     else a one-line UserError) for the registry's "eval";
  2. its items (ids or file names, in the dataset's order): `split_items(root, name)`;
  3. the folders the examples are read from must exist under root (`DataDir.require`:
     a one-line UserError naming the folder, where to get it, the config key);
  4. `example(root, item, image_size)` for every item (a thread pool), stacked:
     'image' uint8 [N, S, S, 3], 'mask' int32 [N, S, S].
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from fdm.data import folder


@dataclasses.dataclass(frozen=True)
class SplitDataset:
    """source: where to get the dataset (for the error messages); folders: (folder under
    root, what it holds and which archive has it) pairs; split_items(root, name) -> items
    of split `name`; example(root, item, image_size) -> {'image', 'mask'} of one item."""
    source: str
    folders: tuple[tuple[str, str], ...]
    split_items: Callable[[folder.DataDir, str], Sequence[Any]]
    example: Callable[[folder.DataDir, Any, int], dict[str, np.ndarray]]
    eval_splits: tuple[str, ...] = ("test", "val")

    def load(self, root: folder.DataDir, image_size: int, split: str,
             eval_split: str = "test") -> dict[str, np.ndarray]:
        """The "train" or "eval" split (module doc): image uint8 [N,S,S,3], mask int32 [N,S,S]."""
        items = self.split_items(root, folder.split_name(split, eval_split, self.eval_splits))
        for path, what in self.folders:
            root.require(path, what=what, source=self.source)
        return folder.load_examples(lambda item: self.example(root, item, image_size), items)
