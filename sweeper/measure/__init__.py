"""Size and latency, and the hardware they were measured on.

- `size`: the saved state_dict's bytes
- `latency`: the paired, interleaved timing protocol and its bootstrap interval
- `runtime`: ONNX Runtime sessions and the ONNX graph's bytes
- `hardware`: CPU model and ISA flags, the trial's fingerprint
"""
