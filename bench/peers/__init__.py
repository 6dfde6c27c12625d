"""The pieces of bench/compare_torch.py, in the order the comparison runs them.

libmoe_ctypes   libmoe's C API through ctypes: structs, ABI check, LibmoeLayer
problem         the preset table (moe-bench --list --json) and one preset's seeded weights
torch_layers    the torch peers: routing, per-expert loop, _grouped_mm layer, transformers block
measure         agreement with libmoe, timing, CUDA graph capture, run_one (one preset, one T)

compare_torch.py holds the command line, the table and JSON output, and main.
"""
