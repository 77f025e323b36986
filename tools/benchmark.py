"""Speed and size against references measured in the same run (``mnv2-benchmark`` once installed); ``--help`` lists every option."""

from mnv2_tasks.cli import benchmark_main

if __name__ == "__main__":
    benchmark_main()
