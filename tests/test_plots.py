"""The plotting helpers draw what they are given and refuse what they cannot draw."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from course_utils import plots
from course_utils.training import History


def test_show_images_titles_labels_and_marks_wrong_predictions():
    images = torch.rand(5, 3, 8, 8)
    figure = plots.show_images(images, labels=[0, 1, 2, 0, 1], predictions=[0, 1, 0, 0, 1],
                               class_names=["a", "b", "c"], ncols=3)
    titles = [axis.get_title() for axis in figure.axes[:5]]
    assert titles[2] == "c→a"
    assert figure.axes[2].title.get_color() == "red" and figure.axes[0].title.get_color() == "green"
    plt.close(figure)


@pytest.mark.parametrize("images", [np.random.rand(4, 28, 28), np.random.rand(4, 1, 28, 28), np.random.rand(4, 9, 9, 3)])
def test_show_images_accepts_common_layouts(images):
    plt.close(plots.show_images(images))


def test_show_images_refuses_bad_shapes_and_label_counts():
    with pytest.raises(ValueError, match=r"got shape \(28, 28\)"):
        plots.show_images(np.zeros((28, 28)))
    with pytest.raises(ValueError, match="labels has 2 entries but there are 3 images"):
        plots.show_images(np.zeros((3, 8, 8)), labels=[1, 2])


def test_plot_history_draws_train_and_validation():
    history = History(epoch=[1, 2], train_loss=[1.0, 0.5], train_accuracy=[0.5, 0.8],
                      val_loss=[1.1, 0.7], val_accuracy=[0.4, 0.7])
    figure = plots.plot_history(history)
    assert len(figure.axes[0].lines) == 2
    plt.close(figure)
    with pytest.raises(ValueError, match="no epochs"):
        plots.plot_history(History())


def test_feature_maps_and_kernels():
    plt.close(plots.show_feature_maps(torch.rand(1, 6, 5, 5)))
    plt.close(plots.show_kernels(torch.randn(4, 3, 3, 3)))
    plt.close(plots.show_kernels(torch.randn(4, 1, 5, 5)))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        plots.show_feature_maps(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"\(F, C, KH, KW\)"):
        plots.show_kernels(np.zeros((3, 3)))
    with pytest.raises(TypeError, match="numeric"):
        plots.show_kernels(np.array([["a"]]))
