"""Run a model file on images, folders, globs, videos, cameras or streams; write the predictions drawn (``mnv2-predict``; ``--help``)."""

import sys

from mnv2_tasks.predict_cli import main

if __name__ == "__main__":
    sys.exit(main())
