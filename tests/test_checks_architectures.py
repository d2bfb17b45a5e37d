"""The architecture checks pass on correct networks and name the first difference of plausible wrong ones.

The references are torchvision's models (``weights=None``); the learners' networks are written here in plain
PyTorch (AlexNet, VGG-11, ResNet-18 with ``F.relu``) or re-instantiated from torchvision (GoogLeNet). The
wrong networks are one plausible mistake away from right. Inputs are small (64x64, 32x32) to keep this fast.
"""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from course_utils.checks.architectures import Layer, check_layer_table, check_same_architecture

ALEXNET_INPUT = (2, 3, 64, 64)  # the smallest size torchvision's AlexNet takes is 63x63


# --------------------------------------------------------------------------- learners' networks, written here

class AlexNet(nn.Module):
    """torchvision's single-tower AlexNet, written out; ``features``, ``avgpool``, ``classifier`` as there."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)  # (N, 256*6*6)
        return self.classifier(x)


class AlexNetOwnNames(nn.Module):
    """The same network with its own attribute names and functional ReLUs: matched by registration order."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 11, stride=4, padding=2)
        self.conv2 = nn.Conv2d(64, 192, 5, padding=2)
        self.conv3 = nn.Conv2d(192, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 256, 3, padding=1)
        self.conv5 = nn.Conv2d(256, 256, 3, padding=1)
        self.fc6 = nn.Linear(256 * 6 * 6, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, 1000)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 3, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 3, 2)
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = F.max_pool2d(F.relu(self.conv5(x)), 3, 2)
        x = F.adaptive_avg_pool2d(x, 6)
        x = x.view(x.shape[0], -1)  # (N, 256*6*6)
        x = F.relu(self.fc6(F.dropout(x, 0.5, self.training)))
        x = F.relu(self.fc7(F.dropout(x, 0.5, self.training)))
        return self.fc8(x)


class VGG11(nn.Module):
    """VGG-11 (configuration A) with torchvision's names, built from its configuration list."""

    def __init__(self, num_classes=1000):
        super().__init__()
        layers, channels = [], 3
        for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        x = torch.flatten(x, 1)  # (N, 512*7*7)
        return self.classifier(x)


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1, use_bn2=True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes) if use_bn2 else nn.Identity()
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 with torchvision's names, ``F.relu`` instead of ``nn.ReLU`` modules."""

    def __init__(self, num_classes=1000, block=BasicBlock):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(block(64, 64), block(64, 64))
        self.layer2 = nn.Sequential(block(64, 128, 2), block(128, 128))
        self.layer3 = nn.Sequential(block(128, 256, 2), block(256, 256))
        self.layer4 = nn.Sequential(block(256, 512, 2), block(512, 512))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (N, 512)
        return self.fc(x)


@pytest.fixture(scope="module")
def torchvision_alexnet():
    torch.manual_seed(0)
    return torchvision.models.alexnet(weights=None)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)


def alexnet_with(**changes):
    """The test's AlexNet with some layers replaced, e.g. ``alexnet_with(features={0: nn.Conv2d(...)})``."""
    torch.manual_seed(1)
    model = AlexNet()
    for part, replacements in changes.items():
        sequence = getattr(model, part)
        for index, layer in replacements.items():
            sequence[index] = layer
    return model


def without(sequential, *indices):
    return nn.Sequential(*[layer for i, layer in enumerate(sequential) if i not in indices])


# --------------------------------------------------------------------------- check_same_architecture passes

def test_alexnet_written_out_passes(torchvision_alexnet, capsys):
    torch.manual_seed(1)
    check_same_architecture(AlexNet(), torchvision_alexnet, ALEXNET_INPUT, name="AlexNet")
    out = capsys.readouterr().out
    assert "✓ AlexNet (61,100,840 parameters in 16 tensors paired by name" in out


def test_alexnet_with_other_names_and_functional_relu_passes_paired_through_its_operations(torchvision_alexnet,
                                                                                           capsys):
    torch.manual_seed(1)
    check_same_architecture(AlexNetOwnNames(), torchvision_alexnet, ALEXNET_INPUT, name="AlexNet")
    assert "paired through the operations that use them" in capsys.readouterr().out


