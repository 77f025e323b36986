"""A detector + ByteTrack scored on MOTChallenge sequences (default: the embedded tracking clips) with motmetrics:
IDF1, MOTA, ID switches. See ``mnv2_tasks.track_eval``.

    python tools/track_eval.py outputs/detection/<run>/checkpoints/last.ckpt
"""

import sys

from mnv2_tasks.track_eval import main

if __name__ == "__main__":
    sys.exit(main())
