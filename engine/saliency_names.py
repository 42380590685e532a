"""The names of engine.saliency's methods, targets and layer choices, without importing it.

``engine.saliency`` imports pytorch-grad-cam (with torchvision, OpenCV and scikit-image: seconds),
which a page that only lists the choices in its dropdowns should not wait for. engine.saliency takes
these names from here; tests/app/test_startup.py checks that they agree.
"""
METHOD_NAMES = ("multiscale", "gradcam", "gradcam++", "layercam", "eigencam", "scorecam", "gradcam-elementwise",
                "hirescam")
DEFAULT_METHOD = METHOD_NAMES[0]
TARGETS = ("softmax", "similarity")  # the default first
# methods for ``layers=DETAIL`` (the stride-4 stage), the measured best first: channel-pooled weights
# (Grad-CAM, Grad-CAM++) average a fine layer's scattered evidence away
DETAIL_METHODS = ("gradcam-elementwise", "hirescam")
SLOW_METHODS = frozenset({"scorecam"})
DETAIL = "detail"
MULTISCALE = "multiscale"