def test_vgg11_written_out_passes(capsys):
    torch.manual_seed(0)
    reference = torchvision.models.vgg11(weights=None)
    check_same_architecture(VGG11(), reference, (1, 3, 32, 32), name="VGG-11")
    assert "✓ VGG-11 (132,863,336 parameters" in capsys.readouterr().out


def test_googlenet_reinstantiated_passes(capsys):
    torch.manual_seed(0)
    reference = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    torch.manual_seed(1)
    learner = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    check_same_architecture(learner, reference, (1, 3, 64, 64), name="GoogLeNet")
    assert "✓ GoogLeNet (6,624,904 parameters" in capsys.readouterr().out


def test_resnet18_written_with_functional_relu_passes(resnet18, capsys):
    learner = ResNet18()
    check_same_architecture(learner, resnet18, (2, 3, 64, 64), name="ResNet-18")
    assert "✓ ResNet-18 (11,689,512 parameters in 62 tensors paired by name, 60 buffers" in capsys.readouterr().out


def test_batch_norm_running_statistics_are_copied(resnet18):
    """The reference's running mean and variance stand in for the learner's: otherwise eval outputs differ."""
    reference = ResNet18()
    with torch.no_grad():
        for name, buffer in reference.named_buffers():
            if "running_mean" in name:
                buffer.uniform_(-1, 1)
            if "running_var" in name:
                buffer.uniform_(0.5, 2)
    check_same_architecture(ResNet18(), reference, (2, 3, 64, 64))


def test_the_learners_model_is_left_unchanged(torchvision_alexnet):
    learner = AlexNet().train()
    before = {name: t.clone() for name, t in learner.state_dict().items()}
    check_same_architecture(learner, torchvision_alexnet, ALEXNET_INPUT)
    assert learner.training and learner.features[0].training
    assert all(torch.equal(before[name], t) for name, t in learner.state_dict().items())


# --------------------------------------------------------------------------- check_same_architecture fails

def test_fails_on_a_class_instead_of_an_instance(torchvision_alexnet):
    with pytest.raises(AssertionError, match=r"should be an nn.Module \(an instance, not a class\)"):
        check_same_architecture(AlexNet, torchvision_alexnet, ALEXNET_INPUT)


def test_fails_on_a_model_whose_forward_is_a_stub(torchvision_alexnet):
    class Stub(AlexNet):
        def forward(self, x):
            raise NotImplementedError("exercise: replace this line with your code")

    with pytest.raises(AssertionError, match="not implemented yet"):
        check_same_architecture(Stub(), torchvision_alexnet, ALEXNET_INPUT)


def test_fails_on_a_missing_layer(torchvision_alexnet):
    learner = AlexNet()
    learner.features = without(learner.features, 10, 11)  # the last 256 -> 256 convolution and its ReLU
    with pytest.raises(AssertionError, match=r"the reference's parameter features.10.weight of shape \(256, 256, 3, 3\) has no "
                                             r"counterpart of that shape in the learner's model"):
        check_same_architecture(learner, torchvision_alexnet, ALEXNET_INPUT)


def test_fails_on_a_missing_last_layer(torchvision_alexnet):
    learner = AlexNet()
    learner.classifier = learner.classifier[:-2]  # stops after the second ReLU
    with pytest.raises(AssertionError, match=r"the reference's parameter classifier.6.weight of shape \(1000, 4096\) has no "
                                             r"counterpart"):
        check_same_architecture(learner, torchvision_alexnet, ALEXNET_INPUT)


def test_fails_on_a_wrong_stride(torchvision_alexnet):
    learner = alexnet_with(features={0: nn.Conv2d(3, 64, kernel_size=11, stride=2, padding=2)})
    with pytest.raises(AssertionError, match=r"the reference's conv2d \(features.0, Conv2d\) \(its operation 1 of 21, output "
                                             r"\(2, 64, 15, 15\)\) has no counterpart in the learner's model: at its place the "
                                             r"learner's model applies conv2d \(features.0, Conv2d\) with stride=\(2, 2\), the "
                                             r"reference's has stride=\(4, 4\)"):
        check_same_architecture(learner, torchvision_alexnet, ALEXNET_INPUT)


