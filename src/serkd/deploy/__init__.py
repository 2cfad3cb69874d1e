"""Deployment: export a student to one ONNX graph (waveform in, probabilities out), predict, bench."""
