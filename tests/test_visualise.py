"""course_utils.visualise: Grad-CAM against captum, the overlay, and the Grad-CAM explorer without a browser."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from captum.attr import LayerAttribution, LayerGradCam  # noqa: E402

from course_utils.models.resnet import resnet18  # noqa: E402
from course_utils.visualise import explore_grad_cam, grad_cam, grad_cam_explorer, overlay  # noqa: E402

CLASS_NAMES = [f"class {k}" for k in range(10)]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return resnet18(num_classes=10, in_channels=3, width=4).eval()


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    return {"first": torch.randn(1, 3, 32, 32, generator=generator),
            "second": torch.randn(1, 3, 32, 32, generator=generator)}


@pytest.mark.parametrize("layer", ["layer2", "layer3.1", "layer4"])
def test_grad_cam_matches_captum_layer_grad_cam_upsampled_bilinearly(model, layer):
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 4, 9])
    module = model.get_submodule(layer)
    expected = LayerGradCam(model, module).attribute(x, target=targets, relu_attributions=True)  # (N, 1, h, w)
    expected = LayerAttribution.interpolate(expected.detach(), (32, 32), interpolate_mode="bilinear")[:, 0]
    received = grad_cam(model, module, x, targets)
    assert received.shape == (3, 32, 32)
    torch.testing.assert_close(received, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def test_grad_cam_takes_one_int_for_every_image_and_leaves_no_hook(model):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    both = grad_cam(model, model.layer3, x, 5)
    torch.testing.assert_close(both, grad_cam(model, model.layer3, x, torch.tensor([5, 5])))
    assert not model.layer3._forward_hooks
    assert (both >= 0).all()


def test_grad_cam_works_on_frozen_weights_under_no_grad_and_leaves_no_gradient(model):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    expected = grad_cam(model, model.layer4, x, torch.tensor([1, 2]))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        with torch.no_grad():
            frozen = grad_cam(model, model.layer4, x, torch.tensor([1, 2]))
    finally:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    torch.testing.assert_close(frozen, expected)
    assert all(parameter.grad is None for parameter in model.parameters())


def test_overlay_blends_the_scaled_heat_map_over_the_image():
    image = np.full((4, 5, 3), 0.2)
    heat = np.zeros((4, 5))
    heat[1, 2] = 3.0
    blended = overlay(image, heat, alpha=0.5, cmap="gray")
    np.testing.assert_allclose(blended[1, 2], 0.5 * 0.2 + 0.5 * 1.0)  # the peak is white in "gray"
    np.testing.assert_allclose(blended[0, 0], 0.5 * 0.2)  # zero is black
    assert overlay(np.zeros((4, 5)), heat).shape == (4, 5, 3)  # a grey image becomes RGB


def test_overlay_refuses_a_map_of_another_size():
    with pytest.raises(ValueError, match=r"heat map of the image's size \(4, 5\); got \(2, 2\)"):
        overlay(np.zeros((4, 5, 3)), np.zeros((2, 2)))


def test_explore_grad_cam_describes_the_photo_s_top_class_by_default(model, images):
    view = explore_grad_cam(model, images, ["layer3", "layer4"], CLASS_NAMES, "first", "layer3")
    with torch.no_grad():
        probabilities = model(images["first"]).softmax(dim=1)[0]
    assert view.target == int(probabilities.argmax())
    assert [index for index, _ in view.top_classes] == probabilities.topk(5).indices.tolist()
    assert view.feature_size == (8, 8) and view.cam.shape == (32, 32)
    assert f"class <b>{CLASS_NAMES[view.target]}</b>" in view.summary and "8x8 feature map" in view.summary


def test_explore_grad_cam_refuses_unknown_choices(model, images):
    with pytest.raises(ValueError, match="photo must be one of"):
        explore_grad_cam(model, images, ["layer4"], CLASS_NAMES, "third", "layer4")
    with pytest.raises(ValueError, match="layer must be one of"):
        explore_grad_cam(model, images, ["layer4"], CLASS_NAMES, "first", "layer1")
    with pytest.raises(ValueError, match=r"target must be a class index in \[0, 10\)"):
        explore_grad_cam(model, images, ["layer4"], CLASS_NAMES, "first", "layer4", target=10)


def test_explorer_builds_and_updates_with_its_controls(model, images):
    box = grad_cam_explorer(model, images, ["layer2", "layer3", "layer4"], CLASS_NAMES, top_k=3)
    controls, view = box.controls, box.view
    assert view[0].photo == "first" and view[0].layer == "layer4" and view[0].feature_size == (4, 4)
    assert len(controls["target"].options) == 3
    controls["layer"].value = "layer2"
    assert view[0].layer == "layer2" and view[0].feature_size == (16, 16) and "layer2" in box.summary.value
    second_class = controls["target"].options[1][1]
    controls["target"].value = second_class
    assert view[0].target == second_class
    controls["photo"].value = "second"
    top = explore_grad_cam(model, images, ["layer2"], CLASS_NAMES, "second", "layer2", top_k=3).top_classes
    assert [value for _, value in controls["target"].options] == [index for index, _ in top]
    assert view[0].photo == "second" and view[0].target == top[0][0]
    torch.testing.assert_close(view[0].cam, grad_cam(model, model.layer2, images["second"], top[0][0])[0])
