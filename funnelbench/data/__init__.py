"""Datasets for short proxy training: an ImageFolder tree, a CIFAR folder, or the built-in
synthetic data; a deterministic subset; an on-disk cache of decoded, resized uint8 images; and
the batches the trainer reads.

Sources (``--data``):

* nothing, ``builtin`` or ``synthetic-arrangement``: the built-in **synthetic** dataset
  (:func:`render_arrangement`). It ships as code, needs no download and says nothing about
  ImageNet; every record names it ``synthetic-arrangement``.
* ``builtin-hard`` or ``synthetic-arrangement-hard``: a harder built-in dataset, 16 classes
  (:func:`render_arrangement_hard`), made to rank layouts where the first is too easy.
* a folder with ``train/<class>/*`` and ``val/<class>/*`` images (the ImageNet layout).
* a CIFAR-10 / CIFAR-100 folder in the python pickle format (``cifar-10-batches-py`` or
  ``cifar-100-python``, or the folder holding it), read with torchvision (``download=False``).

``classes`` / ``train_per_class`` / ``val_per_class`` cut a subset (ImageNet-100 style) chosen
with ``subset_seed``, the same every time. Images are decoded once, resized (shorter side to
the image size, then a centre crop) and stored as ``(N, 3, S, S)`` uint8 arrays under the cache
folder (``--cache-dir``, else ``$FUNNELBENCH_CACHE``, else ``~/.cache/funnelbench``), one entry
per dataset, split, subset and size; the next run maps them from disk without decoding. An
interrupted build resumes where it stopped; processes that need the same entry at once build it
once (a lock per entry) and never see it half-written (it is renamed into place when complete).

The package, one file a concern (each imports only the ones above it):

* ``builtin.py``: the built-in generator (:func:`render_arrangement`) and its name, note,
  version and sizes;
* ``cache.py``: the cache folder, entry keys and the safe build of an entry (:class:`Split`);
* ``sources.py``: the sources (built-in, ImageFolder, CIFAR), :func:`open_source`, decoding;
* ``load.py``: :func:`load_data`, the subset (:func:`choose_classes`, :func:`choose_items`) and
  :class:`ImageData`;
* ``batches.py``: the sampler, augmentation, loader and :func:`normalize` the trainer uses.

Every name is importable from ``funnelbench.data`` as well (the private ones too, which tests
replace here: the sources look :func:`render_arrangement` and ``_scan_class`` up in this
package when they call them).
"""

from .builtin import (BUILTIN, BUILTIN_ALIASES, BUILTIN_HARD, BUILTIN_NOTE, BUILTIN_SETS, BUILTIN_TRAIN_PER_CLASS,
                      BUILTIN_VAL_PER_CLASS, BUILTIN_VERSION, CHUNK, DIRECTIONS, HARD_CLASSES, _DISTRACTOR_COLORS,
                      _PART_RADIUS, _SPLIT_SEEDS, BuiltinSet, _render_chunk, builtin_set, render_arrangement,
                      render_arrangement_hard)
from .cache import (CACHE_ENV, CACHE_FORMAT, Split, _build, _build_or_load, _digest, _open_complete, _open_entry,
                    _partial_done, cache_root)
from .sources import (IMAGE_EXTENSIONS, _RACY_NS, _Builtin, _Cifar, _collate_decoded, _DecodeFiles, _few,
                      _ImageFolder, _scan_class, _Source, _unchanged, decode_file, open_source, resize_uint8)
from .load import ImageData, choose_classes, choose_items, load_data
from .batches import (IMAGENET_MEAN, IMAGENET_STD, Augment, BatchSet, ShardedBatchSampler, _splitmix64, _whole_batch,
                      make_loader, normalize, sample_seeds)

__all__ = ["BUILTIN", "DIRECTIONS", "ImageData", "Split", "Augment", "ShardedBatchSampler", "load_data", "make_loader",
           "normalize", "render_arrangement", "cache_root", "choose_classes", "choose_items", "decode_file",
           "resize_uint8", "open_source", "sample_seeds"]