def test_fails_on_a_wrong_pooling_stride(torchvision_alexnet):
    learner = alexnet_with(features={2: nn.MaxPool2d(kernel_size=3, stride=3)})
    with pytest.raises(AssertionError, match=r"the reference's max_pool2d \(features.2, MaxPool2d\) .*: at its place the "
                                             r"learner's model applies max_pool2d \(features.2, MaxPool2d\) with stride=3, the "
                                             r"reference's has stride=2; then the learner's model raised RuntimeError"):
        check_same_architecture(learner, torchvision_alexnet, ALEXNET_INPUT)


def test_fails_on_a_wrong_padding(torchvision_alexnet):
    learner = alexnet_with(features={3: nn.Conv2d(64, 192, kernel_size=5, padding=1)})
    with pytest.raises(AssertionError, match=r"the reference's conv2d \(features.3, Conv2d\) .* with padding=\(1, 1\), the "
                                             r"reference's has padding=\(2, 2\)"):
        check_same_architecture(learner, torchvision_alexnet, ALEXNET_INPUT)


def test_fails_on_a_wrong_channel_count(torchvision_alexnet):
    learner = alexnet_with(features={3: nn.Conv2d(64, 128, 5, padding=2), 6: nn.Conv2d(128, 384, 3, padding=1)})
    with pytest.raises(AssertionError, match=r"parameter features.3.weight \(paired by name\): the learner's has shape "
                                             r"\(128, 64, 5, 5\), the reference's \(192, 64, 5, 5\)"):
        check_same_architecture(learner, torchvision_alexnet, ALEXNET_INPUT)


def test_fails_on_a_wrong_kernel_size(torchvision_alexnet):
    learner = alexnet_with(features={6: nn.Conv2d(192, 384, kernel_size=5, padding=2)})
    with pytest.raises(AssertionError, match=r"parameter features.6.weight \(paired by name\): the learner's has shape "
                                             r"\(384, 192, 5, 5\), the reference's \(384, 192, 3, 3\)"):
        check_same_architecture(learner, torchvision_alexnet, ALEXNET_INPUT)


def test_fails_on_a_relu_moved_before_the_pooling(torchvision_alexnet):
    """max pooling and ReLU commute, so only the order of the operations shows this one."""
    learner = alexnet_with(features={1: nn.MaxPool2d(kernel_size=3, stride=2), 2: nn.ReLU(inplace=True)})
    with pytest.raises(AssertionError, match=r"the reference's relu \(features.1, ReLU\) .*: at its place the learner's "
                                             r"model applies max_pool2d \(features.1, MaxPool2d\) where the reference applies relu"):
        check_same_architecture(learner, torchvision_alexnet, ALEXNET_INPUT)


def test_fails_on_a_removed_relu(torchvision_alexnet):
    learner = AlexNet()
    learner.features = without(learner.features, 7)  # the ReLU after the third convolution
    with pytest.raises(AssertionError, match=r"the reference's relu \(features.7, ReLU\) .*: at its place the learner's "
                                             r"model applies conv2d \(features.7, Conv2d\) where the reference applies relu"):
        check_same_architecture(learner, torchvision_alexnet, ALEXNET_INPUT)


def test_fails_on_a_tanh_instead_of_a_relu(torchvision_alexnet):
    learner = alexnet_with(classifier={2: nn.Tanh()})
    with pytest.raises(AssertionError, match=r"applies tanh \(classifier.2, Tanh\) where the reference applies relu"):
        check_same_architecture(learner, torchvision_alexnet, ALEXNET_INPUT)


def test_fails_on_a_missing_dropout(torchvision_alexnet):
    """Dropout is the identity in eval mode: the outputs agree, the sequence of operations does not."""
    learner = alexnet_with(classifier={3: nn.Identity()})
    with pytest.raises(AssertionError, match=r"the reference's dropout \(classifier.3, Dropout\) \(its operation 18 of 21, "
                                             r"output \(2, 4096\)\) has no counterpart in the learner's model: at its place the "
                                             r"learner's model applies linear \(classifier.4, Linear\)"):
        check_same_architecture(learner, torchvision_alexnet, ALEXNET_INPUT)


