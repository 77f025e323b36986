"""Draw training samples after augmentation with their labels into a PNG grid (``mnv2-browse`` once installed).

    python tools/browse.py task=detection                                   # the embedded set
    python tools/browse.py task=detection data=yolo data.root=/data/my_set num_images=32
    python tools/browse.py task=segmentation split=val

See ``mnv2_tasks.browse``.
"""

from mnv2_tasks.cli import browse_main

if __name__ == "__main__":
    browse_main()
