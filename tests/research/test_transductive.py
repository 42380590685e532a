"""Label-free (transductive) calibration, kept in research/: it corrects a biased toy classifier."""
import pytest
import torch

from engine import VisionCLIPError
from research.transductive import calibrate, em_priors, equal_marginals, transclip
from tests.test_adapt import balanced_accuracy, toy


def biased_toy():
    """Balanced folder, text predictions biased toward class 0, embeddings clustered by class."""
    x, y, anchor = toy(text_right=True, noise=0.5, seed=3, scale=10.0)
    logits = anchor.log_probs(x) + torch.tensor([3.0, 0.0, 0.0])
    return x, y, logits.softmax(-1)


def test_transductive_calibration_corrects_a_biased_classifier():
    x, y, probs = biased_toy()
    before = balanced_accuracy(y, probs)
    assert before < 0.75
    for name, after in (("transclip", transclip(probs, x)), ("balanced", equal_marginals(probs))):
        assert torch.allclose(after.sum(1), torch.ones(len(y)), atol=1e-4)
        assert balanced_accuracy(y, after) > before + 0.05, name
    marginals = equal_marginals(probs).mean(0)
    torch.testing.assert_close(marginals, torch.full((3,), 1 / 3), atol=1e-3, rtol=0)
    em = em_priors(probs)
    assert torch.allclose(em.sum(1), torch.ones(len(y)), atol=1e-4) and not torch.allclose(em, probs)
    with pytest.raises(VisionCLIPError, match="unknown transductive method"):
        calibrate(probs, x, "magic")
    with pytest.raises(VisionCLIPError, match="2 or more images"):
        calibrate(probs[:1], x[:1], "em")