def test_fails_on_a_wrong_dropout_rate(torchvision_alexnet):
    learner = alexnet_with(classifier={0: nn.Dropout(p=0.2)})
    with pytest.raises(AssertionError, match=r"at its place the learner's model applies dropout \(classifier.0, Dropout\) "
                                             r"with p=0.2, the reference's has p=0.5"):
        check_same_architecture(learner, torchvision_alexnet, ALEXNET_INPUT)


def test_fails_on_a_flatten_in_the_wrong_order(torchvision_alexnet):
    """Same shapes, same operations, different values: the first operation after the flatten is named."""
    class ChannelsLastFlatten(AlexNet):
        def forward(self, x):
            x = self.avgpool(self.features(x))
            x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # (N, 6*6*256), channels last
            return self.classifier(x)

    with pytest.raises(AssertionError, match=r"the reference's dropout \(classifier.0, Dropout\) .* its output differs .*the same "
                                             r"values in another order"):
        check_same_architecture(ChannelsLastFlatten(), torchvision_alexnet, ALEXNET_INPUT)


def test_fails_on_a_missing_batch_norm(resnet18):
    learner = ResNet18(block=lambda *args: BasicBlock(*args, use_bn2=False))
    with pytest.raises(AssertionError, match=r"the reference's parameter layer1.0.bn2.weight of shape \(64,\) has no "
                                             r"counterpart of that shape in the learner's model"):
        check_same_architecture(learner, resnet18, (2, 3, 64, 64))


def test_fails_on_a_missing_batch_norm_without_parameters(resnet18):
    """A batch norm with ``affine=False`` has no parameters but running statistics: the buffers show it."""
    learner = ResNet18()
    learner.bn1 = nn.Identity()
    reference = ResNet18()
    reference.bn1 = nn.BatchNorm2d(64, affine=False)
    with pytest.raises(AssertionError, match=r"the reference's buffer bn1.running_mean of shape \(64,\) has no "
                                             r"counterpart"):
        check_same_architecture(learner, reference, (2, 3, 64, 64))


def test_fails_on_a_missing_identity_shortcut(resnet18):
    class NoShortcut(BasicBlock):
        def forward(self, x):
            if self.downsample is not None:
                return super().forward(x)
            return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))

    learner = ResNet18(block=NoShortcut)
    with pytest.raises(AssertionError, match=r"the reference's add \(layer1.0, BasicBlock\) .* at its place the "
                                             r"learner's model applies relu \(layer1.0, NoShortcut\) where the "
                                             r"reference applies add"):
        check_same_architecture(learner, resnet18, (2, 3, 64, 64))


def test_fails_on_a_projection_shortcut_never_called(resnet18):
    class NoProjection(BasicBlock):
        def forward(self, x):
            out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            return F.relu(out if self.downsample is not None else out + x)

    learner = ResNet18(block=NoProjection)
    with pytest.raises(AssertionError, match=r"the learner's parameter layer2.0.downsample.0.weight of shape "
                                             r"\(128, 64, 1, 1\) is never used in the forward pass"):
        check_same_architecture(learner, resnet18, (2, 3, 64, 64))


def test_fails_on_a_projection_shortcut_computed_but_not_added(resnet18):
    class NotAdded(BasicBlock):
        def forward(self, x):
            out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            identity = x if self.downsample is None else self.downsample(x)
            return F.relu(out if self.downsample is not None else out + identity)

    learner = ResNet18(block=NotAdded)
    with pytest.raises(AssertionError, match=r"the learner's conv2d \(layer2.0.downsample.0, Conv2d\) .* is computed "
                                             r"but its result never reaches the model's output"):
        check_same_architecture(learner, resnet18, (2, 3, 64, 64))


def test_rejects_a_bad_input_shape(torchvision_alexnet):
    with pytest.raises(ValueError, match="input_shape must be a shape of positive ints"):
        check_same_architecture(AlexNet(), torchvision_alexnet, (3, 64.0, 64))


# --------------------------------------------------------------------------- check_layer_table (LeNet-5)

def conv_parameters(c_in, c_out, k):
    return (k * k * c_in + 1) * c_out  # weights and one bias per filter


