"""The names of engine.image_runtime's image-tower runtimes, without importing it (and torch: seconds),
for the command line's choices: ``visionclip --help`` should not wait for the network's libraries."""
RUNTIMES = ("eager", "frozen", "onnx", "auto")
