"""edgec benchmarks: `make bench` runs bench.run; results as JSON under bench/results/."""