LENET5_TABLE = [  # LeCun et al. 1998, Fig. 2, with every C3 map connected to all six S2 maps
    Layer("conv2d", (6, 28, 28), conv_parameters(1, 6, 5)),  # C1
    Layer("tanh", (6, 28, 28)),
    Layer("avg_pool2d", (6, 14, 14)),  # S2
    Layer("conv2d", (16, 10, 10), conv_parameters(6, 16, 5)),  # C3
    Layer("tanh", (16, 10, 10)),
    Layer("avg_pool2d", (16, 5, 5)),  # S4
    Layer(("linear", "conv2d"), (120,), 400 * 120 + 120),  # C5: a 5x5 convolution on a 5x5 map is a linear layer
    Layer("tanh", (120,)),
    Layer("linear", (84,), 120 * 84 + 84),  # F6
    Layer("tanh", (84,)),
    Layer("linear", (10,), 84 * 10 + 10),  # output
]


def lenet5(activation=nn.Tanh, pool=nn.AvgPool2d, c1_padding=0, c5_as_conv=False, drop=None):
    c5 = [nn.Conv2d(16, 120, 5), nn.Flatten()] if c5_as_conv else [nn.Flatten(), nn.Linear(16 * 5 * 5, 120)]
    layers = [nn.Conv2d(1, 6, 5, padding=c1_padding), activation(), pool(2),
              nn.Conv2d(6, 16, 5), activation(), pool(2),
              *c5, activation(),
              nn.Linear(120, 84), activation(),
              nn.Linear(84, 10)]
    return nn.Sequential(*[layer for i, layer in enumerate(layers) if i != drop])


def test_lenet5_table_adds_up_to_61706_parameters():
    assert sum(row.parameters for row in LENET5_TABLE) == 61_706


def test_lenet5_passes_with_c5_as_a_linear_layer(capsys):
    check_layer_table(lenet5(), LENET5_TABLE, (2, 1, 32, 32), name="LeNet-5")
    assert "✓ LeNet-5 (11 layers, 61,706 parameters)" in capsys.readouterr().out


def test_lenet5_passes_with_c5_as_a_convolution():
    check_layer_table(lenet5(c5_as_conv=True), LENET5_TABLE, (2, 1, 32, 32))


def test_lenet5_fails_with_max_pooling():
    with pytest.raises(AssertionError, match=r"layer 3: learner's model applies max_pool2d \(2, MaxPool2d\) with "
                                             r"output \(6, 14, 14\), the table has avg_pool2d"):
        check_layer_table(lenet5(pool=nn.MaxPool2d), LENET5_TABLE, (2, 1, 32, 32))


def test_lenet5_fails_with_relu_instead_of_tanh():
    with pytest.raises(AssertionError, match=r"layer 2: learner's model applies relu \(1, ReLU\) .* the table has tanh"):
        check_layer_table(lenet5(activation=nn.ReLU), LENET5_TABLE, (2, 1, 32, 32))


def test_lenet5_fails_with_a_padded_first_convolution():
    with pytest.raises(AssertionError, match=r"layer 1: learner's conv2d \(0, Conv2d\) gives output shape "
                                             r"\(6, 32, 32\) for input \(2, 1, 32, 32\), the table has \(6, 28, 28\)"):
        check_layer_table(lenet5(c1_padding=2), LENET5_TABLE, (2, 1, 32, 32))


def test_lenet5_fails_with_a_missing_activation():
    with pytest.raises(AssertionError, match=r"layer 10: learner's model applies linear .* the table has tanh"):
        check_layer_table(lenet5(drop=10), LENET5_TABLE, (2, 1, 32, 32))


def test_lenet5_fails_with_a_missing_last_layer():
    with pytest.raises(AssertionError, match=r"layer 11: learner's model stops after tanh \(10, Tanh\); the table "
                                             r"goes on with linear with output \(10,\)"):
        check_layer_table(lenet5()[:-1], LENET5_TABLE, (2, 1, 32, 32))


def test_lenet5_fails_with_an_extra_layer():
    model = nn.Sequential(*lenet5(), nn.Softmax(dim=1))
    with pytest.raises(AssertionError, match=r"layer 12: learner's model goes on with softmax"):
        check_layer_table(model, LENET5_TABLE, (2, 1, 32, 32))


