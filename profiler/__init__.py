"""Profiling SALE from outside its kernels: CUDA-event timings, GPU context, benchmarks and traces."""
