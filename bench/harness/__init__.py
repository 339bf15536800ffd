"""What the CPU benchmarks share: the local stack they run on, the leak check, profiling marks and result writing."""