def test_lenet5_fails_without_biases():
    model = lenet5()
    model[0] = nn.Conv2d(1, 6, 5, bias=False)
    with pytest.raises(AssertionError, match=r"layer 1: learner's conv2d \(0, Conv2d\) has 150 parameters, "
                                             r"the table has 156"):
        check_layer_table(model, LENET5_TABLE, (2, 1, 32, 32))


def test_layer_table_fails_on_a_parameter_outside_the_traced_layers():
    model = lenet5()
    model.scale = nn.Parameter(torch.ones(1))  # registered, never used
    with pytest.raises(AssertionError, match="learner's model has 61,707 parameters in total, the table 61,706"):
        check_layer_table(model, LENET5_TABLE, (2, 1, 32, 32))




def test_layer_table_fails_on_a_pooling_window_that_gives_the_same_shape():
    from course_utils.checks.lenet_alexnet import lenet5_table

    model = lenet5(pool=lambda size: nn.AvgPool2d(3, stride=2, padding=1))  # 28x28 -> 14x14 as 2x2 windows do
    with pytest.raises(AssertionError, match=r"layer 3: learner's avg_pool2d \(2, AvgPool2d\) has kernel_size=3, "
                                             r"the table has kernel_size=2 \(the output shape \(6, 14, 14\) agrees"):
        check_layer_table(model, lenet5_table(), (2, 1, 32, 32))


def test_layer_table_fails_on_a_row_computed_but_not_used():
    from course_utils.checks.lenet_alexnet import lenet5_table

    class Thrown(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = lenet5()

        def forward(self, x):
            torch.tanh(self.body[0](x))  # computed, never used
            return self.body(x)

    with pytest.raises(AssertionError, match=r"the learner's conv2d \(body.0, Conv2d\) .* is computed but "
                                             r"its result never reaches the model's output"):
        check_layer_table(Thrown(), lenet5_table(), (2, 1, 32, 32))


def test_layer_table_passes_on_the_lenet5_table_with_its_geometry(capsys):
    from course_utils.checks.lenet_alexnet import lenet5_table

    check_layer_table(lenet5(), lenet5_table(), (2, 1, 32, 32), name="LeNet-5")
    assert "✓ LeNet-5 (11 layers, 61,706 parameters)" in capsys.readouterr().out


class ChannelsFirstLayerNorm(nn.Module):
    """torchvision's LayerNorm2d written on channels first: the same function, another layout inside."""

    def __init__(self, channels, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):  # (N, C, H, W)
        mean = x.mean(1, keepdim=True)
        var = x.var(1, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


@pytest.mark.parametrize("shape", [(2, 8, 9, 9), (2, 8, 8, 8)])  # C == H == W: both layouts have one shape
def test_a_layer_norm_written_on_channels_first_passes_whatever_the_shape(shape):
    from torchvision.models.convnext import LayerNorm2d

    check_same_architecture(ChannelsFirstLayerNorm(8), LayerNorm2d(8, eps=1e-6), shape)


def test_fails_on_a_layer_norm_with_another_eps():
    with pytest.raises(AssertionError, match=r"layer_norm .* with eps=1e-05, the reference's has eps=1e-06"):
        check_same_architecture(nn.LayerNorm(16, eps=1e-5), nn.LayerNorm(16, eps=1e-6), (2, 16))


def test_a_functional_batch_norm_without_a_step_counter_passes():
    class FunctionalBatchNorm(nn.Module):  # no num_batches_tracked: it never changes an eval-mode output
        def __init__(self, channels):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
            self.register_buffer("mean", torch.zeros(channels))
            self.register_buffer("var", torch.ones(channels))

        def forward(self, x):
            return F.batch_norm(x, self.mean, self.var, self.weight, self.bias, False, 0.1, 1e-5)

    check_same_architecture(FunctionalBatchNorm(4), nn.BatchNorm2d(4), (2, 4, 5, 5))


def test_fails_on_a_missing_max_pool_naming_its_place(resnet18):
    learner = torchvision.models.resnet18(weights=None)
    learner.maxpool = nn.Identity()
    with pytest.raises(AssertionError, match=r"the reference's max_pool2d \(maxpool, MaxPool2d\) .*has no counterpart"
                                             r".*: (nothing in the learner's model|at its place the learner's model "
                                             r"applies conv2d \(layer1.0.conv1)"):
        check_same_architecture(learner, resnet18, (2, 3, 64, 64))
