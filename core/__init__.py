"""The leaf every edgepack package builds on: the stage contract and registry, config
checks, error classes, atomic files and safe ONNX loading. It imports nothing else of the
project, so compress, export and bench can each be used on their own above it."""
