"""Speed and size against references measured in the same run (``mnv2_tasks.benchmarks``); ``--help`` lists every option."""

from mnv2_tasks.benchmarks.cli import main

if __name__ == "__main__":
    main()
