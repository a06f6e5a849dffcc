"""Datasets for short proxy training: Fashion-MNIST (Debian's package) or any idx folder,
downsampled-ImageNet batch files, an ImageFolder tree, a CIFAR folder, or the built-in synthetic
data; the train, validation and test splits of a run; a deterministic subset; an on-disk cache
of decoded, resized uint8 images; and the batches the trainer reads.

Sources (``--data``):

* nothing, ``builtin`` or ``synthetic-arrangement``: the built-in **synthetic** dataset
  (:func:`render_arrangement`). It ships as code, needs no download and says nothing about
  ImageNet; every record names it ``synthetic-arrangement``.
* ``builtin-hard`` or ``synthetic-arrangement-hard``: a harder built-in dataset, 16 classes
  (:func:`render_arrangement_hard`), made to rank layouts where the first is too easy.
* a folder with ``train/<class>/*`` and ``val/<class>/*`` images (the ImageNet layout).
* a CIFAR-10 / CIFAR-100 folder in the python pickle format (``cifar-10-batches-py`` or
  ``cifar-100-python``, or the folder holding it), read with torchvision (``download=False``).
* ``fashion-mnist``: the idx files of Debian's ``dataset-fashion-mnist`` package; or a folder of
  idx files (``train-images-idx3-ubyte[.gz]``, ... : MNIST, KMNIST, EMNIST); grey images become
  3 identical channels, 28 px images are padded to 32 px (2 black px per side) or resized.
* a folder of downsampled-ImageNet batches (``train_data_batch_*``, ``val_data``; npz or pickle,
  8/16/32/64 px); ``classes`` takes the first K classes, as ImageNet16-120 does.

Splits (:func:`split_plan`): validation chooses (best epoch, pruning, a search's objective);
the test split is read once at the end of a run. With a test split (the default for idx and
downsampled ImageNet, ``test_split=True`` for the others) the validation images are carved from
the training images (a fixed, seeded, stratified share per class) and the source's held-out
images are the test split; the built-in data renders a test split of its own instead. Without
one, validation is on the held-out images, as before, and there is no test number.

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
* ``formats.py``: the idx and downsampled-ImageNet file readers, with their checks;
* ``sources.py``: the sources (built-in, ImageFolder, CIFAR, idx, downsampled ImageNet),
  :func:`open_source`;
* ``files.py``: scanning image folders and decoding image files;
* ``load.py``: :func:`load_data`, the splits (:func:`split_plan`, :func:`carve`), the subset
  (:func:`choose_classes`, :func:`choose_items`) and :class:`ImageData`;
* ``batches.py``: the sampler, augmentation, loader and :func:`normalize` the trainer uses.

Every name is importable from ``funnelbench.data`` as well (the private ones too, which tests
replace here: the sources look :func:`render_arrangement` and ``_scan_class`` up in this
package when they call them).
"""

from .batches import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augment,
    BatchSet,
    ShardedBatchSampler,
    _splitmix64,
    _whole_batch,
    channel_stats,
    make_loader,
    normalize,
    sample_seeds,
)
from .builtin import (
    _DISTRACTOR_COLORS,
    _PART_RADIUS,
    _SPLIT_SEEDS,
    BUILTIN,
    BUILTIN_ALIASES,
    BUILTIN_HARD,
    BUILTIN_NOTE,
    BUILTIN_SETS,
    BUILTIN_TRAIN_PER_CLASS,
    BUILTIN_VAL_PER_CLASS,
    BUILTIN_VERSION,
    CHUNK,
    DIRECTIONS,
    HARD_CLASSES,
    BuiltinSet,
    _render_chunk,
    builtin_set,
    render_arrangement,
    render_arrangement_hard,
)
from .cache import (
    CACHE_ENV,
    CACHE_FORMAT,
    Split,
    _build,
    _build_or_load,
    _digest,
    _open_complete,
    _open_entry,
    _partial_done,
    cache_root,
)
from .files import (
    _RACY_NS,
    IMAGE_EXTENSIONS,
    _collate_decoded,
    _DecodeFiles,
    _scan_class,
    _unchanged,
    decode_file,
    resize_uint8,
)
from .formats import DOWNSAMPLED_SIZES, IDX_IMAGES, IDX_LABELS, batch_files, idx_header, read_batch, read_idx
from .load import CARVE_SEED, ImageData, SplitPlan, carve, choose_classes, choose_items, load_data, split_plan
from .sources import (
    FASHION_MNIST,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    IDX_PAD,
    _Builtin,
    _Cifar,
    _Downsampled,
    _few,
    _Idx,
    _ImageFolder,
    _Source,
    grey_to_rgb,
    open_source,
)

__all__ = [
    "BUILTIN",
    "DIRECTIONS",
    "ImageData",
    "Split",
    "Augment",
    "ShardedBatchSampler",
    "load_data",
    "make_loader",
    "normalize",
    "channel_stats",
    "render_arrangement",
    "cache_root",
    "choose_classes",
    "choose_items",
    "decode_file",
    "resize_uint8",
    "open_source",
    "sample_seeds",
]
