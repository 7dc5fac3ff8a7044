"""mnova_tvm: MemoriaNova (memory-optimal operator order + memory-constrained partitioning) on Apache TVM."""

__version__ = "0.1.0"
