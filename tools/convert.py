"""Convert a detection set between COCO, YOLO and VOC XML (``mnv2-convert`` once installed); see ``mnv2_tasks.data.convert``.

    python tools/convert.py /data/coco /data/coco_yolo --to yolo --splits train val
"""

import sys

from mnv2_tasks.data.convert import main

if __name__ == "__main__":
    sys.exit(main())
